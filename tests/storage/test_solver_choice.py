"""Pair stores made with ``method: auto``: screened once by their creator, never again.

A store's screen is counted by its log line ("screening pair solvers"); a resume is given a model
loader that fails the test if called, so a second screen cannot happen unnoticed.
"""

from __future__ import annotations

import shutil

import pytest
import zarr
from typer.testing import CliRunner

from flows.cli_pairs import pairs_app
from rf_core.solver_spec import SolverSpec
from rf_core.training import load_checkpoint
from storage.generate import chunk_inputs, generate_chunks
from storage.layout import SOLVER_CHOICE, PairStoreError
from storage.pairstore import PairStore
from storage.solver_choice import open_or_create_pairs, probe_inputs, recorded_screen
from storage.verify import repair, verify
from tests.storage.storekit import assert_same_store, source_for, store_kwargs, tree_hash

AUTO = {"method": "auto", "tolerance": 1e-3, "probe": 8}


class Lines(list):
    """A log that keeps its lines and counts the screens among them."""

    def __call__(self, line: str) -> None:
        self.append(line)

    @property
    def screens(self) -> int:
        return sum(line.startswith("screening pair solvers") for line in self)


def no_model():
    raise AssertionError("the model was loaded: a resume must not screen")


@pytest.fixture
def model(ckpt):
    return load_checkpoint(ckpt)[0]


def kwargs(ckpt, **over):
    return store_kwargs(n=40, chunk=8, source=source_for(ckpt), **over)


def auto_store(uri, model, ckpt, log=None, **over):
    args = kwargs(ckpt, solver=dict(AUTO), **over)
    return open_or_create_pairs(
        str(uri), lambda: model, log=Lines() if log is None else log, **args
    )


def test_an_auto_store_is_byte_for_byte_a_store_of_the_chosen_recipe(tmp_path, model, ckpt):
    log = Lines()
    store = auto_store(tmp_path / "auto.zarr", model, ckpt, log)
    assert log.screens == 1 and any("the screen costs more than it saves" in x for x in log)
    generate_chunks(model, store)
    digest = store.finalize()
    chosen = store.solver  # a recipe: what a pinned run of it records
    assert not chosen.is_auto and chosen.batch_size == 8
    direct = PairStore.create(str(tmp_path / "direct.zarr"), **kwargs(ckpt, solver=chosen))
    generate_chunks(model, direct)
    assert direct.finalize() == digest
    assert store.attrs["solver"] == direct.attrs["solver"]
    assert_same_store(tmp_path / "auto.zarr", tmp_path / "direct.zarr")
    # The record: the request, the reference, every trial; the winner is the stored recipe.
    record = store.attrs[SOLVER_CHOICE]
    assert record["request"] == {**AUTO, "batch_size": 8, "compile": False}
    assert record["reference"]["nfe"] > 0 and record["trials"] and record["screened_at"]
    screen = recorded_screen(PairStore.open(str(tmp_path / "auto.zarr")))
    assert screen.chosen == chosen and screen.chosen_trial.bound <= AUTO["tolerance"]
    assert recorded_screen(direct) is None


def test_the_probe_is_the_stores_own_first_noise(tmp_path, model, ckpt):
    store = auto_store(tmp_path / "auto.zarr", model, ckpt)
    request = SolverSpec.model_validate(AUTO)
    x0, y = probe_inputs(request, 3, 8, 40, (2,), 3)
    want_x0, want_y = chunk_inputs(store, 0)
    assert x0.equal(want_x0[:8]) and y.equal(want_y[:8])


def test_resume_and_repair_never_screen_and_end_bit_identical(tmp_path, model, ckpt):
    whole = auto_store(tmp_path / "whole.zarr", model, ckpt)
    generate_chunks(model, whole)
    whole.finalize()
    log = Lines()
    half = auto_store(tmp_path / "half.zarr", model, ckpt, log)
    generate_chunks(model, half, [0, 3])
    resumed = open_or_create_pairs(
        str(tmp_path / "half.zarr"), no_model, log=log, **kwargs(ckpt, solver=dict(AUTO))
    )
    assert resumed.missing_chunks() == [1, 2, 4] and log.screens == 1
    generate_chunks(model, resumed)
    resumed.finalize()
    assert_same_store(tmp_path / "whole.zarr", tmp_path / "half.zarr")
    # Repair: a damaged chunk is regenerated with the recorded recipe, the record untouched.
    before = PairStore.open(str(tmp_path / "half.zarr")).attrs
    (tmp_path / "half.zarr" / resumed.chunk_key("x1", 2)).unlink()
    result = repair(PairStore.open(str(tmp_path / "half.zarr"), mode="r+"), model)
    assert result.regenerated == [2] and verify(PairStore.open(str(tmp_path / "half.zarr"))).ok
    assert PairStore.open(str(tmp_path / "half.zarr")).attrs == before
    assert_same_store(tmp_path / "whole.zarr", tmp_path / "half.zarr")


def test_the_chosen_recipe_pinned_resumes_an_auto_store(tmp_path, model, ckpt):
    store = auto_store(tmp_path / "auto.zarr", model, ckpt)
    generate_chunks(model, store, [0])
    pinned = PairStore.open_or_create(
        str(tmp_path / "auto.zarr"), **kwargs(ckpt, solver=store.solver)
    )
    assert pinned.missing_chunks() == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("request_", "named"),
    [
        ({**AUTO, "tolerance": 2e-3}, "its solver was chosen for the request"),
        ({**AUTO, "probe": 4}, "'probe': 8"),
        ({**AUTO, "compile": True}, "'compile': True"),
        ({"method": "rk4", "steps": 7}, "cannot resume pair store"),
    ],
)
def test_another_request_is_refused_and_nothing_changes(tmp_path, model, ckpt, request_, named):
    uri = tmp_path / "auto.zarr"
    generate_chunks(model, auto_store(uri, model, ckpt), [0])
    before = tree_hash(uri)
    with pytest.raises(PairStoreError, match="cannot resume") as err:
        open_or_create_pairs(str(uri), no_model, **kwargs(ckpt, solver=request_))
    assert named in str(err.value) and "nothing was changed" in str(err.value)
    assert tree_hash(uri) == before


def test_an_auto_request_does_not_resume_a_pinned_store(tmp_path, ckpt):
    uri = tmp_path / "pinned.zarr"
    PairStore.create(str(uri), **kwargs(ckpt))
    with pytest.raises(PairStoreError, match="was pinned, not chosen by a screen"):
        open_or_create_pairs(str(uri), no_model, **kwargs(ckpt, solver=dict(AUTO)))


@pytest.mark.parametrize(
    ("solver", "named"),
    [
        ({**AUTO, "probe": 9}, r"solver\['probe'\] = 9 is larger than the first chunk"),
        ({**AUTO, "tolerance": 0}, r"solver\['tolerance'\] must be a float with 0 < tolerance"),
        ({**AUTO, "tolerance": 1}, r"solver\['tolerance'\] must be a float with 0 < tolerance"),
        ({**AUTO, "steps": 4}, "method 'auto' chooses steps itself: remove 'steps'"),
    ],
)
def test_bad_requests_fail_before_any_work(tmp_path, ckpt, solver, named):
    uri = tmp_path / "p.zarr"
    with pytest.raises(PairStoreError, match=named):
        open_or_create_pairs(str(uri), no_model, **kwargs(ckpt, solver=solver))
    assert not uri.exists()


def test_a_store_cannot_be_created_with_an_unscreened_request(tmp_path, ckpt):
    with pytest.raises(PairStoreError, match="screened on the model before a store is made"):
        PairStore.create(str(tmp_path / "p.zarr"), **kwargs(ckpt, solver=dict(AUTO)))
    assert not (tmp_path / "p.zarr").exists()


def test_status_shows_the_choice_and_what_was_measured(tmp_path, model, ckpt):
    uri = tmp_path / "auto.zarr"
    store = auto_store(uri, model, ckpt)
    out = CliRunner().invoke(pairs_app, ["status", str(uri)])
    assert out.exit_code == 0, out.output
    screen = recorded_screen(store)
    assert f"chosen by a screen: {store.solver.label()}" in out.output
    assert f"reference dopri5 1e-07: {screen.reference_nfe} NFE" in out.output
    rows = [line.split() for line in out.output.splitlines()]
    for trial in screen.trials:  # one table row per trial, the chosen one marked
        mark = ["*"] if trial is screen.chosen_trial else []
        assert [*mark, trial.solver.label(), str(trial.nfe), f"{trial.error:.2e}"] in [
            r[: 3 + len(mark)] for r in rows
        ]
    # A legacy or pinned store shows no choice.
    shutil.rmtree(uri)
    PairStore.create(str(uri), **kwargs(ckpt))
    out = CliRunner().invoke(pairs_app, ["status", str(uri)])
    assert out.exit_code == 0 and "chosen by a screen" not in out.output
    assert SOLVER_CHOICE not in zarr.open_group(str(uri), mode="r").attrs
