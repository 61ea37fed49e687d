"""Pipeline configs: every shipped YAML validates; bad fields are named; paths become absolute."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from flows.config import MOVED, PipelineConfig, load_config
from flows.execution import FORMER_PLACES, ExecutionParams
from rf_core.solver_spec import SolverSpec
from tests.helpers import tiny_config_dict

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_all_shipped_configs_exist_and_validate():
    names = {p.stem for p in CONFIGS}
    assert {"toy2d", "mnist5k", "mnist", "fashion", "cifar10"} <= names
    for path in CONFIGS:
        cfg = load_config(path)
        assert cfg.name == path.stem and Path(cfg.runs_dir).is_absolute()
        assert cfg.testing.fail_shards == {} and cfg.testing.chunk_delay_s == 0
        assert not cfg.distill.enabled  # "+distill" is opt-in


def test_relative_runs_dir_is_made_absolute_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(tiny_config_dict(Path("r")))
    assert cfg.runs_dir == str(tmp_path / "r")
    assert load_config(cfg.model_dump(mode="json")) == cfg  # round-trips (deployment params)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"model.num_classes": 10}, "model.num_classes must be 0 for 2-D toy"),
        ({"execution.devices": ["tpu:0"]}, "devices must be 'auto'"),
        ({"name": "bad name!"}, "name"),
        ({"runs_dir": "s3://bucket/runs"}, "runs_dir must be a local directory"),
        ({"pairs.solver": {"method": "rk45"}}, "method 'rk45' is not a solver"),
        ({"pairs.solver": {"method": "dopri5", "steps": 4}}, "takes rtol/atol, not steps"),
        ({"pairs.batch_size": 64}, "pairs.batch_size moved into the solver recipe"),
        ({"evaluate.steps": [0, 2]}, "evaluate.steps"),
        ({"testing.chunk_delay_s": -1}, "testing.chunk_delay_s"),
        ({"distill.enabled": True, "reflow.rounds": 0}, "distill.enabled needs reflow.rounds"),
        ({"distill.ema_decay": 1.0}, "distill.ema_decay"),
        ({"base.label_dropout": 0.1}, "base.label_dropout needs a class-conditional model"),
        ({"evaluate.guidance": [0, 2]}, "evaluate.guidance needs a class-conditional model"),
        ({"evaluate.guidance": [2]}, "0 (unguided) among them"),
        ({"evaluate.guidance": [0, -1]}, "must be distinct numbers >= 0"),
        ({"base.label_dropout": 1.0}, "base.label_dropout"),
        ({"pairs.solver": {"method": "euler", "steps": 2, "guidance": -1}}, "guidance"),
    ],
)
def test_invalid_fields_are_named(override, message, tmp_path):
    with pytest.raises(ValueError, match="invalid config") as err:
        load_config(tiny_config_dict(tmp_path, **override))
    assert message in str(err.value)


def test_config_is_frozen(tmp_path):
    cfg = load_config(tiny_config_dict(tmp_path))
    with pytest.raises(ValueError):
        cfg.seed = 3
    assert isinstance(cfg, PipelineConfig)


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ValueError, match=r"broken\.yaml is not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_config(listy)


def test_the_config_solver_is_the_store_solver(tmp_path):
    pairs = load_config(Path(CONFIGS[0]).parent / "mnist5k.yaml").pairs
    stored = pairs.solver.store_dict(pairs.chunk)
    assert stored["method"] == pairs.solver.method and stored["steps"] == pairs.solver.steps
    assert SolverSpec.from_dict(stored) == pairs.solver.model_copy(
        update={"batch_size": pairs.chunk}
    )
    ends = {"method": "rk4", "steps": 8, "grid": "ends", "rho": 1.5, "batch_size": 64}
    cfg = load_config(tiny_config_dict(tmp_path, **{"pairs.solver": ends}))
    assert cfg.pairs.solver == SolverSpec(**ends) == SolverSpec.from_dict(ends)
    with pytest.raises(ValidationError, match="grid 'ends' needs a fixed-step method"):
        SolverSpec(method="dopri5", grid="ends")
    with pytest.raises(ValidationError, match="grid"):
        SolverSpec(method="rk4", steps=8, grid="zigzag")


@pytest.mark.parametrize("old", FORMER_PLACES)
def test_settings_at_their_old_place_name_the_new_one(tmp_path, old):
    data = tiny_config_dict(tmp_path)
    section, _, name = old.rpartition(".")
    (data[section] if section else data)[name] = ExecutionParams().model_dump()[name]
    with pytest.raises(ValueError, match="invalid config") as err:
        load_config(data)
    assert f"{old} moved to execution.{name}" in str(err.value)
    assert MOVED[old] == f"to execution.{name}"  # and the new place takes the same value
    data = tiny_config_dict(tmp_path)
    data["execution"][name] = ExecutionParams().model_dump()[name]
    assert getattr(load_config(data).execution, name) == getattr(ExecutionParams(), name)


DIGITS = {
    "data.dataset": "mnist5k",
    "model": {"kind": "unet", "data_shape": [1, 28, 28], "num_classes": 10, "base_channels": 8},
}
GUIDED_PAIRS = {"pairs.solver": {"method": "euler", "steps": 2, "guidance": 1.5}}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"evaluate.guidance": [0, 2]},
         "evaluate.guidance needs models trained with label dropout: set base.label_dropout, "
         "reflow.train.label_dropout > 0"),
        ({"evaluate.guidance": [0, 2], "base.label_dropout": 0.1},
         "set reflow.train.label_dropout > 0"),
        ({"evaluate.guidance": [0, 2], "base.label_dropout": 0.1, "reflow.train.label_dropout": 0.1,
          "distill.enabled": True}, "set distill.label_dropout > 0"),
        (GUIDED_PAIRS, "pairs.solver.guidance needs models trained with label dropout: set "
                       "base.label_dropout > 0"),
        ({**GUIDED_PAIRS, "base.label_dropout": 0.1, "reflow.rounds": 2},
         "pairs.solver.guidance needs models trained with label dropout: set "
         "reflow.train.label_dropout > 0"),
    ],
)  # fmt: skip
def test_guidance_needs_every_guided_model_trained_with_label_dropout(tmp_path, override, message):
    with pytest.raises(ValueError, match="invalid config") as err:
        load_config(tiny_config_dict(tmp_path, **DIGITS, **override))
    assert message in str(err.value)


def test_a_guided_config_loads(tmp_path):
    dropout = {"base.label_dropout": 0.1, "reflow.train.label_dropout": 0.1}
    cfg = load_config(
        tiny_config_dict(
            tmp_path, **DIGITS, **dropout, **GUIDED_PAIRS, **{"evaluate.guidance": [0, 2]}
        )
    )
    assert cfg.evaluate.guidance == (0.0, 2.0) and cfg.pairs.solver.guidance == 1.5
    assert cfg.pairs.solver.store_dict(8)["guidance"] == 1.5
    # One round: the pairs come from 1-RF only, so the 2-RF may be trained without dropout.
    one = load_config(
        tiny_config_dict(tmp_path, **DIGITS, **GUIDED_PAIRS, **{"base.label_dropout": 0.1})
    )
    assert one.reflow.train.label_dropout == 0
