"""Generate (or resume) a pair store from a checkpoint, without Prefect: one worker process.

    python -m storage.generate_cli STORE --checkpoint CKPT --n 60000 --chunk 1024 --seed 0 \
        --method rk4 --steps 14 [--grid ends --rho 1.5] [--compile] [--chunks 0-9,20] [--finalize]

The solver flags are the fields of :class:`rf_core.solver_spec.SolverSpec` (``--method``,
``--rtol``, ``--atol``, ``--steps``, ``--batch-size``, ``--grid``, ``--rho``, ``--compile``,
``--tolerance``, ``--probe``), with its defaults; the store records them, as a pipeline's
``pairs.solver`` does. ``--method auto [--tolerance 2e-3] [--probe 64]`` screens solvers on the
model when it creates the store and records the choice; a resume reads it and never screens.

Creates the store if absent, resumes it if it was made the same way (refuses otherwise), generates
the requested chunks that are not done, and with ``--finalize`` (coordinator) finalizes it once
every chunk is done. Any number of these may run on one store at once.

STORE may be an fsspec URL such as ``s3://bucket/pairs.zarr``; its endpoint and credentials come
from the environment (``AWS_*``, ``FSSPEC_S3``, see :func:`storage.location.set_storage_options`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from rf_core.solver_spec import SolverSpec
from rf_core.training import checkpoint_sha256, load_checkpoint
from storage.generate import generate_chunks
from storage.layout import PairStoreError, format_ranges
from storage.solver_choice import open_or_create_pairs


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


def add_solver_flags(p: argparse.ArgumentParser) -> None:
    """One flag per SolverSpec field (``batch_size`` -> ``--batch-size``); unset = its default."""
    for name, field in SolverSpec.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            p.add_argument(flag, action="store_true", default=None, help=field.description)
        else:
            p.add_argument(flag, type=_scalar, default=None, help=field.description)


def _scalar(text: str) -> object:
    """A flag's value as JSON reads it (14 -> int, 1e-5 -> float), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def solver_from_args(a: argparse.Namespace) -> SolverSpec:
    """The spec the solver flags describe (unset flags take the spec's defaults).

    Raises:
        ValueError: naming the flag's field and what is wrong with it.
    """
    given = {k: v for k in SolverSpec.model_fields if (v := getattr(a, k)) is not None}
    return SolverSpec.from_dict({"method": SolverSpec.model_fields["method"].default, **given})


def parser() -> argparse.ArgumentParser:
    """The command line of this module (see its docstring)."""
    p = argparse.ArgumentParser(
        prog="python -m storage.generate_cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--chunk", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    add_solver_flags(p)
    p.add_argument("--dataset", default="unknown")
    p.add_argument("--chunks", default=None, help="chunk ids to do, e.g. 0-9,20 (default all)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--no-overlap",
        action="store_true",
        help="write in the solving thread (the default on CPU; on a GPU a writer thread overlaps)",
    )
    p.add_argument("--finalize", action="store_true", help="finalize when every chunk is done")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        solver = solver_from_args(a)
        model, meta = load_checkpoint(a.checkpoint)
        store = open_or_create_pairs(
            a.store,
            lambda: model,
            a.device,
            lambda line: print(line, flush=True),
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
