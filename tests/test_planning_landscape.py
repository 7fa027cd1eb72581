"""Energy landscapes (planning/landscape.py) and the planning pictures (eval/planning_plots.py), on the
hand-made world model of test_planning (an encoder that reads the blob's position, a predictor that adds
the action), where the right landscape is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from vjepa_pipeline.eval.planning_plots import plot_landscapes, plot_paths
from vjepa_pipeline.planning import LatentWorldModel
from vjepa_pipeline.planning.landscape import action_landscape, guided_fraction, state_landscape

from test_planning import AddPredictor, make_model, render


def draw(x: float, y: float) -> np.ndarray:  # the environments' draw(x, y) signature
    return render((x, y))


class PixelEncoder(nn.Module):
    """Local latents: 4 x 4 tokens, each the mean brightness of its cell (sees the blob only where it is)."""

    tubelet_size = 2

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        img = x[:, 0, 0]  # (B, S, S)
        cells = nn.functional.avg_pool2d(img.unsqueeze(1), img.shape[-1] // 4)  # (B, 1, 4, 4)
        return cells.flatten(1).unsqueeze(-1) + self.anchor  # (B, 16, 1)


def test_action_landscape_points_toward_the_goal():
    model = make_model()
    land = action_landscape(model, render((0.3, 0.5)), [0.3, 0.5], render((0.34, 0.45)), [-0.1, -0.1],
                            [0.1, 0.1], steps=21)
    assert land.energy.shape == (21, 21)
    bx, by = land.argmin()
    assert bx == pytest.approx(0.04, abs=0.011) and by == pytest.approx(-0.05, abs=0.011)
    assert land.marks["lowest energy"] == (bx, by)
    assert land.contrast() > 0.5


def test_action_landscape_holds_other_dims_at_zero_and_checks_dims():
    model = make_model(action_dim=3)
    land = action_landscape(model, render((0.3, 0.5)), [0.3, 0.5], render((0.3, 0.6)), [-0.1] * 3, [0.1] * 3,
                            steps=5, dims=(0, 1))
    seen = torch.cat(model.predictor.seen_actions)
    assert torch.all(seen[..., 2] == 0) and land.energy.shape == (5, 5)
    with pytest.raises(ValueError, match="two different action dimensions"):
        action_landscape(model, render((0.3, 0.5)), [0.3, 0.5], render((0.3, 0.6)), [-0.1] * 3, [0.1] * 3,
                         dims=(1, 1))


def test_one_dimensional_actions_give_one_row():  # AddPredictor adds a 1-D action to both x and y
    model = LatentWorldModel(make_model().encoder, AddPredictor(action_dim=1), crop_size=48, normalize_reps=False)
    land = action_landscape(model, render((0.3, 0.5)), [0.3, 0.5], render((0.36, 0.56)), [-0.1], [0.1], steps=11)
    assert land.energy.shape == (1, 11) and land.argmin()[0] == pytest.approx(0.06, abs=0.011)


def test_state_landscape_global_vs_local_latents():
    goal, grid = (0.7, 0.5), np.linspace(0.05, 0.95, 19)
    smooth = state_landscape(make_model(), draw, goal, grid, grid, start=(0.2, 0.5))
    local = state_landscape(LatentWorldModel(PixelEncoder(), AddPredictor(), crop_size=48, normalize_reps=False),
                            draw, goal, grid, grid)
    # the position-reading encoder: energy = L1 distance to the goal, minimum at the goal, wide basin
    gx, gy = np.meshgrid(grid, grid)
    expected = (np.abs(gx - goal[0]) + np.abs(gy - goal[1])) / 2
    assert np.allclose(smooth.energy, expected, atol=0.02)
    assert smooth.argmin() == pytest.approx(goal, abs=0.03) and "start" in smooth.marks
    # local latents: flat wherever the blob and the goal sit in different cells: often nothing to follow
    assert guided_fraction(smooth) > 0.95 and guided_fraction(local) < 0.5
    with pytest.raises(ValueError, match="goal"):
        guided_fraction(action_landscape(make_model(), render((0.3, 0.5)), [0.3, 0.5], render((0.3, 0.6)),
                                      [-0.1, -0.1], [0.1, 0.1], steps=3))


def test_pictures_are_written(tmp_path):
    model = make_model()
    grid = np.linspace(0.05, 0.95, 7)
    land = state_landscape(model, draw, (0.7, 0.5), grid, grid)
    act = action_landscape(model, render((0.3, 0.5)), [0.3, 0.5], render((0.7, 0.5)), [-0.1, -0.1], [0.1, 0.1],
                           steps=5)
    bg = render((0.3, 0.5))
    p = plot_landscapes(tmp_path / "plots" / "land.png", [act, land], ["actions", "positions"], bg)
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    eps = {"world_model": [{"states": np.array([[0.3, 0.5], [0.5, 0.5]]), "goal": (0.7, 0.5), "success": False}],
           "random": [{"states": np.array([[0.3, 0.5], [0.3, 0.6]]), "goal": (0.7, 0.5), "success": False}]}
    q = plot_paths(tmp_path / "paths.png", bg, eps)
    assert q.stat().st_size > 1000
    with pytest.raises(ValueError, match="no episodes"):
        plot_paths(tmp_path / "x.png", bg, {})
    with pytest.raises(ValueError, match="one title"):
        plot_landscapes(tmp_path / "y.png", [land], [])
