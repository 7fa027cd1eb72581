"""Surprise: how badly a JEPA's own predictor predicts the future of a video (pure PyTorch).

Following Garrido et al. 2025 (facebookresearch/jepa-intuitive-physics): windows of ``window``
frames slide over the video every ``stride`` frames; in each window the context encoder sees the
first ``C`` frames (every spatial token of them), the predictor predicts the tokens of the remaining
frames, and the window's surprise is the mean L1 distance between the prediction and the target
encoder's layer-normed latents of the real frames (over tokens and channels). A video's surprise
curve is one value per window; its scores are the curve's max and mean. Several context lengths
``C`` are scored in one pass (the target encoder runs once per window).

The networks: the context encoder and the target encoder are :class:`~..models.vit.VisionTransformer`
s (``embed`` / ``encode_tokens``), the predictor any module called as V-JEPA's masked predictor,
``predictor(context, ctx_idx, tgt_idx, grid, mask_index=0) -> (B, Nt, D)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError
from ..models.inputs import normalize_clips
from ..models.vit import gather_tokens

SCORES = ("max", "mean")


@dataclass
class SurpriseModel:
    encoder: nn.Module          # context encoder (the online encoder of a run)
    predictor: nn.Module        # masked predictor
    target_encoder: nn.Module   # EMA target (the encoder itself where no target is stored)
    num_frames: int             # the window the model was trained on
    crop_size: int
    source: str = ""
    kind: str = ""              # run | native | random-init | ...
    fingerprint: str = ""
    frame_step: int = 1         # the training frame_step (the default subsampling of videos)

    @property
    def tubelet_size(self) -> int:
        return int(getattr(self.encoder, "tubelet_size", 1))


def default_context_frames(window: int, tubelet: int) -> list[int]:
    """Every context length that leaves frames to predict, in whole tubelets (at most five)."""
    out = list(range(tubelet, window, tubelet))
    return out[:5] if len(out) <= 5 else out[:: max(1, len(out) // 5)][:5]


def window_starts(num_frames: int, window: int, stride: int) -> list[int]:
    """First frame of every window of ``window`` frames, every ``stride`` frames (the last window
    ends at or before the last frame)."""
    if num_frames < window:
        return []
    return list(range(0, num_frames - window + 1, stride))


def future_masks(grid: tuple[int, int, int], context_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(context indices, target indices) of a token grid (T', H', W'), time-major: the first
    ``context_steps`` time steps are context, the rest are predicted."""
    t, h, w = grid
    if not 0 < context_steps < t:
        raise ValueError(f"context of {context_steps} time steps leaves nothing to predict in {t}")
    idx = torch.arange(t * h * w)
    cut = context_steps * h * w
    return idx[:cut], idx[cut:]


@torch.no_grad()
def window_surprise(model: SurpriseModel, clips: torch.Tensor, context_frames: Sequence[int]) -> torch.Tensor:
    """Surprise of a batch of normalised windows (B, C, T, H, W): (len(context_frames), B)."""
    enc, pred, tgt_enc = model.encoder, model.predictor, model.target_encoder
    tubelet = model.tubelet_size
    h = tgt_enc(clips)
    targets = F.layer_norm(h.float(), (h.shape[-1],))
    tokens, grid = enc.embed(clips)
    b = clips.shape[0]
    out = []
    for c in context_frames:
        if c % tubelet:
            raise ValueError(f"context of {c} frames is not a whole number of {tubelet}-frame tubelets")
        ctx, tgt = future_masks(grid, c // tubelet)
        ctx_b, tgt_b = ctx.to(clips.device).expand(b, -1), tgt.to(clips.device).expand(b, -1)
        z = enc.encode_tokens(tokens, grid, ctx_b)
        p = pred(z, ctx_b, tgt_b, grid, mask_index=0)
        out.append((p.float() - gather_tokens(targets, tgt_b)).abs().mean(dim=(1, 2)))
    return torch.stack(out)


@torch.no_grad()
def surprise_curve(model: SurpriseModel, frames: torch.Tensor, window: int, stride: int,
                   context_frames: Sequence[int], batch_size: int = 16, device: str = "cpu") -> torch.Tensor:
    """Surprise over time of one video, uint8 frames (T, S, S, 3) already cropped to the model's size:
    (len(context_frames), windows). Raises ValueError for a video shorter than one window."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got shape {tuple(frames.shape)}")
    starts = window_starts(frames.shape[0], window, stride)
    if not starts:
        raise ValueError(f"{frames.shape[0]} frames are fewer than one window of {window}")
    curves = []
    for i in range(0, len(starts), batch_size):
        batch = torch.stack([frames[s:s + window] for s in starts[i:i + batch_size]]).to(device)
        curves.append(window_surprise(model, normalize_clips(batch), context_frames).cpu())
    return torch.cat(curves, dim=1)


def video_scores(curve: torch.Tensor) -> dict[str, list[float]]:
    """Per-video scores of a curve (contexts, windows): {"max": [per context], "mean": [...]}."""
    return {"max": curve.max(dim=1).values.tolist(), "mean": curve.mean(dim=1).tolist()}


def load_surprise_model(source: str, model_overrides: Sequence[str] = ()) -> SurpriseModel:
    """Context encoder, predictor and target encoder of a run directory, training checkpoint,
    exported / official file or Hugging Face VJEPA2 directory that holds all three (or at least an
    encoder and a predictor: the encoder then serves as its own target, as in HF files). Raises
    CheckpointError (one line) naming what is missing."""
    from pathlib import Path

    from .encoders import load_encoder, load_predictor

    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"--encoder {source} does not exist")
    try:
        pred = load_predictor(source, model_overrides)
    except (CheckpointError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{source}: surprise needs the encoder AND its predictor, and no predictor could "
                              f"be loaded ({str(exc).splitlines()[0]}): give a run directory, a training "
                              "checkpoint or an export / official file with predictor weights") from None
    if pred.predictor.__class__.__name__ != "Predictor":
        raise CheckpointError(f"{source}: its predictor is {pred.predictor.__class__.__name__}; surprise needs "
                              "V-JEPA's masked predictor (model.predictor.kind=masked)")
    context = load_encoder(source, model_overrides, part="encoder")
    target = load_encoder(source, model_overrides, part="target_encoder")
    frame_step = 1
    if path.is_dir() and (path / "config.yaml").is_file():  # a run directory records its sampling
        from ..config import load_config

        frame_step = load_config(path / "config.yaml").data.frame_step
    return SurpriseModel(context.encoder, pred.predictor.eval(), target.encoder, context.num_frames,
                         context.crop_size, str(source), context.kind, target.fingerprint, frame_step)


def random_surprise_model(model_cfg, num_frames: int, crop_size: int, seed: int, frame_step: int = 1) -> SurpriseModel:
    """The same architecture randomly initialised with ``seed`` (the target a copy of the encoder, as
    at step 0 of training): the baseline a pretrained model must beat."""
    import copy

    from ..models.build import build_encoder, build_predictor
    from .encoders import fingerprint

    torch.manual_seed(seed)
    enc = build_encoder(model_cfg, num_frames, crop_size).eval().requires_grad_(False)
    pred = build_predictor(model_cfg, num_frames, crop_size).eval().requires_grad_(False)
    return SurpriseModel(enc, pred, copy.deepcopy(enc), num_frames, crop_size, f"random init (seed {seed})",
                         "random-init", fingerprint(enc), frame_step)


__all__ = ["SCORES", "SurpriseModel", "default_context_frames", "future_masks", "load_surprise_model",
           "random_surprise_model", "surprise_curve", "video_scores", "window_starts", "window_surprise"]
