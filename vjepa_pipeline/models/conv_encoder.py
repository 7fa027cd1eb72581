"""A small convolutional frame encoder with one global latent per frame (pure PyTorch).

The world-model encoder of the embedded planning tasks (``model.encoder_kind: conv``). A ViT's patch
tokens see a small agent only where it is: the distance between two frames' latents is flat once the
agent has moved more than a patch, so a planner that follows it is blind (docs/world_model.md,
"Energy landscapes"). This encoder ends in one vector per frame, computed from the whole frame, as the
encoders of PLDM and EB-JEPA's Two Rooms example do; trained jointly with the action-conditioned predictor
under variance / covariance / temporal-similarity terms (``world_model.train_encoder``), the distance
between its latents follows the distance between the agent's positions.

Layout: ``stages`` blocks of [conv 4x4 stride 2, GroupNorm, GELU] halve the frame each time, one more
[conv 3x3, GroupNorm, GELU] mixes the last map, and a linear layer maps the flattened map to
``embed_dim``. Input as the ViT takes it, (B, C, T, H, W) normalised frames; the T frames of one call
are averaged first (the world model encodes each frame alone, repeated to fill a tubelet, so they are
identical). Output (B, 1, embed_dim): one token, so that everything written for token grids (the
action-conditioned predictor, the planning energy) works unchanged with a 1 x 1 grid.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class ConvEncoder(nn.Module):
    """``img_size`` x ``img_size`` frames -> one ``embed_dim`` latent per call (see the module docstring)."""

    def __init__(self, embed_dim: int = 32, channels: int = 32, stages: int = 3, in_chans: int = 3,
                 img_size: int = 64, tubelet_size: int = 1):
        super().__init__()
        if stages < 1 or img_size % (2 ** stages):
            raise ValueError(f"image size {img_size} must be divisible by 2 ** stages = {2 ** stages}")
        if embed_dim < 1 or channels < 1:
            raise ValueError(f"embed_dim and channels must be >= 1, got {embed_dim} and {channels}")
        self.embed_dim, self.channels, self.stages = embed_dim, channels, stages
        self.img_size, self.tubelet_size, self.in_chans = img_size, tubelet_size, in_chans
        layers: list[nn.Module] = []
        c_in = in_chans
        for _ in range(stages):
            layers += [nn.Conv2d(c_in, channels, 4, 2, 1), nn.GroupNorm(_groups(channels), channels), nn.GELU()]
            c_in = channels
        layers += [nn.Conv2d(channels, channels, 3, 1, 1), nn.GroupNorm(_groups(channels), channels), nn.GELU()]
        self.features = nn.Sequential(*layers)
        side = img_size // (2 ** stages)
        self.head = nn.Linear(channels * side * side, embed_dim)

    #: the token grid the predictor sees: one token per frame
    grid = (1, 1)

    def forward(self, x: torch.Tensor, masks=None) -> torch.Tensor:
        if masks is not None:
            raise ValueError("the conv encoder has one token per frame: masks do not apply")
        if x.ndim == 5:  # (B, C, T, H, W): the frames of one tubelet, identical for the world model
            x = x.mean(dim=2)
        if x.ndim != 4 or x.shape[1] != self.in_chans or tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f"frames must be (B, {self.in_chans}, [T,] {self.img_size}, {self.img_size}), "
                             f"got shape {tuple(x.shape)}")
        return self.head(self.features(x).flatten(1)).unsqueeze(1)
