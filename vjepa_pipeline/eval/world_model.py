"""Offline validation of an action-conditioned world model (V-JEPA 2-AC predictor on a frozen encoder).

The official trainer (``app/vjepa_droid``) logs only its training losses. This measures, on held-out
trajectories, how well the predictor's k-step auto-regressive latent rollout matches the encoder's
latents of the real frames, and compares it with two baselines that a world model must beat:

- ``true_actions``: rollout from the real latents of frame 0 with the trajectory's own actions;
- ``last_frame``: "nothing moves": frame 0's latents as the prediction of frame k;
- ``shuffled_actions``: the same predictor and rollout with the actions of another trajectory of the
  batch (a fixed derangement drawn from a seeded generator: every trajectory gets foreign actions,
  and the same seed gives the same permutations). A predictor that ignores actions scores exactly
  the same here as with the true actions.

Errors are mean absolute differences (the official ``loss_exp`` 1 form, without dividing by the
exponent) over tokens and features of frame k, averaged over trajectories. Pure PyTorch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn as nn

from ..data.batch import TrajectoryBatch
from ..objectives.action_conditioned import StateUpdate, encode_frames, encoder_input, rollout

BASELINES = ("true_actions", "last_frame", "shuffled_actions")


def shuffle_permutation(batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """A random derangement of ``range(batch_size)`` (no index maps to itself) drawn from
    ``generator``: a random cyclic order, each element taking the next one's place."""
    if batch_size < 2:
        raise ValueError("shuffling actions across the batch needs at least 2 trajectories per batch")
    order = torch.randperm(batch_size, generator=generator)
    perm = torch.empty(batch_size, dtype=torch.long)
    perm[order] = order.roll(-1)
    return perm


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def latent_prediction_errors(encoder: nn.Module, predictor: nn.Module, batches: Iterable[TrajectoryBatch],
                             horizons: Sequence[int] = (1, 2), tubelet_size: int | None = None,
                             normalize_reps: bool = True, shuffle_seed: int = 0,
                             state_update: StateUpdate | None = None) -> dict:
    """Mean L1 error of the k-step latent prediction per horizon k, for the true actions and the two
    baselines (see the module docstring).

    Each trajectory is rolled out once from frame 0 for ``max(horizons)`` steps (it needs
    ``max(horizons) + 1`` frames). States: the real ones (as the official training rollout feeds them),
    or integrated from frame 0's state and the fed actions when ``state_update(state, action)`` is given
    (as the official planning wrapper does; then shuffled actions also move the states).

    Returns ``{"true_actions": {k: err}, "last_frame": {k: err}, "shuffled_actions": {k: err},
    "trajectories": n}``. Networks are put in eval mode for the call and restored afterwards.
    """
    horizons = sorted({int(k) for k in horizons})
    if not horizons or horizons[0] < 1:
        raise ValueError(f"horizons must be positive integers, got {horizons}")
    steps = horizons[-1]
    device = _device_of(predictor)
    generator = torch.Generator().manual_seed(shuffle_seed)
    sums = {name: {k: 0.0 for k in horizons} for name in BASELINES}
    count = 0
    modes = (encoder.training, predictor.training)
    encoder.eval()
    predictor.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                if batch.num_frames < steps + 1:
                    raise ValueError(f"horizon {steps} needs trajectories of >= {steps + 1} frames, "
                                     f"got {batch.num_frames}")
                batch = batch.to(device)
                z = encode_frames(encoder, encoder_input(batch.frames), tubelet_size, normalize_reps)  # (B, T, N, D)
                b = z.shape[0]
                perm = shuffle_permutation(b, generator).to(device)
                preds = {
                    "true_actions": rollout(predictor, z[:, :1], batch.actions, batch.states, steps,
                                            batch.extrinsics, normalize_reps, state_update=state_update),
                    "shuffled_actions": rollout(predictor, z[:, :1], batch.actions[perm], batch.states, steps,
                                                batch.extrinsics, normalize_reps, state_update=state_update),
                    "last_frame": z[:, :1].expand(-1, steps, -1, -1),
                }
                for name, pred in preds.items():
                    per_traj = (pred - z[:, 1:steps + 1]).abs().float().mean(dim=(2, 3))  # (B, steps)
                    for k in horizons:
                        sums[name][k] += float(per_traj[:, k - 1].sum())
                count += b
    finally:
        encoder.train(modes[0])
        predictor.train(modes[1])
    if count == 0:
        raise ValueError("no trajectories to evaluate")
    out: dict = {name: {k: v / count for k, v in per.items()} for name, per in sums.items()}
    out["trajectories"] = count
    return out
