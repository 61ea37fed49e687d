"""The run's one picture: models × step counts, same noise and labels in every cell."""

from __future__ import annotations

import matplotlib.image as mpimg
import torch

from tasks.plots import plot_sample_figure


def test_sample_figure_has_a_cell_per_model_and_step_count(tmp_path):
    g = torch.Generator().manual_seed(0)
    samples = {
        (m, "euler", k): torch.rand(30, 1, 28, 28, generator=g) * 2 - 1
        for m in ("1rf", "2rf", "2rf-distill")
        for k in (1, 2, 4, 8)
    }
    samples[("1rf", "dopri5", None)] = torch.zeros(30, 1, 28, 28)  # adaptive: not a column
    path = plot_sample_figure(samples, tmp_path / "sub" / "fig.png")
    img = mpimg.imread(path)
    h, w = img.shape[:2]
    four = plot_sample_figure(
        {k: v for k, v in samples.items() if k[0] == "1rf"}, tmp_path / "1.png"
    )
    h1, w1 = mpimg.imread(four).shape[:2]
    assert w == w1 and h > 2.5 * h1  # same four columns; three model rows instead of one
    assert w > 3 * h1  # four wide cells side by side
