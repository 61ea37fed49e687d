"""Stores written before the solver spec keep their digest and resume under the same recipe.

The digests below were computed by ``python -m tests.storage.legacy`` on the code before
``rf_core.solver_spec`` existed (the solver then lived in hand-written dict validation), so they
pin what earlier releases wrote, not what this code computes.
"""

from __future__ import annotations

import pytest
import zarr

from rf_core.solver_spec import SolverSpec
from storage.pairstore import PairStore, PairStoreError
from tests.storage.legacy import LEGACY_SOLVERS, legacy_attrs, write_legacy_store
from tests.storage.storekit import fill_with_index, store_kwargs, tree_hash

DIGESTS_BEFORE_THE_SPEC = {
    "rk4-before-grids": "2db080389c4b1f8e506cff365bddaa52163ff233351cc71527cdf2e5b0a2f84d",
    "dopri5-before-grids": "35459f7e23696be8c0ec56cb4f2c83c669f894f42a93d1e88981345501633017",
    "rk4-from-config": "17167db126cef5d8316485bbc74bd8a2b9edd548fc34195f53b88b09aa368fc8",
    "dopri5-from-config": "880e6d0d7a8392db06c258db641b9955055370f7a55831e18e39518d36c067df",
    "rk4-ends-compiled": "d7e12a10dfff66094a4b142a4bde9b09bdc0b701dc86e20174dba0dd3107dd53",
}
# The request that made each store, as a config's pairs.solver (or the worker CLI's flags) gives
# it today.
REQUESTS = {
    "rk4-before-grids": {"method": "rk4", "steps": 40},
    "dopri5-before-grids": {},
    "rk4-from-config": {"method": "rk4", "steps": 14},
    "dopri5-from-config": {"method": "dopri5", "rtol": 1e-4, "atol": 1e-4, "batch_size": 4},
    "rk4-ends-compiled": {"method": "rk4", "steps": 6, "grid": "ends", "rho": 1.5, "compile": True},
}
NAMES = list(LEGACY_SOLVERS)


@pytest.mark.parametrize("name", NAMES)
def test_a_finished_legacy_store_keeps_its_digest(tmp_path, name):
    uri = write_legacy_store(str(tmp_path / "old.zarr"), LEGACY_SOLVERS[name])
    store = PairStore.open(uri, mode="r+")
    assert store.compute_digest() == DIGESTS_BEFORE_THE_SPEC[name]
    assert store.finalize() == DIGESTS_BEFORE_THE_SPEC[name]
    # Nothing was filled in on disk: the attrs are the old ones plus complete/digest.
    on_disk = dict(zarr.open_group(uri, mode="r").attrs)
    want = legacy_attrs(LEGACY_SOLVERS[name])
    assert on_disk == {**want, "complete": True, "digest": DIGESTS_BEFORE_THE_SPEC[name]}
    assert PairStore.open(uri).solver == SolverSpec(**{"batch_size": 8, **REQUESTS[name]})


@pytest.mark.parametrize("name", NAMES)
def test_a_half_done_legacy_store_resumes_under_todays_request(tmp_path, name):
    uri = write_legacy_store(str(tmp_path / "old.zarr"), LEGACY_SOLVERS[name], chunks=[0, 2])
    request = SolverSpec.model_validate(REQUESTS[name])  # as a config reads pairs.solver
    store = PairStore.open_or_create(uri, **store_kwargs(solver=request))
    assert store.missing_chunks() == [1, 3]
    fill_with_index(store, [1, 3])
    assert store.finalize() == DIGESTS_BEFORE_THE_SPEC[name]


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("rk4-before-grids", {"steps": 41}),
        ("rk4-from-config", {"grid": "cosine"}),
        ("dopri5-before-grids", {"rtol": 1e-4}),
        ("rk4-ends-compiled", {"compile": False}),
        ("rk4-ends-compiled", {"rho": 2.0}),
    ],
)
def test_a_legacy_store_refuses_another_recipe(tmp_path, name, change):
    uri = write_legacy_store(str(tmp_path / "old.zarr"), LEGACY_SOLVERS[name], chunks=[0])
    before = tree_hash(tmp_path / "old.zarr")
    request = SolverSpec.model_validate({**REQUESTS[name], **change})
    with pytest.raises(PairStoreError, match="cannot resume"):
        PairStore.open_or_create(uri, **store_kwargs(solver=request))
    assert tree_hash(tmp_path / "old.zarr") == before
