"""The planning energy: how far the latents predicted after a candidate action sequence are from the goal
image's latents (lower is better).

V-JEPA 2-AC (official ``notebooks/utils/mpc_utils.py``: ``l1`` applied to ``frame_traj[:, -1]`` and the
goal, both flattened) uses the mean absolute difference over all tokens and features of the *last*
predicted frame. ``distance="l2"`` uses the mean squared difference instead (DINO-WM's MSE);
``intermediate=True`` sums the per-frame distance over all H predicted frames, rewarding sequences that
get close early (not in the official planner).
"""

from __future__ import annotations

import torch

DISTANCES = ("l1", "l2")


def goal_energy(pred: torch.Tensor, goal: torch.Tensor, distance: str = "l1",
                intermediate: bool = False) -> torch.Tensor:
    """Energy (B,) of predicted latents ``pred`` (B, H, N, D) against ``goal`` (N, D), (1, N, D) or
    (B, N, D)."""
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {list(DISTANCES)}, got {distance!r}")
    if pred.ndim != 4:
        raise ValueError(f"predicted latents must be (B, H, N, D), got shape {tuple(pred.shape)}")
    if goal.ndim == 2:
        goal = goal.unsqueeze(0)
    if (goal.ndim != 3 or tuple(goal.shape[1:]) != tuple(pred.shape[2:])
            or goal.shape[0] not in (1, pred.shape[0])):
        raise ValueError(f"goal latents {tuple(goal.shape)} do not match the predicted frames "
                         f"{tuple(pred.shape[2:])} (batch {pred.shape[0]})")
    frames = pred if intermediate else pred[:, -1:]
    diff = frames - goal.to(pred.device, pred.dtype).unsqueeze(1)  # (B, H or 1, N, D)
    per_frame = (diff.abs() if distance == "l1" else diff.square()).flatten(2).mean(-1)  # (B, H or 1)
    return per_frame.sum(1)


def check_energies(energies: torch.Tensor, where: str = "planning") -> None:
    """Refuse NaN energies in one line: a NaN from the world model makes the ranking of candidates
    meaningless (``topk`` / ``softmax`` would silently pick garbage)."""
    bad = torch.isnan(energies)
    if bool(bad.any()):
        raise ValueError(f"{where}: the world model gave NaN energies for {int(bad.sum())} of "
                         f"{energies.numel()} candidate plans (NaN latents from the encoder or predictor?)")
