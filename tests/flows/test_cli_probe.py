"""``rectiflow pairs probe``: the screen a store of ``method: auto`` runs, without a store."""

from __future__ import annotations

import torch
import yaml
from typer.testing import CliRunner

from flows.cli_pairs import pairs_app
from flows.config import load_config
from flows.inputs import model_arg, store_args
from rf_core.config import ModelConfig
from rf_core.models import build_model
from rf_core.training import load_checkpoint, save_checkpoint
from storage.solver_choice import open_or_create_pairs, recorded_screen
from tests.helpers import tiny_config_dict

AUTO = {"method": "auto", "tolerance": 5e-3, "probe": 32}


def _rows(output: str) -> list[list[str]]:
    """The table rows of the output: [mark?, solver, nfe, error, ...] split on whitespace."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["solver", "nfe"])
    end = next(i for i, line in enumerate(lines) if line.strip().startswith("(* chosen"))
    return [line.split() for line in lines[start + 1 : end]]


def test_probe_of_a_config_is_the_screen_its_store_records(tmp_path, runs_dir):
    torch.manual_seed(0)
    net = build_model(ModelConfig(kind="mlp", data_shape=(2,), hidden=32, depth=2))
    ckpt = save_checkpoint(tmp_path / "m.pt", net)
    cfg_path = tmp_path / "auto.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config_dict(runs_dir, **{"pairs.solver": AUTO})))
    out = CliRunner().invoke(pairs_app, ["probe", str(ckpt), "--config", str(cfg_path)])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("screening pair solvers on 32 noise draws")
    assert "the screen cost" in out.output and "on 1,024 pairs" in out.output  # pairs.n
    # A store of that config, created with its screen: the same draws, trials and choice.
    cfg = load_config(cfg_path)
    args = store_args(cfg, model_arg(str(ckpt), "model"))
    store = open_or_create_pairs(
        str(tmp_path / "p.zarr"), lambda: load_checkpoint(ckpt)[0], log=lambda line: None, **args
    )
    screen = recorded_screen(store)
    printed = _rows(out.output)
    assert [r[-5] for r in printed] == [t.solver.label() for t in screen.trials]
    assert [r[-3] for r in printed] == [f"{t.error:.2e}" for t in screen.trials]
    (marked,) = [r for r in printed if r[0] == "*"]
    assert marked[1] == store.solver.label()


def test_probe_options_override_and_a_tighter_tolerance_costs_more(tmp_path):
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "m.pt", build_model(ModelConfig(kind="mlp", data_shape=(2,), hidden=32, depth=2))
    )
    nfe = []
    for tol in ("1e-2", "1e-3"):
        out = CliRunner().invoke(
            pairs_app, ["probe", str(ckpt), "--tolerance", tol, "--probe", "16"]
        )
        assert out.exit_code == 0, out.output
        assert f"for auto_tol{float(tol):g}_probe16" in out.output
        assert "the screen cost" not in out.output  # no pairs.n without a config
        nfe.append(int(next(r for r in _rows(out.output) if r[0] == "*")[2]))
    assert nfe[0] <= nfe[1]
