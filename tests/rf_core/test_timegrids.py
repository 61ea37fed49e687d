"""Time grids for fixed-step solvers: shape, ends, monotonicity, where they are dense, errors."""

import pytest
import torch

from rf_core.timegrids import GRIDS, time_grid


@pytest.mark.parametrize("kind", GRIDS)
@pytest.mark.parametrize("steps", [1, 2, 7])
def test_grid_is_increasing_from_t0_to_t1(kind, steps):
    g = time_grid(kind, steps, t0=0.1, t1=0.9)
    assert g.shape == (steps + 1,) and g.dtype == torch.float64
    assert g[0] == 0.1 and g[-1] == 0.9
    assert bool((g[1:] > g[:-1]).all())


def test_uniform_is_linspace_and_rho_one_is_uniform():
    u = time_grid("uniform", 8)
    assert torch.allclose(u, torch.linspace(0, 1, 9, dtype=torch.float64))
    for kind in ("end", "start", "ends"):
        assert torch.allclose(time_grid(kind, 8, rho=1.0), u)


def test_where_the_grids_are_dense():
    d = {k: time_grid(k, 8, rho=2.0).diff() for k in GRIDS}
    assert d["end"][-1] < d["end"][0]  # small steps near t = 1
    assert d["start"][0] < d["start"][-1]  # small steps near t = 0
    for kind in ("cosine", "ends"):  # symmetric, small at both ends, large in the middle
        assert torch.allclose(d[kind], d[kind].flip(0))
        assert d[kind][0] < d[kind][3]


def test_a_grid_dense_where_the_field_changes_fast_lowers_euler_error():
    # dx/dt = 11 t^10 has x(1) - x(0) = 1 and changes fastest near t = 1; Euler's left sums
    # are more accurate on a grid that is dense there (about 0.54x the error, first order).
    def euler_error(grid):
        return abs(float((11 * grid[:-1] ** 10 * grid.diff()).sum()) - 1.0)

    uniform = euler_error(time_grid("uniform", 32))
    assert euler_error(time_grid("end", 32, rho=2.0)) < 0.7 * uniform
    assert euler_error(time_grid("start", 32, rho=2.0)) > uniform  # dense at the wrong end


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "karras"}, "kind='karras' is unknown; allowed: uniform"),
        ({"steps": 0}, "steps must be an int >= 1"),
        ({"steps": 2.0}, "steps must be an int >= 1"),
        ({"steps": True}, "steps must be an int >= 1"),
        ({"rho": 0.0}, "rho must be > 0"),
        ({"t0": 0.5, "t1": 0.5}, "need t0 < t1"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        time_grid(**kwargs)
