"""The encoders' input contract: uint8 clips from the loader become normalised float tensors on
the training device (never in loader workers, which ship 4x fewer bytes as uint8)."""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_clips(clips_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, T, H, W, C) -> float (B, C, T, H, W) normalised with ImageNet statistics."""
    x = clips_uint8.permute(0, 4, 1, 2, 3).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1, 1)
    return (x - mean) / std
