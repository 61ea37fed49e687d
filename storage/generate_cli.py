"""Generate (or resume) a pair store from a checkpoint, without Prefect: one worker process.

    python -m storage.generate_cli STORE --checkpoint CKPT --n 60000 --chunk 1024 --seed 0 \
        --method dopri5 --rtol 1e-5 --atol 1e-5 [--chunks 0-9,20] [--finalize]

Creates the store if absent, resumes it if it was made the same way (refuses otherwise), generates
the requested chunks that are not done, and with ``--finalize`` (coordinator) finalizes it once
every chunk is done. Any number of these may run on one store at once.

STORE may be an fsspec URL such as ``s3://bucket/pairs.zarr``; its endpoint and credentials come
from the environment (``AWS_*``, ``FSSPEC_S3``, see :func:`storage.location.set_storage_options`).
"""

from __future__ import annotations

import argparse
import os
import sys

from rf_core.training import checkpoint_sha256, load_checkpoint
from storage.generate import generate_chunks
from storage.layout import PairStoreError, format_ranges
from storage.pairstore import PairStore


def parse_ranges(spec: str) -> list[int]:
    """ "0-2,5" -> [0, 1, 2, 5]; raises ValueError on malformed input."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()) or (hi and int(hi) < int(lo)):
            raise ValueError(f"--chunks: {part!r} is not an index or range like 3 or 0-9")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def source_from_checkpoint(path: str, extra: dict) -> dict:
    """The store's ``source`` attrs for a model loaded from a local checkpoint file."""
    return {
        "model_id": extra.get("model_id"),
        "model_uri": os.path.abspath(path),
        "run_id": extra.get("run_id"),
        "checkpoint_sha256": checkpoint_sha256(path),
        "k": extra.get("k"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m storage.generate_cli", description=__doc__)
    p.add_argument("store")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--chunk", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="dopri5")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--rtol", type=float, default=None)
    p.add_argument("--atol", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="samples per solve (default chunk)")
    p.add_argument("--dataset", default="unknown")
    p.add_argument("--chunks", default=None, help="chunk ids to do, e.g. 0-9,20 (default all)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--no-overlap",
        action="store_true",
        help="write in the solving thread (the default on CPU; on a GPU a writer thread overlaps)",
    )
    p.add_argument("--finalize", action="store_true", help="finalize when every chunk is done")
    a = p.parse_args(argv)
    try:
        model, meta = load_checkpoint(a.checkpoint)
        solver = {
            "method": a.method,
            "steps": a.steps,
            "rtol": a.rtol,
            "atol": a.atol,
            "batch_size": a.batch_size,
        }
        store = PairStore.open_or_create(
            a.store,
            n=a.n,
            chunk=a.chunk,
            sample_shape=tuple(model.config.data_shape),
            seed=a.seed,
            source=source_from_checkpoint(a.checkpoint, meta.get("extra") or {}),
            solver=solver,
            dataset=a.dataset,
            num_classes=model.config.num_classes,
        )
        ids = parse_ranges(a.chunks) if a.chunks else None
        overlap = False if a.no_overlap else None  # None: a writer thread only on a GPU
        stats = generate_chunks(model, store, ids, device=a.device, overlap=overlap)
        print(
            f"generated {stats.chunks_done} chunks, skipped {stats.chunks_skipped}, "
            f"nfe {stats.nfe}, {stats.seconds:.1f}s",
            flush=True,
        )
        missing = store.missing_chunks()
        if a.finalize and not missing:
            print(f"finalized: digest {store.finalize()}", flush=True)
        elif missing:
            print(f"missing chunks: {format_ranges(missing)}", flush=True)
    except (PairStoreError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
