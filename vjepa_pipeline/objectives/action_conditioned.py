"""The V-JEPA 2-AC objective: train an action-conditioned predictor on a frozen encoder (pure PyTorch).

The math is the official one (facebookresearch/vjepa2 ``app/vjepa_droid/train.py``, ``train_step``):

- targets (``forward_target``): every video frame is encoded on its own, repeated along time to fill
  one tubelet (``c.permute(0, 2, 1, 3, 4).flatten(0, 1).unsqueeze(2).repeat(1, 1, 2, 1, 1)``, 2 = the
  tubelet size), by the frozen encoder under ``no_grad``; the tokens are viewed back as (B, T, N, D)
  and, with ``normalize_reps`` (official: true), layer-normed over D without affine parameters;
- teacher forcing: one predictor call on the real latents of frames 0..T-2 with actions 0..T-2 and
  states / extrinsics 0..T-2; output frame t predicts frame t+1 (the predictor is block-causal);
- auto-regressive rollout over ``auto_steps`` (official config: 2): start from [real frame 0, the
  teacher-forced prediction of frame 1]; for n = 1 .. auto_steps-1 call the predictor on those n+1
  frames with actions / states / extrinsics 0..n (real states: they are not predicted) and append the
  prediction of the last frame; the rollout predicts frames 1..auto_steps;
- every predictor output is layer-normed again (``normalize_reps``) before it is compared or fed back;
- the loss of a prediction z against the real latents h of the frames it predicts is
  ``mean(|z - h| ** loss_exp) / loss_exp`` (official ``loss_exp`` 1.0: L1), and the total is
  ``jloss + sloss`` (teacher forcing + rollout), gradients flowing through the fed-back predictions.

:func:`encode_frames`, :func:`ac_losses` and :func:`rollout` work without any trainer;
:class:`ActionConditionedObjective` wraps them in the :class:`~.base.Objective` interface.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.batch import TrajectoryBatch
from ..models.build import build_ac_predictor, build_encoder
from ..models.inputs import normalize_clips
from ..utils.seeds import mix_seed
from .base import Objective, StepOutput
from .regularizers import RegularizerWeights, regularization

# Seeds the SIGReg directions of an encoder trained with the predictor (with train.seed and the data step).
AC_SIGREG_STREAM = 0x5168

#: state_update(state (B, 1, S), action (B, 1, A)) -> next state (B, 1, S)
StateUpdate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def layer_norm_reps(x: torch.Tensor) -> torch.Tensor:
    """The official ``normalize_reps``: LayerNorm over the feature dim, no affine parameters."""
    return F.layer_norm(x, (x.shape[-1],))


def encoder_input(frames: torch.Tensor) -> torch.Tensor:
    """Trajectory frames as the encoder takes them: uint8 (B, T, H, W, C) from the loader become
    normalised float (B, T, C, H, W); float frames are returned as they are."""
    if frames.dtype == torch.uint8:
        return normalize_clips(frames).transpose(1, 2)
    return frames


def encode_frames(encoder: nn.Module, frames: torch.Tensor, tubelet_size: int | None = None,
                  normalize_reps: bool = True, grad: bool = False) -> torch.Tensor:
    """Per-frame latents of a trajectory, as the official ``forward_target`` computes them.

    ``frames`` float (B, T, C, H, W), normalised encoder input. Each frame is encoded alone, repeated
    ``tubelet_size`` times along time (default: ``encoder.tubelet_size``) so that it fills exactly one
    tubelet; returns (B, T, N, D) tokens, layer-normed over D when ``normalize_reps``. No gradient unless
    ``grad`` (an encoder trained with the predictor, ``world_model.train_encoder``).
    """
    if frames.ndim != 5:
        raise ValueError(f"frames must be (B, T, C, H, W), got shape {tuple(frames.shape)}")
    if not frames.is_floating_point():
        raise ValueError(f"frames must be float (normalised encoder input), got {frames.dtype}")
    tubelet = int(tubelet_size if tubelet_size is not None else getattr(encoder, "tubelet_size", 1))
    b, t = frames.shape[:2]
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        x = frames.flatten(0, 1).unsqueeze(2).repeat(1, 1, tubelet, 1, 1)  # (B*T, C, tubelet, H, W)
        h = encoder(x)  # (B*T, N, D)
        h = h.view(b, t, -1, h.shape[-1])
        return layer_norm_reps(h) if normalize_reps else h


def latent_loss(pred: torch.Tensor, target: torch.Tensor, loss_exp: float = 1.0) -> torch.Tensor:
    """The official ``loss_fn``: ``mean(|pred - target| ** loss_exp) / loss_exp``."""
    return torch.mean(torch.abs(pred - target) ** loss_exp) / loss_exp


def _check_trajectory(z: torch.Tensor, actions: torch.Tensor, states: torch.Tensor,
                      extrinsics: torch.Tensor | None) -> int:
    if z.ndim != 4:
        raise ValueError(f"latents must be (B, T, N, D) (see encode_frames), got shape {tuple(z.shape)}")
    b, t = z.shape[:2]
    if actions.ndim != 3 or actions.shape[0] != b or actions.shape[1] not in (t - 1, t):
        raise ValueError(f"actions must be (B={b}, T-1={t - 1} or T={t}, A), got {tuple(actions.shape)}")
    if states.ndim != 3 or tuple(states.shape[:2]) != (b, t):
        raise ValueError(f"states must be (B={b}, T={t}, S), got {tuple(states.shape)}")
    if extrinsics is not None and (extrinsics.ndim != 3 or tuple(extrinsics.shape[:2]) != (b, t)):
        raise ValueError(f"extrinsics must be (B={b}, T={t}, E), got {tuple(extrinsics.shape)}")
    return t


def _predict(predictor: nn.Module, z: torch.Tensor, actions: torch.Tensor, states: torch.Tensor,
             extrinsics: torch.Tensor | None, normalize_reps: bool) -> torch.Tensor:
    """The official ``_step_predictor``: one predictor call, output layer-normed."""
    out = predictor(z, actions, states, extrinsics) if extrinsics is not None else predictor(z, actions, states)
    return layer_norm_reps(out) if normalize_reps else out


def rollout(predictor: nn.Module, z0: torch.Tensor, actions: torch.Tensor, states: torch.Tensor,
            steps: int, extrinsics: torch.Tensor | None = None, normalize_reps: bool = True,
            first: torch.Tensor | None = None, state_update: StateUpdate | None = None) -> torch.Tensor:
    """Auto-regressive prediction of frames 1..``steps`` from the real latents of frame 0.

    ``z0`` (B, 1, N, D) or (B, N, D); ``actions`` (B, >= steps, A): action n leads from frame n to
    n+1; ``states`` / ``extrinsics`` (B, >= steps, .) per frame. Step n feeds frames 0..n (real frame 0,
    then the predictions) with actions / states / extrinsics 0..n and keeps the last output frame, as
    the official rollout does. ``first``: an already computed prediction of frame 1 (the official
    rollout reuses the teacher-forced one; identical values, by block causality). ``state_update``:
    if given, states of frames >= 1 are integrated from ``states[:, :1]`` and the actions (the
    official planning wrapper's ``compute_new_pose``) instead of read from ``states`` (the official
    training rollout). Returns (B, steps, N, D).
    """
    if z0.ndim == 3:
        z0 = z0.unsqueeze(1)
    if steps < 1 or actions.shape[1] < steps or states.shape[1] < (1 if state_update else steps):
        raise ValueError(f"a {steps}-step rollout needs >= {steps} actions and states, got "
                         f"{actions.shape[1]} and {states.shape[1]}")
    a = actions[:, :steps]
    if state_update is not None:
        s = [states[:, :1]]
        for n in range(1, steps):
            s.append(state_update(s[-1], a[:, n - 1:n]).to(states.dtype))
        s = torch.cat(s, dim=1)
    else:
        s = states[:, :steps]
    e = None if extrinsics is None else extrinsics[:, :steps]
    if first is None:
        first = _predict(predictor, z0, a[:, :1], s[:, :1], None if e is None else e[:, :1], normalize_reps)
    seq = [z0, first]
    for n in range(1, steps):
        nxt = _predict(predictor, torch.cat(seq, dim=1), a[:, :n + 1], s[:, :n + 1],
                       None if e is None else e[:, :n + 1], normalize_reps)[:, -1:]
        seq.append(nxt)
    return torch.cat(seq[1:], dim=1)


def ac_losses(predictor: nn.Module, z: torch.Tensor, actions: torch.Tensor, states: torch.Tensor,
              extrinsics: torch.Tensor | None = None, rollout_steps: int = 2, loss_exp: float = 1.0,
              normalize_reps: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher-forcing loss, rollout loss) of the official V-JEPA 2-AC ``train_step``.

    ``z`` (B, T, N, D): real latents of T >= 2 frames (:func:`encode_frames`); ``actions`` (B, T-1, A)
    or (B, T, A) (the last one unused); ``states`` (B, T, S); ``extrinsics`` (B, T, E) or None.
    ``rollout_steps`` is the official ``auto_steps`` (1 <= rollout_steps <= T-1); ``loss_exp`` and
    ``normalize_reps`` are the official loss settings (1.0: L1; True).
    """
    t = _check_trajectory(z, actions, states, extrinsics)
    if t < 2:
        raise ValueError("the action-conditioned losses need trajectories of at least 2 frames")
    if not 1 <= rollout_steps <= t - 1:
        raise ValueError(f"rollout_steps must be in [1, T-1={t - 1}], got {rollout_steps}")
    a, s = actions[:, :t - 1], states[:, :t - 1]
    e = None if extrinsics is None else extrinsics[:, :t - 1]
    z_tf = _predict(predictor, z[:, :-1], a, s, e, normalize_reps)  # (B, T-1, N, D): frames 1..T-1
    teacher_forcing = latent_loss(z_tf, z[:, 1:], loss_exp)
    z_ar = rollout(predictor, z[:, :1], a, s, rollout_steps, e, normalize_reps, first=z_tf[:, :1])
    rollout_loss = latent_loss(z_ar, z[:, 1:rollout_steps + 1], loss_exp)
    return teacher_forcing, rollout_loss


class InverseDynamics(nn.Module):
    """An MLP that recovers the action taken between two frames from their latents (mean over tokens):
    ``(z_t, z_t+1)`` -> ``a_t``. Its loss keeps the action-relevant content in an encoder trained with the
    predictor (Pathak et al. 2017; PLDM)."""

    def __init__(self, latent_dim: int, action_dim: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * latent_dim, hidden), nn.GELU(), nn.Linear(hidden, action_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, T, N, D) -> predicted actions (B, T-1, A)."""
        pooled = z.mean(dim=2)
        return self.net(torch.cat([pooled[:, :-1], pooled[:, 1:]], dim=-1))


def temporal_similarity(z: torch.Tensor) -> torch.Tensor:
    """Squared L2 distance between consecutive frames' latents (summed over tokens and features), averaged
    over the pairs: small when the latents move smoothly along a trajectory (EB-JEPA's time similarity)."""
    return (z[:, 1:] - z[:, :-1]).square().flatten(2).sum(-1).mean()


def inverse_dynamics_loss(predicted: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Squared error of the recovered actions (summed over action dims, averaged over steps), each action
    dim scaled by its standard deviation in the batch so that the weight does not depend on the units."""
    scale = actions.detach().flatten(0, 1).std(dim=0).clamp_min(1e-6)
    return ((predicted - actions) / scale).square().sum(-1).mean()


class ActionConditionedObjective(Objective):
    """V-JEPA 2-AC training: ``predictor`` trains; ``encoder`` is frozen (no EMA, no gradient, kept in eval
    mode) unless ``train_encoder``. ``step`` takes a :class:`~vjepa_pipeline.data.batch.TrajectoryBatch`
    (not a ``ClipBatch``) on the networks' device and returns ``tf_weight * loss_teacher_forcing +
    rollout_weight * loss_rollout`` (official: 1 and 1), both terms logged separately.

    With ``train_encoder`` (PLDM / EB-JEPA's recipe for planning; not the official one) the encoder is
    trained by the same losses, its latents are the targets (no stop-gradient, no EMA), and collapse is
    held off by ``regularizers`` (VICReg variance / covariance or SIGReg on each frame's flattened latents,
    :mod:`.regularizers`), ``temporal_weight`` x :func:`temporal_similarity` and
    ``inverse_dynamics_weight`` x :func:`inverse_dynamics_loss` (an :class:`InverseDynamics` head, trained
    too). Each term is logged.

    Built from modules, or from the config by :meth:`from_config` (``objective.kind:
    action_conditioned``; sizes from ``model.predictor``, losses from ``world_model``).
    """

    kind = "action_conditioned"

    def __init__(self, encoder: nn.Module, predictor: nn.Module, rollout_steps: int = 2, loss_exp: float = 1.0,
                 normalize_reps: bool = True, tf_weight: float = 1.0, rollout_weight: float = 1.0,
                 tubelet_size: int | None = None, cfg=None, train_encoder: bool = False,
                 regularizers: RegularizerWeights | None = None, temporal_weight: float = 0.0,
                 inverse_dynamics_weight: float = 0.0, seed: int = 0):
        super().__init__(cfg)
        self.train_encoder = bool(train_encoder)
        self.encoder = encoder if self.train_encoder else encoder.eval().requires_grad_(False)
        self.predictor = predictor
        self.rollout_steps, self.loss_exp, self.normalize_reps = rollout_steps, loss_exp, normalize_reps
        self.tf_weight, self.rollout_weight = tf_weight, rollout_weight
        self.tubelet_size = tubelet_size
        self.regularizers = regularizers or RegularizerWeights()
        self.temporal_weight, self.inverse_dynamics_weight = float(temporal_weight), float(inverse_dynamics_weight)
        shaping = self.regularizers.active or self.temporal_weight > 0 or self.inverse_dynamics_weight > 0
        if shaping and not self.train_encoder:
            raise ValueError("regularisers, temporal_weight and inverse_dynamics_weight shape the encoder: they "
                             "need train_encoder=True")
        self.inverse_dynamics: InverseDynamics | None = None
        if self.inverse_dynamics_weight > 0:
            self.inverse_dynamics = InverseDynamics(int(getattr(encoder, "embed_dim")),
                                                    int(getattr(predictor, "action_dim")))
        self.seed = int(seed)
        self._calls = 0

    @classmethod
    def from_config(cls, cfg, encoder: nn.Module | None = None) -> ActionConditionedObjective:
        """The objective of ``cfg``: ``encoder`` (None: a random encoder from ``model.*``, for smoke runs, tests
        and ``world_model.train_encoder``), a fresh predictor seeded by ``train.seed``."""
        torch.manual_seed(cfg.train.seed)
        if encoder is None:
            encoder = build_encoder(cfg.model, cfg.model.tubelet_size, cfg.data.crop_size)
        torch.manual_seed(cfg.train.seed + 1)
        predictor = build_ac_predictor(cfg, embed_dim=getattr(encoder, "embed_dim", None))
        wm, ob = cfg.world_model, cfg.objective
        torch.manual_seed(cfg.train.seed + 2)
        return cls(encoder, predictor, rollout_steps=wm.rollout_steps, loss_exp=wm.loss_exp,
                   normalize_reps=wm.normalize_reps, tf_weight=wm.teacher_forcing_weight,
                   rollout_weight=wm.rollout_weight, cfg=cfg, train_encoder=wm.train_encoder,
                   regularizers=RegularizerWeights(ob.sigreg_weight, ob.vicreg_variance_weight,
                                                   ob.vicreg_covariance_weight, ob.sigreg_slices),
                   temporal_weight=wm.temporal_weight, inverse_dynamics_weight=wm.inverse_dynamics_weight,
                   seed=cfg.train.seed)

    def trainable_networks(self) -> dict[str, nn.Module]:
        nets: dict[str, nn.Module] = {"encoder": self.encoder} if self.train_encoder else {}
        nets["predictor"] = self.predictor
        if self.inverse_dynamics is not None:
            nets["inverse_dynamics"] = self.inverse_dynamics
        return nets

    def frozen_networks(self) -> dict[str, nn.Module]:
        return {} if self.train_encoder else {"encoder": self.encoder}

    def replace_network(self, name: str, module: nn.Module) -> None:
        super().replace_network(name, module)
        setattr(self, name, module)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        if not self.train_encoder:
            self.encoder.eval()  # a trainer's .train() must not switch on drop-path in the frozen encoder
        return encode_frames(self.encoder, frames, self.tubelet_size, self.normalize_reps, grad=self.train_encoder)

    def step(self, batch: TrajectoryBatch) -> StepOutput:  # type: ignore[override]
        z = self.encode(encoder_input(batch.frames))
        tf, ro = ac_losses(self.predictor, z, batch.actions, batch.states, batch.extrinsics,
                           self.rollout_steps, self.loss_exp, self.normalize_reps)
        loss = self.tf_weight * tf + self.rollout_weight * ro
        terms = {"loss_teacher_forcing": float(tf.detach()), "loss_rollout": float(ro.detach())}
        if self.train_encoder:
            loss = loss + self._shaping(z, batch, terms)
        b, t, n = z.shape[:3]
        return StepOutput(loss=loss, terms=terms, tokens=b * t * n,
                          features=z.detach().flatten(0, 1) if self.train_encoder else None)

    def _shaping(self, z: torch.Tensor, batch: TrajectoryBatch, terms: dict[str, float]) -> torch.Tensor:
        """The collapse regularisers on every frame's flattened latents, time similarity and inverse dynamics."""
        total = z.new_zeros((), dtype=torch.float32)
        if self.regularizers.active:
            step = batch.stream.step if batch.stream is not None else self._calls
            reg, reg_terms = regularization([z.flatten(2).flatten(0, 1)], self.regularizers,
                                            seed=mix_seed(self.seed, AC_SIGREG_STREAM, step))
            total = total + reg
            terms.update(reg_terms)
        self._calls += 1
        if self.temporal_weight > 0:
            sim = temporal_similarity(z)
            total = total + self.temporal_weight * sim
            terms["loss_temporal"] = float(sim.detach())
        if self.inverse_dynamics is not None:
            t = z.shape[1]
            idm = inverse_dynamics_loss(self.inverse_dynamics(z), batch.actions[:, :t - 1].to(z.dtype))
            total = total + self.inverse_dynamics_weight * idm
            terms["loss_inverse_dynamics"] = float(idm.detach())
        return total
