"""The timed arms of ``benchmarks.pairgen``: the seed recipe in memory, and pair stores filled by
``generate_chunks``, an ``auto`` one screened by the product on its way.

Every arm solves the same noise and labels (a pair store's chunk inputs). A timed solve is
followed by a block of plain forwards at the same batch, so its efficiency (pairs/s x NFE over
forward images/s) compares two timings taken under the same load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.common import median, timed
from benchmarks.pairgen_base import seed_recipe
from rf_core.config import ModelConfig
from rf_core.pair_error import pair_error, sample_errors
from rf_core.screen_result import Screen
from rf_core.solver_spec import SolverSpec
from storage.generate import chunk_inputs, generate_chunks
from storage.pairstore import PairStore
from storage.solver_choice import open_or_create_pairs, recorded_screen

MAX_FWD_CALLS = 24  # forwards timed next to each solve: spans the same load, bounds the cost


@dataclass(frozen=True)
class Timing:
    """One timed solve and the efficiency of the forward block timed next to it."""

    seconds: float
    efficiency: float


@dataclass(frozen=True)
class PairRow:
    """One arm, medians over its rounds. ``path``: seed (memory) | zarr (generate_chunks).

    ``probe_error``: pair error on the probe draws (the first ``probe`` pairs, which the screen
    measured solvers on); ``held_out_error``: on every other pair, which played no part in the
    choice; ``err_p50``/``err_max``: median and largest per-sample error of the held-out pairs.
    """

    setting: str
    path: str
    batch: int
    nfe_per_pair: float
    pairs_per_s: float
    speedup: float
    probe_error: float
    held_out_error: float
    err_p50: float
    err_max: float
    efficiency: float


def forward_inputs(cfg: ModelConfig, batch: int, seed: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """Random (x, t, y) of ``batch`` samples for timing model forwards."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *cfg.data_shape), generator=g)
    t, y = torch.rand(batch, generator=g), torch.randint(0, max(cfg.num_classes, 1), (batch,))
    return x, t, y


def timed_solve(fn, nfe_of, model: nn.Module, cfg: ModelConfig, n: int, batch: int):
    """Run ``fn()`` (a solve of ``n`` pairs), then time min(NFE, cap) forwards at ``batch``.

    The forwards run as one block under inference_mode (inputs made there, like a solve's: a
    compiled graph guards on it), after one warm-up call.

    Returns:
        (Timing, the solve's result); ``nfe_of(result)`` is its NFE per pair.
    """
    sec, out = timed(fn)
    calls = max(1, min(nfe_of(out), MAX_FWD_CALLS))
    with torch.inference_mode():
        x, t, y = forward_inputs(cfg, batch)
        model(x, t, y)
        fwd_s = timed(lambda: [model(x, t, y) for _ in range(calls)])[0]
    return Timing(sec, (n / sec) * nfe_of(out) / (calls * batch / fwd_s)), out


def make_row(name, path, batch, nfe, timings, x1, x1_ref, seed_rate, probe: int) -> PairRow:
    """A PairRow from the medians of ``timings`` and the errors of ``x1`` (probe, held out)."""
    rate = len(x1) / median([t.seconds for t in timings])
    errs = sample_errors(x1[probe:], x1_ref[probe:])
    speedup = rate / seed_rate if seed_rate else 1.0  # the seed's own row: 1
    return PairRow(
        name,
        path,
        batch,
        nfe,
        rate,
        speedup,
        pair_error(x1[:probe], x1_ref[:probe]),
        pair_error(x1[probe:], x1_ref[probe:]),
        float(errs.median()),
        float(errs.max()),
        median([t.efficiency for t in timings]),
    )


def store_args(n: int, chunk: int, cfg: ModelConfig, sha: str, solver: Any) -> dict[str, Any]:
    """The arguments of ``PairStore.create`` for the benchmark's stores (seed 0, MNIST-5k)."""
    source = {"model_id": "bench", "model_uri": "bench", "checkpoint_sha256": sha, "k": 1}
    return dict(
        n=n, chunk=chunk, sample_shape=cfg.data_shape, seed=0, source=source, solver=solver,
        dataset="mnist5k", num_classes=cfg.num_classes,
    )  # fmt: skip


def make_store(root: Path, name: str, n: int, solver: SolverSpec, cfg: ModelConfig, sha: str):
    """A fresh Zarr pair store (chunks of one solve batch) of the benchmark's noise and labels."""
    args = store_args(n, solver.batch_size, cfg, sha, solver)
    return PairStore.create(str(root / f"{name}.zarr"), **args)


def auto_store(root: Path, name: str, n: int, request: SolverSpec, model, cfg, sha, log):
    """A fresh store for an ``auto`` request through the product: screened on its chunk 0.

    Returns:
        (the store, ready to generate; its Screen; the screen's wall time in seconds).
    """
    args, uri = store_args(n, request.batch_size, cfg, sha, request), str(root / f"{name}.zarr")
    sec, store = timed(lambda: open_or_create_pairs(uri, lambda: model, log=log, **args))
    return store, recorded_screen(store), sec


def store_inputs(store: PairStore) -> tuple[Tensor, Tensor]:
    """All noise and labels of a store, in order: the inputs every arm is solved from."""
    parts = [chunk_inputs(store, i) for i in range(store.n_chunks)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def read_x1(store: PairStore) -> Tensor:
    """(n, *shape) x1 of every chunk of ``store``, read back through Zarr."""
    return torch.cat([torch.from_numpy(store.read_chunk(i)[1]) for i in range(store.n_chunks)])


def seed_arm(model, cfg, x0, y, seed_bs):
    """One timed seed-recipe solve (in memory): (Timing, x1, NFE per pair)."""
    fn = lambda: seed_recipe(model, x0, y, seed_bs)  # noqa: E731
    tm, (x1, nfe) = timed_solve(fn, lambda out: out[1], model, cfg, len(x0), seed_bs)
    return tm, x1, nfe


def store_arm(model, cfg, store: PairStore):
    """One timed generate_chunks run filling ``store``: (Timing, x1 read back from Zarr, NFE per
    pair). ``model`` may be a compiled one (the store's solver says ``compile``)."""
    k = store.n_chunks  # one solve per chunk
    fn = lambda: generate_chunks(model, store)  # noqa: E731
    tm, stats = timed_solve(fn, lambda st: round(st.nfe / k), model, cfg, store.n, store.chunk)
    return tm, read_x1(store), round(stats.nfe / k)


def chosen_store(root: Path, name: str, n: int, screen: Screen, cfg, sha) -> PairStore:
    """A fresh store with a screen's choice and record, as the screened store was made (its
    pairs are the same bytes), so later rounds time generation without screening again."""
    args = store_args(n, screen.chosen.batch_size, cfg, sha, screen.chosen)
    return PairStore.create(str(root / f"{name}.zarr"), **args, solver_choice=screen.record())


def interleaved(arms: dict[str, Callable[[int], tuple]], rounds: int, log) -> dict[str, list]:
    """Run every arm once per round, in the same order each round (A, B, C, A, B, C, ...).

    Returns:
        {arm: [(Timing, x1, NFE per pair) per round]}.
    """
    out: dict[str, list] = {arm: [] for arm in arms}
    for r in range(rounds):
        for arm, fn in arms.items():
            out[arm].append(fn(r))
        last = {a: o[-1][0] for a, o in out.items()}
        parts = [f"{a} {t.seconds:.1f} s (eff {t.efficiency:.2f})" for a, t in last.items()]
        log(f"  round {r}: " + ", ".join(parts))
    return out
