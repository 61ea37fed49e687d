"""The worker CLI takes the whole solver spec: one flag per field, recorded in the store."""

from __future__ import annotations

import pytest

from rf_core.solver_spec import SolverSpec
from storage.generate_cli import main, parser, solver_from_args
from storage.pairstore import PairStore

BASE = ["s.zarr", "--checkpoint", "c.pt", "--n", "16", "--chunk", "8"]


def spec_of(*flags: str) -> SolverSpec:
    return solver_from_args(parser().parse_args([*BASE, *flags]))


def test_every_spec_field_has_a_flag():
    assert spec_of("--method", "auto", "--tolerance", "1e-3", "--probe", "8") == SolverSpec(
        method="auto", tolerance=1e-3, probe=8
    )
    assert spec_of() == SolverSpec()  # unset flags: the spec's defaults
    flags = ["--method", "rk4", "--steps", "6", "--grid", "ends", "--rho", "1.5", "--compile"]
    assert spec_of(*flags, "--batch-size", "4") == SolverSpec(
        method="rk4", steps=6, grid="ends", rho=1.5, compile=True, batch_size=4
    )
    assert spec_of("--rtol", "1e-4", "--atol", "1e-6") == SolverSpec(rtol=1e-4, atol=1e-6)


def test_the_store_records_the_flags(tmp_path, ckpt, capsys):
    uri = str(tmp_path / "p.zarr")
    flags = ["--method", "rk4", "--steps", "3", "--grid", "ends", "--rho", "1.5", "--finalize"]
    argv = [uri, "--checkpoint", str(ckpt), "--n", "16", "--chunk", "8", *flags]
    assert main(argv) == 0
    store = PairStore.open(uri)
    assert store.is_finalized
    assert store.solver == SolverSpec(method="rk4", steps=3, grid="ends", rho=1.5, batch_size=8)
    # The same flags resume it; another grid is refused, naming both sides.
    assert main(argv) == 0
    other = [a if a != "ends" else "end" for a in argv]
    assert main(other) == 1
    err = capsys.readouterr().err
    assert "cannot resume" in err and "'grid': 'ends'" in err and "'grid': 'end'" in err


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--method", "rk4", "--steps", "3", "--grid", "log"], "solver['grid'] must be one of"),
        (["--method", "rk4"], "fixed-step method 'rk4' needs solver['steps']"),
        (["--method", "dopri5", "--steps", "3"], "takes rtol/atol, not steps"),
        (["--method", "rk4", "--steps", "x"], "solver['steps'] must be a positive int"),
        (["--method", "auto", "--steps", "3"], "method 'auto' chooses steps itself"),
        (["--method", "auto", "--tolerance", "0"], "solver['tolerance'] must be a float with 0"),
        (["--method", "auto", "--tolerance", "1.5"], "solver['tolerance'] must be a float with 0"),
        (["--method", "auto", "--probe", "9"], "solver['probe'] = 9 is larger than the first"),
        (["--method", "rk4", "--steps", "3", "--probe", "4"], "'probe' applies to method 'auto'"),
    ],
)
def test_bad_solver_flags_fail_before_any_write(tmp_path, ckpt, flags, named, capsys):
    uri = tmp_path / "p.zarr"
    argv = [str(uri), "--checkpoint", str(ckpt), "--n", "16", "--chunk", "8", *flags]
    assert main(argv) == 1
    assert named in capsys.readouterr().err
    assert not uri.exists()
