"""Smoke run of the pair-generation benchmark on a tiny untrained U-Net (no timing asserts)."""

from dataclasses import fields

import pytest
import torch

from benchmarks.common import markdown_table, replace_section
from benchmarks.pairgen import render, run
from benchmarks.pairgen_arms import PairRow, make_store
from benchmarks.pairgen_base import TINY_MODEL, efficiency, seed_recipe
from rf_core.models import build_model
from rf_core.solver_spec import SolverSpec
from rf_core.solvers import solve_ode
from rf_core.training import save_checkpoint


def test_efficiency_is_forward_time_share():
    # 2 pairs/s at 10 NFE = 20 forwards/s out of 40 possible
    assert efficiency(2.0, 10, 40.0) == pytest.approx(0.5)


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


@pytest.mark.slow  # compiles the tiny U-Net twice (tens of seconds on 2 cores)
def test_tiny_run_reports_every_field(tmp_path):
    torch.manual_seed(0)
    model = build_model(TINY_MODEL).eval()
    res = run(model, TINY_MODEL, 16, 8, 4, 1, workdir=tmp_path, log=lambda *_: None,
              sweep=(1e-1, 1e-3))  # fmt: skip
    assert res.tolerance == res.seed.probe_error > 0  # auto at the seed's own error
    for row in (res.seed, res.auto, res.compiled):
        assert row.pairs_per_s > 0 and row.efficiency > 0 and row.held_out_error >= 0
    assert res.auto.path == "zarr (generate_chunks)" and res.auto.setting.startswith("auto → ")
    chosen = [r for r in res.screen if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["nfe"] == res.auto.nfe_per_pair  # counted in the store
    assert chosen[0]["bound"] <= res.tolerance
    # Compiled: its own screen (the compiled model) and generation graph, the same NFE.
    assert res.compiled.setting.endswith(" + compile") and res.generation_compile_s > 0
    assert [c.arm for c in res.costs] == ["auto", "compiled"] and res.costs[1].compile_s > 0
    assert all(c.screen_s > 0 and c.evaluations > 0 for c in res.costs)
    assert len(res.payoff) == 2 and all("sample evaluations" in line for line in res.payoff)
    # The sweep, tightest last: never fewer NFE; the seed's tolerance screened twice, the same.
    assert [r.tolerance for r in res.sweep] == sorted({1e-1, 1e-3, res.tolerance}, reverse=True)
    nfes = [r.nfe for r in res.sweep]
    assert nfes == sorted(nfes) and res.deterministic is True
    md = render(res, "cmd", "note")
    header = "| " + " | ".join(f.name for f in fields(PairRow)) + " |"
    assert header in md and "Levers" in md and "cmd" in md and "Tolerance sweep" in md
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
    "argv",
    [["--pairs", "0"], ["--batch", "0"], ["--pairs", "8", "--probe", "8"], ["--probe", "0"]],
)
def test_cli_rejects_sizes_that_leave_no_held_out_pairs(argv, capsys):
    from benchmarks.pairgen import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "need 1 <= --probe <= --batch" in capsys.readouterr().err


def test_cli_with_a_checkpoint_creates_its_work_folder(tmp_path):
    # A fresh clone after `make run`: a checkpoint exists, runs/bench does not.
    from benchmarks.pairgen import main

    torch.manual_seed(0)
    ckpt = tmp_path / "1rf.pt"
    save_checkpoint(ckpt, build_model(TINY_MODEL))
    cache = tmp_path / "fresh" / "bench"
    argv = ["--checkpoint", str(ckpt), "--tiny", "--no-compile", "--no-write", "--pairs", "4"]
    res = main([*argv, "--rounds", "1", "--cache-dir", str(cache)])
    assert res.seed.nfe_per_pair > 0 and sum(r["chosen"] for r in res.screen) == 1
    assert sorted(p.name for p in cache.iterdir()) == ["pairgen.json"]  # stores were temporary
