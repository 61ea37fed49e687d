"""Pair generation: the seed recipe vs rectiflow's generator, side by side on one trained model.

    python -m benchmarks.pairgen                 # CPU run that rewrites BENCHMARKS.md's section
    python -m benchmarks.pairgen --tiny          # seconds: untrained tiny model, smoke of the path
    python -m benchmarks.pairgen --quality       # also 2-RF on default vs seed pairs (slow)
    python -m benchmarks.pairgen --check-reference   # float32 vs float64 reference, then exit
    python -m benchmarks.pairgen --no-compile    # without the default's compile: true arm

(a) the seed recipe: torchdiffeq dopri5, rtol = atol = 1e-5, batches of 256 kept in memory;
(b) candidate settings of rectiflow (fixed-step solvers on time grids, looser adaptive solvers);
the chosen default is then timed through ``storage.generate.generate_chunks`` into a real Zarr
pair store, interleaved with (a), eagerly and with ``compile: true`` (rf_core.compiled; its
one-off compilation is timed apart and reported with the pair count where it pays off).
All use the same noise and labels (a store's chunk inputs).

Pair error = RMS(x1 - x1_ref) / RMS(x1_ref) against dopri5 at rtol = atol = 1e-7 on the same
noise (float32; ``--ref-dtype float64`` for a double solve, measured 4e-5 away at 5x the time).
Efficiency = pairs/s * NFE / (model forward images/s at the same batch): 1 means
the solver does nothing but model evaluations.

The code lives in pairgen_core (settings, errors, seed recipe, reference), pairgen_setup (model,
stores, forward timing), pairgen_measure (screen, head to head, levers) and pairgen_report.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import ROOT, write_section
from benchmarks.pairgen_core import (  # noqa: F401  (re-exported: the benchmark's public names)
    REF_TOL,
    SEED_SOLVER,
    PairRow,
    Setting,
    candidates,
    choose_default,
    efficiency,
    pair_error,
    reference_solve,
    sample_errors,
    seed_recipe,
    store_solver,
    tiny_settings,
)
from benchmarks.pairgen_measure import PairgenResult, reference_check, run
from benchmarks.pairgen_report import render, to_json
from benchmarks.pairgen_setup import (  # noqa: F401
    BENCH_TRAIN,
    MNIST_MODEL,
    TINY_MODEL,
    bench_model,
    forward_rate,
    make_store,
    replace_train,
    store_inputs,
)
from rf_core.training import checkpoint_sha256, load_checkpoint


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pairgen", description=__doc__)
    # 256 pairs = one seed-recipe batch of 256 (the spec). Fewer pairs let one hard
    # sample dominate the RMS pair error (see err_max).
    p.add_argument("--pairs", type=int, default=256, help="pairs per setting (default 256)")
    p.add_argument("--batch", type=int, default=None, help="samples per solve (default: pairs)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--train-steps", type=int, default=BENCH_TRAIN.steps)
    p.add_argument("--checkpoint", type=Path, default=None, help="use this 1-RF checkpoint")
    p.add_argument("--cache-dir", type=Path, default=ROOT / "runs" / "bench")
    p.add_argument(
        "--no-compile",
        action="store_true",
        help="skip the compiled arm (compile: true needs a C++ compiler; ~30-60 s first call)",
    )
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run (tiny model)")
    p.add_argument("--no-write", action="store_true", help="do not rewrite BENCHMARKS.md")
    p.add_argument("--check-reference", action="store_true", help="reference check, then exit")
    p.add_argument(
        "--ref-dtype", choices=("float32", "float64"), default="float32", help="reference dtype"
    )
    p.add_argument("--quality", action="store_true", help="also run the 2-RF quality check")
    p.add_argument("--quality-pairs", type=int, default=256, help="pairs per 2-RF pair set")
    p.add_argument("--quality-steps", type=int, default=60, help="2-RF steps in --quality")
    return p


def _model(a: argparse.Namespace):
    """The benchmark's model, its checkpoint path and the sentence describing it."""
    if a.checkpoint is not None:
        model, _ = load_checkpoint(a.checkpoint)
        return model.eval(), a.checkpoint, f"Model: checkpoint {a.checkpoint}"
    cfg = TINY_MODEL if a.tiny else MNIST_MODEL
    train = replace_train(BENCH_TRAIN, 5 if a.tiny else a.train_steps)
    model, path = bench_model(cfg, train, a.cache_dir)
    note = (
        f"Model: class-conditional U-Net {cfg.base_channels}×{cfg.channel_mult}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, 1-RF trained "
        f"{train.steps} steps × batch {train.batch_size} on MNIST-5k (cached `{path.name}`)"
    )
    return model, path, note


def main(argv: list[str] | None = None) -> PairgenResult | dict:
    """CLI entry; see the module docstring."""
    p = _parser()
    a = p.parse_args(argv)
    if a.pairs < 1 or (a.batch is not None and a.batch < 1):
        p.error(f"--pairs and --batch must be >= 1, got {a.pairs} and {a.batch}")
    if a.quality_pairs < 1 or a.quality_steps < 1:
        p.error(
            f"--quality-pairs and --quality-steps must be >= 1, got {a.quality_pairs} and "
            f"{a.quality_steps}"
        )
    torch.manual_seed(0)
    model, path, note = _model(a)
    cfg, batch = model.config, a.batch or a.pairs
    if a.check_reference:
        with tempfile.TemporaryDirectory() as tmp:
            x0, y = store_inputs(make_store(Path(tmp), "in", a.pairs, batch, cfg, SEED_SOLVER))
        out = reference_check(model, x0, y, batch)
        print(json.dumps(out, indent=1))
        return out
    settings = tiny_settings() if a.tiny else None
    sha = checkpoint_sha256(path)
    ref_dtype = getattr(torch, a.ref_dtype)
    res = run(
        model, cfg, a.pairs, batch, a.rounds, settings, not a.no_compile, a.cache_dir, sha,
        ref_dtype=ref_dtype,
    )  # fmt: skip
    args = sys.argv[1:] if argv is None else argv
    cmd = "python -m benchmarks.pairgen" + (" " + " ".join(args) if args else "")
    body = render(res, cmd, note)
    print(body)
    a.cache_dir.mkdir(parents=True, exist_ok=True)
    (a.cache_dir / "pairgen.json").write_text(json.dumps(to_json(res), indent=1, default=str))
    if not (a.no_write or a.tiny):
        write_section("pairgen", body)
    if a.quality:
        from benchmarks.pairgen_quality import quality_check

        size = {"n_pairs": a.quality_pairs, "steps": a.quality_steps}
        small = {"n_pairs": 8, "steps": 2, "n_eval": 16} if a.tiny else size
        write = not (a.no_write or a.tiny)
        quality_check(model, res.default_setting, write=write, command=cmd, **small)
    return res


if __name__ == "__main__":
    main()
