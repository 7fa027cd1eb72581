"""A frozen encoder + action-conditioned predictor seen as a latent world model for planning.

:class:`LatentWorldModel` does two things, both without gradients, on the networks' device:

- :meth:`~LatentWorldModel.encode`: camera pixels -> per-frame latents, exactly as training encodes a
  trajectory frame (``data.augment.center_view``: the deterministic view of training's crop, resized to
  ``crop_size``; ImageNet normalisation; the frame repeated to fill one tubelet; layer norm over the
  features when ``normalize_reps``), i.e. ``objectives.action_conditioned.encode_frames``;
- :meth:`~LatentWorldModel.rollout`: latents of the current frame + the current state + a batch of
  action sequences -> the predicted latents after each action, in one batched auto-regressive call
  chain (``objectives.action_conditioned.rollout``) over all sequences.

States of future frames are not observed while planning: they are integrated from the current state
and the planned actions by ``state_update`` (the official planning wrapper does this with
``compute_new_pose``):

- ``"add"``: the first ``min(A, S)`` state dims are incremented by the action (``position +=
  displacement``: the embedded environments' semantics), other dims held;
- ``"hold"``: the state stays the current one;
- ``"droid_pose"``: the official V-JEPA 2-AC ``compute_new_pose`` for 7-D DROID poses (xyz added, the
  Euler-angle delta composed as rotation matrices, gripper added and clipped to [0, 1]), in torch;
- a callable ``state_update(state (B, 1, S), action (B, 1, A)) -> (B, 1, S)`` for any other semantics
  (a user's robot with, e.g., absolute-target actions).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn

from ..data.augment import center_view
from ..objectives.action_conditioned import StateUpdate, encode_frames, encoder_input, layer_norm_reps, rollout

STATE_UPDATES = ("add", "hold", "droid_pose")


def add_state_update(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """``"add"``: the first ``min(A, S)`` state dims move by the action; the rest are held."""
    k = min(state.shape[-1], action.shape[-1])
    out = state.clone()
    out[..., :k] = out[..., :k] + action[..., :k].to(state.dtype)
    return out


def hold_state_update(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """``"hold"``: the state does not change."""
    return state


def _euler_xyz_to_matrix(e: torch.Tensor) -> torch.Tensor:
    """Extrinsic x-y-z Euler angles (scipy's ``from_euler("xyz")``) -> rotation matrices (..., 3, 3):
    R = Rz(c) @ Ry(b) @ Rx(a)."""
    a, b, c = e.unbind(-1)
    ca, sa, cb, sb, cc, sc = a.cos(), a.sin(), b.cos(), b.sin(), c.cos(), c.sin()
    rows = [cb * cc, sa * sb * cc - ca * sc, ca * sb * cc + sa * sc,
            cb * sc, sa * sb * sc + ca * cc, ca * sb * sc - sa * cc,
            -sb, sa * cb, ca * cb]
    return torch.stack(rows, -1).unflatten(-1, (3, 3))


def _matrix_to_euler_xyz(r: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_euler_xyz_to_matrix` (b in [-pi/2, pi/2]; away from gimbal lock it equals
    scipy's ``as_euler("xyz")``)."""
    b = torch.asin((-r[..., 2, 0]).clamp(-1.0, 1.0))
    a = torch.atan2(r[..., 2, 1], r[..., 2, 2])
    c = torch.atan2(r[..., 1, 0], r[..., 0, 0])
    return torch.stack([a, b, c], -1)


def droid_pose_state_update(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """The official ``compute_new_pose`` (notebooks/utils/mpc_utils.py) on (B, 1, 7) poses / actions:
    xyz + dxyz; rotation = R(delta) @ R(theta) back to extrinsic xyz Euler angles; gripper + dgripper
    clipped to [0, 1]. Computed in float64 as the official numpy / scipy code is."""
    if state.shape[-1] != 7 or action.shape[-1] != 7:
        raise ValueError(f"droid_pose needs 7-D states and actions, got {state.shape[-1]} and "
                         f"{action.shape[-1]}")
    s, a = state.double(), action.double()
    rot = _euler_xyz_to_matrix(a[..., 3:6]) @ _euler_xyz_to_matrix(s[..., 3:6])
    out = torch.cat([s[..., :3] + a[..., :3], _matrix_to_euler_xyz(rot),
                     (s[..., 6:] + a[..., 6:]).clamp(0.0, 1.0)], dim=-1)
    return out.to(state.dtype)


def resolve_state_update(state_update: str | StateUpdate) -> StateUpdate:
    if callable(state_update):
        return state_update
    table = {"add": add_state_update, "hold": hold_state_update, "droid_pose": droid_pose_state_update}
    if state_update not in table:
        raise ValueError(f"state_update must be one of {list(STATE_UPDATES)} or a callable, "
                         f"got {state_update!r}")
    return table[state_update]


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


class LatentWorldModel:
    """Frozen ``encoder`` + action-conditioned ``predictor`` (the
    :class:`~vjepa_pipeline.models.ac_predictor.ActionConditionedPredictor` forward signature
    ``predictor(tokens (B, T, N, D), actions (B, T, A), states (B, T, S)) -> (B, T, N, D)``).

    ``crop_size`` / ``crop_ratio``: the view training used (``data.crop_size`` / ``data.crop_ratio``;
    :meth:`from_loaded` reads them from the run's config). ``normalize_reps``: the run's
    ``world_model.normalize_reps`` (official: True). ``state_update``: see the module docstring.
    ``action_dim`` / ``state_dim`` come from the predictor (``None`` when it does not say).
    """

    def __init__(self, encoder: nn.Module, predictor: nn.Module, crop_size: int,
                 crop_ratio: Sequence[float] = (1.0, 1.0), normalize_reps: bool = True,
                 state_update: str | StateUpdate = "add", tubelet_size: int | None = None):
        self.encoder = encoder.eval()
        self.predictor = predictor.eval()
        self.crop_size = int(crop_size)
        self.crop_ratio = (float(crop_ratio[0]), float(crop_ratio[1]))
        self.normalize_reps = bool(normalize_reps)
        self.state_update: StateUpdate = resolve_state_update(state_update)
        self.tubelet_size = tubelet_size
        self.action_dim: int | None = getattr(predictor, "action_dim", None)
        self.state_dim: int | None = getattr(predictor, "state_dim", None)

    #: roll out with the predictor's key / value cache (:meth:`ActionConditionedPredictor.step`) when it has
    #: one: the same predictions, H one-frame passes instead of 1 + 2 + ... + H frames
    use_cache: bool = True

    @classmethod
    def from_loaded(cls, loaded, state_update: str | StateUpdate = "add") -> LatentWorldModel:
        """From :func:`vjepa_pipeline.checkpoint.load_world_model`'s ``LoadedWorldModel`` (anything with
        ``.encoder``, ``.predictor`` and ``.config``): crop and ``normalize_reps`` from the run's config."""
        cfg = loaded.config
        return cls(loaded.encoder, loaded.predictor, crop_size=cfg.data.crop_size,
                   crop_ratio=tuple(cfg.data.crop_ratio), normalize_reps=cfg.world_model.normalize_reps,
                   state_update=state_update)

    @property
    def device(self) -> torch.device:
        return _device_of(self.predictor)

    @torch.no_grad()
    def encode(self, pixels) -> torch.Tensor:
        """uint8 pixels (H, W, 3) or (B, H, W, 3) (numpy or torch) -> latents (B, N, D) on the device."""
        x = torch.as_tensor(np.asarray(pixels) if not isinstance(pixels, torch.Tensor) else pixels)
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"pixels must be (H, W, 3) or (B, H, W, 3), got shape {tuple(x.shape)}")
        if x.dtype != torch.uint8:
            raise ValueError(f"pixels must be uint8, got {x.dtype}")
        views = center_view(x.cpu(), self.crop_size, self.crop_ratio)  # (B, S, S, 3): B frames as T
        frames = encoder_input(views.to(_device_of(self.encoder)).unsqueeze(1))  # (B, 1, 3, S, S) float
        z = encode_frames(self.encoder, frames, self.tubelet_size, self.normalize_reps)  # (B, 1, N, D)
        return z[:, 0].to(self.device)

    @torch.no_grad()
    def rollout(self, z0: torch.Tensor, s0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Predicted latents (B, H, N, D) after each of the H actions of ``actions`` (B, H, A), from the
        current latents ``z0`` (B, N, D) and state ``s0`` (B, S) (B = 1 broadcasts over the sequences)."""
        if actions.ndim != 3 or actions.shape[1] < 1:
            raise ValueError(f"actions must be (B, H >= 1, A), got shape {tuple(actions.shape)}")
        if self.action_dim is not None and actions.shape[-1] != self.action_dim:
            raise ValueError(f"actions have {actions.shape[-1]} dims, the predictor takes {self.action_dim}")
        dev = self.device
        b, h = actions.shape[:2]
        z0 = z0.to(dev)
        if z0.ndim == 2:
            z0 = z0.unsqueeze(0)
        s0 = s0.to(dev, torch.float32).reshape(-1, s0.shape[-1])
        if self.state_dim is not None and s0.shape[-1] != self.state_dim:
            raise ValueError(f"the state has {s0.shape[-1]} dims, the predictor takes {self.state_dim}")
        if self.use_cache and h > 1 and hasattr(self.predictor, "step"):  # one step: nothing to reuse
            return self._cached_rollout(z0, s0, actions.to(dev, torch.float32))
        z0 = z0.expand(b, *z0.shape[1:])
        s0 = s0.expand(b, -1)
        return rollout(self.predictor, z0, actions.to(dev, torch.float32), s0.unsqueeze(1), h,
                       normalize_reps=self.normalize_reps, state_update=self.state_update)


    def _cached_rollout(self, z0: torch.Tensor, s0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """:func:`~vjepa_pipeline.objectives.action_conditioned.rollout` (official semantics: real frame 0,
        then each prediction fed back, states integrated by ``state_update``) one frame at a time through
        the predictor's cache."""
        b, h = actions.shape[:2]
        z = z0.expand(b, *z0.shape[1:]) if z0.shape[0] == 1 else z0
        s = s0.expand(b, -1).unsqueeze(1) if s0.shape[0] == 1 else s0.unsqueeze(1)  # (B, 1, S)
        cache, preds = None, []
        for n in range(h):
            if n:
                s = self.state_update(s, actions[:, n - 1:n]).to(s.dtype)
            out, cache = self.predictor.step(z, actions[:, n], s[:, 0], cache)
            z = layer_norm_reps(out) if self.normalize_reps else out
            preds.append(z)
        return torch.stack(preds, dim=1)
