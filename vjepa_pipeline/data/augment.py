"""uint8 clip augmentation: crop first, then resize; normalise later, on the training device.

Frames are ``torch.uint8`` tensors ``(T, H, W, C)`` as decoders return them (via
``torch.from_numpy``); outputs stay uint8 ``(..., T, S, S, C)`` and contiguous. Cropping the
uint8 frames before resizing, and resizing with torchvision's native uint8 kernel, took
augmentation from 23-35% to 6-11% of clip time (DESIGN.md section 3); shipping uint8 out of
the workers moves 4x fewer bytes than float32.

All randomness comes from the ``random.Random`` passed in (never global RNG), so the loader
stream is reproducible from (seed, rank, worker, sample index).
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import torch
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "random_resized_crop_params",
    "train_augment",
    "eval_views",
    "resize_short_side",
]

_BILINEAR = TF.InterpolationMode.BILINEAR


def _check_frames(frames: torch.Tensor) -> torch.Tensor:
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a torch.Tensor (T, H, W, C), got {type(frames).__name__}")
    if frames.ndim != 4:
        raise ValueError(f"frames must have shape (T, H, W, C), got {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8, got {frames.dtype}")
    if frames.shape[0] < 1 or frames.shape[1] < 1 or frames.shape[2] < 1:
        raise ValueError(f"frames must be non-empty, got {tuple(frames.shape)}")
    return frames


def _resize_thwc(frames: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize (T, h, w, C) uint8 (any strides, e.g. a crop view) to (T, *size, C), contiguous.

    The (T, C, h, w) permutation of a THWC tensor is channels-last, which is the layout of
    torch's fast uint8 bilinear+antialias CPU kernel; its output is channels-last as well, so
    permuting back gives a contiguous THWC tensor without a further copy.
    """
    out = TF.resize(frames.permute(0, 3, 1, 2), list(size), interpolation=_BILINEAR, antialias=True)
    out = out.permute(0, 2, 3, 1)
    # resize() returns its input unchanged when the size already matches (then `out` may be a
    # view of the caller's frames): always hand back fresh, contiguous memory.
    if not out.is_contiguous():
        out = out.contiguous()
    elif out.data_ptr() == frames.data_ptr():
        out = out.clone()
    return out


def random_resized_crop_params(
    height: int,
    width: int,
    scale: Sequence[float] = (0.3, 1.0),
    ratio: Sequence[float] = (0.75, 1.35),
    rng: random.Random | None = None,
) -> tuple[int, int, int, int]:
    """``(top, left, crop_h, crop_w)`` with torchvision ``RandomResizedCrop`` semantics.

    Up to 10 tries: area uniform in ``scale * height * width``, aspect ratio (w / h)
    log-uniform in ``ratio``; the first crop that fits is placed uniformly at random. Fallback:
    a central crop, the whole frame clamped to the ratio range.
    """
    if rng is None:
        raise TypeError("random_resized_crop_params needs an explicit rng (random.Random)")
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    if not (0 < scale[0] <= scale[1]):
        raise ValueError(f"scale must satisfy 0 < min <= max, got {tuple(scale)}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"ratio must satisfy 0 < min <= max, got {tuple(ratio)}")
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    return central_view(height, width, ratio)


def central_view(height: int, width: int, ratio: Sequence[float]) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of the whole frame with its aspect clamped to ``ratio`` by a central
    crop: torchvision's ``RandomResizedCrop`` fallback."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, max(1, min(height, int(round(width / ratio[0]))))
    elif in_ratio > ratio[1]:
        h, w = height, max(1, min(width, int(round(height * ratio[1]))))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def train_augment(
    frames: torch.Tensor,
    crop_size: int,
    rng: random.Random,
    scale: Sequence[float] = (0.3, 1.0),
    ratio: Sequence[float] = (0.75, 1.35),
    hflip_p: float = 0.5,
) -> torch.Tensor:
    """One random resized crop + optional horizontal flip, identical for every frame.

    ``frames`` (T, H, W, C) uint8 -> (T, crop_size, crop_size, C) uint8, contiguous. The crop is
    a view (no copy of the full frames); only the crop is resized (bilinear, antialias). Draws
    from ``rng``: the crop parameters, then one ``rng.random()`` for the flip (always drawn,
    so the stream does not depend on ``hflip_p``).
    """
    _check_frames(frames)
    _, height, width, _ = frames.shape
    top, left, h, w = random_resized_crop_params(height, width, scale, ratio, rng)
    flip = rng.random() < hflip_p
    out = _resize_thwc(frames[:, top : top + h, left : left + w], (crop_size, crop_size))
    if flip:
        out = out.flip(2)  # flip W of (T, S, S, C); flip() returns a new contiguous tensor
    return out


def center_view(frames: torch.Tensor, crop_size: int, ratio: Sequence[float] = (0.75, 1.35)) -> torch.Tensor:
    """The deterministic view of :func:`train_augment`'s geometry: the whole frame, its aspect clamped to
    ``ratio`` by a central crop (the random resized crop's own fallback), resized to ``crop_size`` x
    ``crop_size``. (T, H, W, C) uint8 -> (T, S, S, C) uint8."""
    _check_frames(frames)
    _, height, width, _ = frames.shape
    top, left, h, w = central_view(height, width, ratio)
    return _resize_thwc(frames[:, top : top + h, left : left + w], (crop_size, crop_size))


def resize_short_side(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (T, H, W, C) uint8 so the short side is ``size`` (aspect kept; the long side is
    ``int(size * long / short)`` as in torchvision), bilinear with antialias. Contiguous."""
    _check_frames(frames)
    _, height, width, _ = frames.shape
    if height <= width:
        new_h, new_w = size, int(size * width / height)
    else:
        new_h, new_w = int(size * height / width), size
    return _resize_thwc(frames, (new_h, new_w))


def eval_views(frames: torch.Tensor, crop_size: int, num_views: int = 3) -> torch.Tensor:
    """Deterministic spatial views: resize the short side to ``crop_size``, then ``num_views``
    crops of ``crop_size x crop_size`` evenly spaced along the long side
    (start_i = (L - S) * i // (num_views - 1): 3 views -> start, centre, end; 1 view ->
    centre, (L - S) // 2). Returns (num_views, T, S, S, C) uint8, contiguous."""
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    resized = resize_short_side(frames, crop_size)
    _, height, width, _ = resized.shape
    along_width = width >= height
    extra = (width if along_width else height) - crop_size
    if num_views == 1:
        starts = [extra // 2]
    else:
        starts = [extra * i // (num_views - 1) for i in range(num_views)]
    if along_width:
        views = [resized[:, :, s : s + crop_size] for s in starts]
    else:
        views = [resized[:, s : s + crop_size] for s in starts]
    return torch.stack(views)
