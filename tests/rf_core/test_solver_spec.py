"""The solver spec: its store dict, reading stored dicts, resume identity, solve_ode arguments."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from rf_core.config import ModelConfig
from rf_core.models import build_model
from rf_core.solver_spec import AUTO_FIELDS, SolverSpec
from rf_core.solvers import solve_ode
from rf_core.timegrids import time_grid


def test_store_dict_holds_every_field_with_the_batch_resolved():
    rk4 = SolverSpec(method="rk4", steps=8)
    assert rk4.store_dict(chunk=4) == {
        "method": "rk4",
        "rtol": None,  # a fixed-step method never sees its tolerances
        "atol": None,
        "steps": 8,
        "batch_size": 4,
        "grid": "uniform",
        "rho": 2.0,
        "compile": False,
    }
    # Declaration order; guidance only when set (a default store's attrs are as before it); an
    # auto request's fields are never part of a recipe's dict.
    recipe_fields = [f for f in SolverSpec.model_fields if f not in AUTO_FIELDS]
    assert list(rk4.store_dict(4)) == [f for f in recipe_fields if f != "guidance"]
    guided = SolverSpec(method="rk4", steps=8, guidance=2)
    assert guided.store_dict(4) == {**rk4.store_dict(4), "guidance": 2.0}
    assert list(guided.store_dict(4)) == recipe_fields
    ends = SolverSpec(method="rk4", steps=8, grid="ends", rho=1.5, batch_size=2, compile=True)
    assert ends.store_dict(4) == {
        **rk4.store_dict(4),
        "grid": "ends",
        "rho": 1.5,
        "batch_size": 2,
        "compile": True,
    }
    assert SolverSpec(rtol=1e-4, atol=1e-4).store_dict(8) == {
        "method": "dopri5",
        "rtol": 1e-4,
        "atol": 1e-4,
        "steps": None,
        "batch_size": 8,
        "grid": "uniform",
        "rho": 2.0,
        "compile": False,
    }


def test_a_stored_dict_reads_back_as_the_same_spec():
    for spec in (
        SolverSpec(),
        SolverSpec(method="rk4", steps=14, batch_size=8),
        SolverSpec(method="euler", steps=3, grid="cosine", rho=4.0, compile=True, batch_size=2),
        SolverSpec(method="bosh3", rtol=1e-3, atol=1e-6, batch_size=5),
        SolverSpec(method="euler", steps=2, guidance=1.5),
    ):
        assert SolverSpec.from_dict(spec.store_dict(8)) == spec.model_copy(
            update={"batch_size": spec.batch_size or 8}
        )


def test_keys_missing_from_an_old_store_read_as_their_defaults():
    before_grids = {"method": "rk4", "rtol": None, "atol": None, "steps": 40, "batch_size": 8}
    spec = SolverSpec.from_dict(before_grids)
    assert (spec.grid, spec.rho, spec.compile) == ("uniform", 2.0, False)
    assert (spec.rtol, spec.atol) == (1e-5, 1e-5)  # None = solve_ode's default
    assert spec.resume_identity(8) == SolverSpec(method="rk4", steps=40).resume_identity(8)


def test_resume_identity_compares_what_changes_the_pairs():
    rk4 = SolverSpec(method="rk4", steps=8)
    # Tolerances of a fixed-step method and rho of a grid that ignores it change nothing.
    assert SolverSpec(method="rk4", steps=8, rtol=1e-3, rho=5.0).resume_identity(4) == (
        rk4.resume_identity(4)
    )
    assert SolverSpec(method="rk4", steps=8, batch_size=4).resume_identity(4) == (
        rk4.resume_identity(4)
    )
    for other in (
        SolverSpec(method="rk4", steps=9),
        SolverSpec(method="rk4", steps=8, batch_size=2),
        SolverSpec(method="rk4", steps=8, compile=True),
        SolverSpec(method="rk4", steps=8, grid="cosine"),
        SolverSpec(method="midpoint", steps=8),
    ):
        assert other.resume_identity(4) != rk4.resume_identity(4), other
    ends = SolverSpec(method="rk4", steps=8, grid="ends", rho=1.5)
    assert ends.resume_identity(4) != ends.model_copy(update={"rho": 2.0}).resume_identity(4)
    assert SolverSpec(rtol=1e-4).resume_identity(4) != SolverSpec().resume_identity(4)


def test_guidance_added_with_a_default_leaves_old_stores_resumable():
    stored = SolverSpec(method="rk4", steps=14).store_dict(8)
    assert "guidance" not in stored  # as stores written before the field
    old = SolverSpec.from_dict(stored)
    assert old.guidance == 0.0
    assert old.resume_identity(8) == SolverSpec(method="rk4", steps=14).resume_identity(8)
    guided = SolverSpec(method="rk4", steps=14, guidance=1.0)
    assert old.resume_identity(8) != guided.resume_identity(8)
    assert SolverSpec.from_dict(guided.store_dict(8)).resume_identity(8) == (
        guided.resume_identity(8)
    )


def test_solve_kwargs_are_what_solve_ode_takes():
    assert SolverSpec(method="rk4", steps=6, batch_size=4).solve_kwargs() == {
        "method": "rk4",
        "steps": 6,
        "batch_size": 4,
    }
    ends = SolverSpec(method="rk4", steps=6, grid="ends", rho=1.5).solve_kwargs()
    assert ends["t_grid"] == time_grid("ends", 6, rho=1.5).tolist() and ends["steps"] == 6
    guided = SolverSpec(method="euler", steps=2, guidance=0.5).solve_kwargs()
    assert guided == {"method": "euler", "steps": 2, "batch_size": None, "guidance": 0.5}
    assert SolverSpec(rtol=1e-3, atol=1e-4).solve_kwargs() == {
        "method": "dopri5",
        "batch_size": None,
        "rtol": 1e-3,
        "atol": 1e-4,
    }
    model = build_model(ModelConfig(kind="mlp", data_shape=(2,), hidden=8, depth=1))
    x0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    grid = time_grid("ends", 6, rho=1.5).tolist()
    for spec, explicit in (
        (
            SolverSpec(method="rk4", steps=6, grid="ends", rho=1.5),
            {"method": "rk4", "t_grid": grid},
        ),
        (
            SolverSpec(method="euler", steps=3, batch_size=2),
            {"method": "euler", "steps": 3, "batch_size": 2},
        ),
        (SolverSpec(rtol=1e-3, atol=1e-3), {"rtol": 1e-3, "atol": 1e-3}),
    ):
        a, b = solve_ode(model, x0, **spec.solve_kwargs()), solve_ode(model, x0, **explicit)
        assert torch.equal(a.x1, b.x1) and a.nfe == b.nfe, spec


def test_labels_name_the_setting():
    assert SolverSpec(method="euler", steps=4).label() == "euler_4"
    assert SolverSpec().label() == "dopri5"
    assert SolverSpec(method="rk4", steps=8, grid="ends", rho=1.5).label() == "rk4_8_ends1.5"
    assert SolverSpec(method="rk4", steps=8, grid="cosine").label() == "rk4_8_cosine"
    assert SolverSpec(rtol=1e-3, atol=1e-3).label() == "dopri5_tol0.001"
    assert SolverSpec(method="rk4", steps=8, compile=True, batch_size=3).label() == "rk4_8"
    assert SolverSpec(method="euler", steps=1, guidance=2.0).label() == "euler_1_w2"


@pytest.mark.parametrize(
    ("solver", "named"),
    [
        ({"method": "rk45"}, "method 'rk45' is not a solver"),
        ({"method": "dopri5", "steps": 4}, "takes rtol/atol, not steps"),
        ({"method": "rk4"}, "fixed-step method 'rk4' needs solver\\['steps'\\]"),
        ({"method": "rk4", "steps": 2.5}, "solver\\['steps'\\] must be a positive int"),
        ({"method": "rk4", "steps": 4, "batch_size": 0}, "solver\\['batch_size'\\] must be"),
        ({"method": "dopri5", "rtol": -1.0}, "solver\\['rtol'\\]"),
        ({"method": "rk4", "steps": 4, "rho": float("inf")}, "solver\\['rho'\\] must be a finite"),
        ({"method": "rk4", "steps": 4, "compile": "yes"}, "solver\\['compile'\\] must be true"),
        ({"method": "dopri5", "grid": "end"}, "grid 'end' needs a fixed-step method"),
        ({"method": "rk4", "steps": 4, "order": 2}, "keys among"),
        ({"method": "rk4", "steps": 4, "guidance": -1.0}, "solver\\['guidance'\\] must be"),
        ({"method": "rk4", "steps": 4, "guidance": "2"}, "solver\\['guidance'\\] must be"),
        (["rk4"], "solver must be a dict"),
    ],
)
def test_bad_solver_dicts_are_named(solver, named):
    with pytest.raises(ValueError, match=named):
        SolverSpec.from_dict(solver)


def test_the_spec_is_frozen_and_strict_about_keys():
    spec = SolverSpec(method="rk4", steps=4)
    with pytest.raises(ValidationError):
        spec.steps = 5
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        SolverSpec(method="rk4", steps=4, tol=1e-3)
