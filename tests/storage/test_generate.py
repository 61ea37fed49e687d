"""Generation into real stores with a real (tiny, untrained) model and the rf_core solver."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rf_core.compiled import compile_velocity
from rf_core.solvers import solve_ode
from rf_core.timegrids import time_grid
from storage.generate import chunk_inputs, chunk_seed, generate_chunks, prepare_model
from storage.pairstore import ChunkCorruptError, PairStore, PairStoreError
from tests.storage.storekit import SOLVER, assert_same_store, store_kwargs, tiny_model


def make(tmp_path, name="p.zarr", **kw) -> PairStore:
    return PairStore.create(str(tmp_path / name), **store_kwargs(**kw))


def test_pairs_are_the_solver_endpoints_of_seeded_noise(tmp_path):
    store, model = make(tmp_path), tiny_model()
    stats = generate_chunks(model, store, [1])
    assert (stats.chunks_done, stats.chunks_skipped) == (1, 0)
    x0, x1, y = store.read_chunk(1)
    want_x0, want_y = chunk_inputs(store, 1)
    np.testing.assert_array_equal(x0, want_x0.numpy())
    np.testing.assert_array_equal(y, want_y.numpy())
    assert set(np.unique(y)) <= {0, 1, 2}
    ref = solve_ode(model, want_x0, want_y, method="rk4", steps=40)
    np.testing.assert_array_equal(x1, ref.x1.numpy())
    # NFE is counted by the solver's wrapper: rk4 = 4 evaluations per step.
    assert stats.nfe == store.nfe()[1] == ref.nfe_total == 4 * 40
    assert store.missing_chunks() == [0, 2, 3]


def test_noise_depends_on_seed_and_chunk_only(tmp_path):
    a, b = make(tmp_path, "a.zarr"), make(tmp_path, "b.zarr", n=64)
    for i in range(3):  # same (seed, i) in stores of different n -> same inputs
        for ta, tb in zip(chunk_inputs(a, i), chunk_inputs(b, i), strict=True):
            assert torch.equal(ta, tb)
    assert not torch.equal(chunk_inputs(a, 0)[0], chunk_inputs(a, 1)[0])
    c = make(tmp_path, "c.zarr", seed=4)
    assert not torch.equal(chunk_inputs(a, 0)[0], chunk_inputs(c, 0)[0])
    assert len({chunk_seed(s, i) for s in range(20) for i in range(20)}) == 400
    unconditional = make(tmp_path, "u.zarr", num_classes=0)
    assert set(chunk_inputs(unconditional, 3)[1].tolist()) == {-1}


def test_any_order_any_split_gives_the_same_store(tmp_path):
    model = tiny_model()
    ref = make(tmp_path, "ref.zarr")
    generate_chunks(model, ref, overlap=False)
    ref.finalize()
    other = make(tmp_path, "other.zarr")
    s1 = generate_chunks(model, other, [3, 1], overlap=True)  # the background writer
    s2 = generate_chunks(model, other, [0, 1, 2, 3])  # 1 and 3 are skipped
    assert (s1.chunks_done, s2.chunks_done, s2.chunks_skipped) == (2, 2, 2)
    assert s1.nfe + s2.nfe == int(ref.nfe().sum())
    other.finalize()
    assert_same_store(tmp_path / "ref.zarr", tmp_path / "other.zarr")


def test_non_finite_solution_fails_loudly_and_is_not_marked(tmp_path):
    store, model = make(tmp_path), tiny_model()
    generate_chunks(model, store, [0])
    with torch.no_grad():  # a real model whose weights blew up
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(ChunkCorruptError, match="chunk 2 is corrupt: the ODE solution x1 has NaN"):
        generate_chunks(model, store, [2, 3])
    assert store.missing_chunks() == [1, 2, 3]
    assert not store.chunk_exists("x1", 2)
    assert np.isfinite(store.read_chunk(0)[1]).all()


def test_bad_arguments(tmp_path):
    store, model = make(tmp_path), tiny_model()
    with pytest.raises(PairStoreError, match="batch_size=4 differs from the store's"):
        generate_chunks(model, store, [0], batch_size=4)
    with pytest.raises(PairStoreError, match="chunk index must be an int in \\[0, 4\\)"):
        generate_chunks(model, store, [0, 9])
    ro = PairStore.open(str(tmp_path / "p.zarr"), mode="r")
    with pytest.raises(PairStoreError, match="read-only"):
        generate_chunks(model, ro, [0])
    assert store.missing_chunks() == [0, 1, 2, 3]  # nothing ran


def test_solve_batches_are_part_of_the_recipe(tmp_path):
    """A store solved in batches of 4 records it; generation then uses it by default."""
    store, model = (
        make(tmp_path, solver={"method": "rk4", "steps": 40, "batch_size": 4}),
        tiny_model(),
    )
    stats = generate_chunks(model, store, [0], batch_size=4)
    assert store.solver.batch_size == 4 and stats.nfe == 2 * 4 * 40  # two solves of 4


def test_a_non_uniform_grid_is_part_of_the_recipe(tmp_path):
    solver = {"method": "rk4", "steps": 6, "grid": "ends", "rho": 3.0}
    store, model = make(tmp_path, solver=solver), tiny_model()
    generate_chunks(model, store, [2])
    x0, y = chunk_inputs(store, 2)
    grid = time_grid("ends", 6, rho=3.0).tolist()
    ref = solve_ode(model, x0, y, method="rk4", steps=6, t_grid=grid)
    np.testing.assert_array_equal(store.read_chunk(2)[1], ref.x1.numpy())
    uniform = solve_ode(model, x0, y, method="rk4", steps=6)
    assert not np.array_equal(ref.x1.numpy(), uniform.x1.numpy())  # the grid really mattered
    assert store.nfe()[2] == 4 * 6


@pytest.mark.slow
def test_compiled_generation_matches_eager_and_regenerates_bit_for_bit(tmp_path):
    model = tiny_model()
    eager = make(tmp_path, "eager.zarr")
    generate_chunks(model, eager)
    solver = {**SOLVER, "compile": True}
    a = make(tmp_path, "a.zarr", solver=solver)
    generate_chunks(model, a)  # chunk 3 holds 6 pairs: a padded batch, not a recompilation
    for i in range(a.n_chunks):
        (ex0, ex1, ey), (x0, x1, y) = eager.read_chunk(i), a.read_chunk(i)
        np.testing.assert_array_equal(x0, ex0)
        np.testing.assert_array_equal(y, ey)
        np.testing.assert_allclose(x1, ex1, rtol=1e-4, atol=1e-5)
    # Another compiled model, other chunk order, two calls (as a resumed or repairing run does).
    b = make(tmp_path, "b.zarr", solver=solver)
    compiled = prepare_model(model, b, "cpu")
    assert prepare_model(compiled, b, "cpu") is compiled  # compiled once per shard
    generate_chunks(compiled, b, [3, 1])
    generate_chunks(compiled, b)
    a.finalize(), b.finalize()
    assert_same_store(tmp_path / "a.zarr", tmp_path / "b.zarr")


def test_a_model_compiled_for_another_store_is_refused(tmp_path):
    model = tiny_model()
    compiled = make(tmp_path, "c.zarr", solver={**SOLVER, "compile": True})
    with pytest.raises(PairStoreError, match=r"compiled for batch 4 but pair store .* of 8"):
        generate_chunks(compile_velocity(model, 4), compiled)
    eager = make(tmp_path, "e.zarr")
    with pytest.raises(PairStoreError, match="compile=False; pass the plain model"):
        generate_chunks(compile_velocity(model, 8), eager)
    assert compiled.missing_chunks() == eager.missing_chunks() == [0, 1, 2, 3]


def test_guided_pairs_record_their_scale_count_both_evaluations_and_resume_only_so(tmp_path):
    guided = {"method": "euler", "steps": 3, "guidance": 2.0}
    store, model = make(tmp_path, solver=guided), tiny_model()
    assert store.attrs["solver"]["guidance"] == 2.0 and store.solver.guidance == 2.0
    stats = generate_chunks(model, store, [0])
    x0, x1, y = store.read_chunk(0)
    ref = solve_ode(model, torch.from_numpy(x0), torch.from_numpy(y), "euler", 3, guidance=2.0)
    np.testing.assert_array_equal(x1, ref.x1.numpy())
    assert stats.nfe == store.nfe()[0] == 2 * 3  # two evaluations per guided step
    plain = solve_ode(model, torch.from_numpy(x0), torch.from_numpy(y), "euler", 3)
    assert not np.allclose(x1, plain.x1.numpy())
    # Resuming asks for the same scale: another one (or none) is refused, nothing written.
    for other in ({**guided, "guidance": 1.0}, {"method": "euler", "steps": 3}):
        with pytest.raises(PairStoreError, match=r"cannot resume .*guidance"):
            PairStore.open_or_create(store.uri, **store_kwargs(solver=other))
    again = PairStore.open_or_create(store.uri, **store_kwargs(solver=guided))
    assert again.missing_chunks() == [1, 2, 3]
    # A store without guidance records none: its attrs are what they were before the field.
    assert "guidance" not in make(tmp_path, "plain.zarr").attrs["solver"]
