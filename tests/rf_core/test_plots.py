"""Pictures: trajectory panels are written; image grids tile and scale exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rf_core.plots import image_grid, plot_trajectories, save_image


def test_trajectory_panels_are_written(tmp_path):
    g = torch.Generator().manual_seed(0)
    traj = torch.cumsum(torch.randn(5, 40, 2, generator=g), dim=0)
    path = plot_trajectories({"1-RF": traj, "2-RF": traj * 0.5}, tmp_path / "a" / "t.png", traj[-1])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="panel 'bad'"):
        plot_trajectories({"bad": torch.zeros(5, 3)}, tmp_path / "x.png")


def test_image_grid_layout_and_scaling(tmp_path):
    x = torch.full((5, 1, 4, 3), -1.0)
    x[1] = 1.0
    x[4] = 0.0
    grid = image_grid(x, nrow=2, pad=1)
    assert grid.dtype == np.uint8 and grid.shape == (3 * 5 + 1, 2 * 4 + 1, 1)
    assert (grid[1:5, 5:8] == 255).all()  # image 1: row 0, column 1
    assert (grid[11:15, 1:4] == 128).all()  # image 4: row 2, column 0 (0 -> 127.5 rounds to 128)
    assert grid[0].max() == 0  # padding stays black
    assert image_grid(torch.zeros(2, 3, 2, 2), nrow=4).shape == (6, 18, 3)
    assert save_image(grid, tmp_path / "g.png").stat().st_size > 0
    with pytest.raises(ValueError, match=r"\(N, 1\|3, H, W\)"):
        image_grid(torch.zeros(2, 2, 4, 4))


@pytest.mark.parametrize("channels", [1, 3])
def test_a_saved_grid_reads_back_pixel_for_pixel(tmp_path, channels):
    from torchvision.io import read_image

    g = torch.Generator().manual_seed(0)
    grid = image_grid(torch.rand(10, channels, 5, 7, generator=g) * 2 - 1, nrow=4)
    back = read_image(str(save_image(grid, tmp_path / "g.png")))  # (C, H, W) uint8
    assert back.shape == (channels, *grid.shape[:2])
    assert np.array_equal(back.permute(1, 2, 0).numpy(), grid)
    with pytest.raises(ValueError, match="uint8"):
        save_image(grid.astype(np.float32), tmp_path / "bad.png")
