"""Smoke run of the pair-generation benchmark on a tiny untrained U-Net (no timing asserts)."""

from dataclasses import fields

import pytest
import torch

from benchmarks.common import markdown_table, replace_section
from benchmarks.pairgen import PairRow, choose_default, make_store, render, run
from benchmarks.pairgen_base import TINY_MODEL, efficiency, seed_recipe
from rf_core.models import build_model
from rf_core.solver_spec import SolverSpec
from rf_core.solvers import solve_ode
from rf_core.training import save_checkpoint


def test_efficiency_is_forward_time_share():
    # 2 pairs/s at 10 NFE = 20 forwards/s out of 40 possible
    assert efficiency(2.0, 10, 40.0) == pytest.approx(0.5)


def _row(name, nfe, err, rate=1.0):
    return PairRow(name, "solve_ode", 4, nfe, rate, 1.0, err, err, err, err, 1.0)


def test_choose_default_takes_fewest_nfe_within_the_error_then_the_fastest():
    settings = [
        SolverSpec(method="rk4", steps=8),
        SolverSpec(method="rk4", steps=4, grid="ends", rho=1.5),
        SolverSpec(method="rk4", steps=4, grid="cosine"),
        SolverSpec(method="midpoint", steps=8),
    ]
    rows = [_row("a", 32, 1e-4), _row("b", 16, 1e-4), _row("c", 16, 1e-4, rate=2.0)]
    rows.append(_row("d", 16, 1e-2, rate=9.0))  # cheapest and fastest, but too far off
    row, s = choose_default(rows, settings, max_error=1e-3)
    assert s == settings[2] and row.setting == "c"  # ties on NFE go to the faster one
    row, s = choose_default(rows[:2] + rows[3:], settings[:2] + settings[3:], max_error=1e-3)
    assert s == settings[1]
    assert choose_default(rows, settings, max_error=1e-5) == (None, None)


def test_benchmark_stores_carry_the_spec_they_were_made_with(tmp_path):
    for i, spec in enumerate(
        [
            SolverSpec(method="rk4", steps=8, batch_size=4),
            SolverSpec(method="rk4", steps=8, grid="ends", rho=1.5, batch_size=4),
            SolverSpec(method="rk4", steps=8, grid="cosine", batch_size=4),
            SolverSpec(method="dopri5", rtol=1e-4, atol=1e-4, batch_size=4),
        ]
    ):
        store = make_store(tmp_path, f"s{i}", 8, spec, TINY_MODEL, "0" * 64)
        assert store.solver == spec and store.chunk == 4
        assert store.attrs["solver"]["grid"] == spec.grid


def test_seed_recipe_matches_solve_ode_dopri5():
    torch.manual_seed(0)
    model = build_model(TINY_MODEL).eval()
    x0, y = torch.randn(6, *TINY_MODEL.data_shape), torch.randint(0, 10, (6,))
    x1, nfe = seed_recipe(model, x0, y, batch_size=3)
    res = solve_ode(model, x0, y, rtol=1e-5, atol=1e-5, batch_size=3)
    assert nfe == res.nfe and torch.allclose(x1, res.x1, atol=1e-6)


@pytest.mark.slow  # compiles the tiny U-Net (tens of seconds on 2 cores)
def test_tiny_run_reports_every_field(tmp_path):
    torch.manual_seed(0)
    model = build_model(TINY_MODEL).eval()
    settings = [
        SolverSpec(method="euler", steps=2),
        SolverSpec(method="rk4", steps=3),
        SolverSpec(method="rk4", steps=3, grid="end"),
    ]
    res = run(model, TINY_MODEL, 4, 4, 1, settings, workdir=tmp_path, log=lambda *_: None)
    assert [r.setting for r in res.screen] == [s.label() for s in settings]
    assert [r.nfe_per_pair for r in res.screen] == [2, 12, 12]  # counted, not inferred
    assert res.seed.nfe_per_pair > 0 and res.ref_nfe > res.seed.nfe_per_pair
    for row in [res.seed, *res.screen]:
        assert row.pairs_per_s > 0 and row.efficiency > 0 and row.pair_error >= 0
    if res.default is not None:  # chosen within the seed's own error, through a real store
        assert res.default.pair_error <= res.seed.pair_error
        assert res.default.path == "zarr (generate_chunks)"
    assert {lv.batch for lv in res.levers} >= {4, 64, 256, 512}
    # The compiled arm: compiled once (timed apart), measured as a forward lever and, when a
    # default exists, through a store with compile: true -- the same pairs up to rounding.
    assert res.compile_seconds > 0
    assert "torch.compile (frozen), batch 4" in {lv.option for lv in res.levers}
    if res.default is not None:
        assert res.compiled.setting == f"{res.default.setting} + compile"
        assert res.compiled.nfe_per_pair == res.default.nfe_per_pair
        assert res.compiled.pair_error == pytest.approx(res.default.pair_error, rel=1e-2, abs=1e-5)
    md = render(res, "cmd", "note")
    header = "| " + " | ".join(f.name for f in fields(PairRow)) + " |"
    assert header in md and "Levers" in md and "cmd" in md
    assert list(tmp_path.iterdir()) == []  # stores went to a temp dir that was removed


def test_sections_are_replaced_in_place():
    text = "# B\n<!-- a:start -->\nold a\n<!-- a:end -->\nkeep me\n"
    out = replace_section(text, "a", "new a")
    assert "new a" in out and "old a" not in out and "keep me" in out
    out = replace_section(out, "b", markdown_table([{"x": 1.0, "y": None}]))
    assert out.index("keep me") < out.index("<!-- b:start -->")
    assert "| 1 | — |" in out
    with pytest.raises(ValueError, match="section 'a' needs exactly one"):
        replace_section(text + "<!-- a:end -->", "a", "x")


@pytest.mark.parametrize(
    ("argv", "names"),
    [(["--pairs", "0"], "--pairs and --batch"), (["--batch", "0"], "--pairs and --batch")],
)
def test_cli_rejects_non_positive_sizes_naming_the_flag(argv, names, capsys):
    from benchmarks.pairgen import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and names in capsys.readouterr().err


def test_cli_with_a_checkpoint_creates_its_work_folder(tmp_path):
    # A fresh clone after `make run`: a checkpoint exists, runs/bench does not.
    from benchmarks.pairgen import main

    torch.manual_seed(0)
    ckpt = tmp_path / "1rf.pt"
    save_checkpoint(ckpt, build_model(TINY_MODEL))
    cache = tmp_path / "fresh" / "bench"
    argv = ["--checkpoint", str(ckpt), "--tiny", "--no-compile", "--no-write", "--pairs", "4"]
    res = main([*argv, "--rounds", "1", "--cache-dir", str(cache)])
    assert res.seed.nfe_per_pair > 0 and len(res.screen) == 4
    assert sorted(p.name for p in cache.iterdir()) == ["pairgen.json"]  # stores were temporary
