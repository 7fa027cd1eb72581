"""Generated clips for smoke runs and tests: textured objects moving over textured backgrounds.

Deterministic in (seed, index). Motion is the only thing linking frames, so predicting masked
space-time regions needs the model to track it. (The labelled, motion-defined demo dataset
written to real video files is a separate, larger generator.)
"""

from __future__ import annotations

import torch

from .batch import ClipBatch, StreamPosition

def _texture(g: torch.Generator, size: int, channels: int = 3) -> torch.Tensor:
    """Smooth random texture in [0, 1]: low-resolution noise upsampled, plus a colour tint."""
    low = torch.rand(1, channels, 4, 4, generator=g)
    tex = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[0]
    return (0.6 * tex + 0.4 * torch.rand(channels, 1, 1, generator=g)).clamp(0, 1)


def moving_objects_clip(seed: int, num_frames: int = 16, size: int = 64, num_objects: int = 2) -> torch.Tensor:
    """One uint8 clip (T, H, W, C) with ``num_objects`` squares/discs moving at constant velocity
    and bouncing off the borders."""
    g = torch.Generator().manual_seed(seed)
    frames = _texture(g, size).unsqueeze(0).repeat(num_frames, 1, 1, 1) * 0.5
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for _ in range(num_objects):
        radius = size * (0.08 + 0.12 * torch.rand(1, generator=g).item())
        pos = torch.rand(2, generator=g) * (size - 2 * radius) + radius
        vel = (torch.rand(2, generator=g) - 0.5) * size * 0.12
        colour = torch.rand(3, 1, 1, generator=g)
        square = torch.rand(1, generator=g).item() < 0.5
        for t in range(num_frames):
            cy, cx = pos.tolist()
            if square:
                inside = ((yy - cy).abs() < radius) & ((xx - cx).abs() < radius)
            else:
                inside = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
            frames[t] = torch.where(inside, colour, frames[t])
            pos = pos + vel
            for axis in range(2):  # bounce
                if not radius <= pos[axis] <= size - radius:
                    vel[axis] = -vel[axis]
                    pos[axis] = pos[axis].clamp(radius, size - radius)
    return (frames.permute(0, 2, 3, 1) * 255).round().to(torch.uint8)


class SyntheticClips:
    """An endless, indexable source of generated clips: batch ``i`` is a pure function of
    (seed, i), so a resumed run sees the same data."""

    def __init__(self, num_frames: int, size: int, seed: int = 0, pool: int = 256):
        self.num_frames, self.size, self.seed, self.pool = num_frames, size, seed, pool
        self._cache: dict[int, torch.Tensor] = {}

    def clip(self, index: int) -> torch.Tensor:
        key = index % self.pool  # a finite pool, like a small dataset seen for several epochs
        if key not in self._cache:
            self._cache[key] = moving_objects_clip(self.seed * 1_000_003 + key, self.num_frames, self.size)
        return self._cache[key]

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        """uint8 (B, T, H, W, C) for optimizer step ``step``."""
        g = torch.Generator().manual_seed(self.seed * 7919 + step)
        idx = torch.randint(0, self.pool, (batch_size,), generator=g).tolist()
        return torch.stack([self.clip(i) for i in idx])


def synthetic_batch(clips: SyntheticClips, step: int, batch_size: int, epoch: int = 0) -> ClipBatch:
    """Generated batch ``step`` with the bookkeeping of a real stream (one role, nothing fails)."""
    x = clips.batch(step, batch_size)
    return ClipBatch(x, torch.full((x.shape[0],), -1, dtype=torch.long),
                     [f"synthetic-{step}-{i}" for i in range(x.shape[0])],
                     StreamPosition(step, role=0, epoch=epoch, consumed=step + 1, attempts=step + 1))
