"""Token positions for video ViTs: the V-JEPA 1 fixed 3D sin-cos table and V-JEPA 2 3D RoPE.

Tokens are laid out (t, h, w) row-major over a grid (T, H, W): index = t*H*W + h*W + w.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

Grid = tuple[int, int, int]


# --------------------------------------------------------------------------------------------
# V-JEPA 1: fixed 3D sin-cos table
# --------------------------------------------------------------------------------------------
def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(N,) positions -> (N, dim) embedding: first half sin, second half cos."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64, device="cpu") / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.double()[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_3d_table(embed_dim: int, grid: Grid, uniform_power: bool = True) -> torch.Tensor:
    """The V-JEPA 1 position table, shape (T*H*W, embed_dim), float32.

    Dims are split [time | height | width]. ``uniform_power`` (the V-JEPA recipes) gives each axis
    ceil(D/6)*2 dims and truncates the concatenation to D; otherwise time gets D/2 and height and
    width D/4 each.
    """
    t, h, w = grid
    if uniform_power:
        d_t = d_h = d_w = int(math.ceil(embed_dim / 6) * 2)
    else:
        d_t, d_h, d_w = embed_dim // 2, embed_dim // 4, embed_dim // 4
    # Always built on the CPU (also under a meta-device context): it is data, not a parameter.
    axes = [torch.arange(n, device="cpu") for n in grid]
    tt, hh, ww = torch.meshgrid(*axes, indexing="ij")
    table = torch.cat(
        [_sincos_1d(d_t, tt.flatten()), _sincos_1d(d_h, hh.flatten()), _sincos_1d(d_w, ww.flatten())],
        dim=1,
    )
    if table.shape[1] < embed_dim:
        raise ValueError(f"embed_dim {embed_dim} is too odd for a 3D sin-cos table")
    return table[:, :embed_dim].float()


def resize_table(table: torch.Tensor, src: Grid, dst: Grid) -> torch.Tensor:
    """Trilinearly resample a (T*H*W, D) table from grid ``src`` to grid ``dst`` (as V-JEPA 1 does
    for other clip lengths / resolutions)."""
    if tuple(src) == tuple(dst):
        return table
    dim = table.shape[-1]
    vol = table.reshape(1, *src, dim).permute(0, 4, 1, 2, 3)
    vol = F.interpolate(vol.float(), size=tuple(dst), mode="trilinear", align_corners=False)
    return vol.permute(0, 2, 3, 4, 1).reshape(-1, dim).to(table.dtype)


# --------------------------------------------------------------------------------------------
# V-JEPA 2: 3D rotary embedding
# --------------------------------------------------------------------------------------------
def rope_axis_dim(head_dim: int) -> int:
    """Dims rotated per axis (frame, row, column): the largest even number <= head_dim / 3.
    Leftover dims at the end of each head stay unrotated."""
    return 2 * ((head_dim // 3) // 2)


def split_positions(ids: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat token ids -> (frame, row, column) ids on ``grid``."""
    _, h, w = grid
    frame = ids // (h * w)
    rest = ids - frame * (h * w)
    row = rest // w
    col = rest - row * w
    return frame, row, col


ROPE_LAYOUTS = ("repeat", "interleave")


def rope_positions(ids: torch.Tensor, grid: Grid, rescale_grid: int | None = None) -> list[torch.Tensor]:
    """(frame, row, column) positions of flat token ids as floats.

    ``rescale_grid`` is V-JEPA 2.1's ``interpolate_rope``: rows and columns are stretched onto a
    reference grid of that many patches (``pos * (G - 1) / (n - 1)``; the official code uses
    G = 256 px / patch 16 = 16 at any input size), frames are left alone. A grid of one row or
    column keeps position 0 (the official formula divides by zero there).
    """
    frame, row, col = (p.float() for p in split_positions(ids, grid))
    if rescale_grid is not None:
        _, h, w = grid
        row = row * (rescale_grid - 1) / (h - 1) if h > 1 else row
        col = col * (rescale_grid - 1) / (w - 1) if w > 1 else col
    return [frame, row, col]


class RotaryTables:
    """Cos/sin tables for one forward pass, computed once and shared by all blocks.

    Per axis, frequencies ``f_j = 1 / 10000 ** (j / (d/2))`` for j < d/2, and the rotation pairs
    adjacent dims (x[2k], x[2k+1]). ``layout`` says how the d/2 frequencies are spread over the
    d dims, which pretrained weights depend on:

    - ``repeat`` (official V-JEPA 2, bit for bit): ``[f0..f_{d/2-1}, f0..f_{d/2-1}]``, so the pair
      (x[2k], x[2k+1]) turns by two different frequencies;
    - ``interleave`` (official V-JEPA 2.1, ``repeat_interleave``): ``[f0, f0, f1, f1, ...]``, the
      textbook rotation of each pair by one frequency.

    ``rescale_grid``: V-JEPA 2.1's ``interpolate_rope`` (see ``rope_positions``).
    """

    def __init__(self, ids: torch.Tensor, grid: Grid, head_dim: int, dtype: torch.dtype, layout: str = "repeat",
                 rescale_grid: int | None = None):
        self._build(rope_positions(ids, grid, rescale_grid), head_dim, dtype, layout)

    @classmethod
    def from_positions(cls, positions: Sequence[torch.Tensor], head_dim: int, dtype: torch.dtype,
                       layout: str = "repeat") -> RotaryTables:
        """Tables for explicit per-token (frame, row, column) float positions, each of shape (N,) or
        (B, N), instead of flat ids on a grid (e.g. tokens that are not grid cells, such as the
        action-conditioned predictor's action / state tokens). A position of 0 on an axis leaves
        that axis' dims unrotated, exactly."""
        if len(positions) != 3:
            raise ValueError(f"RoPE needs (frame, row, column) positions, got {len(positions)} axes")
        tables = cls.__new__(cls)
        tables._build([p.float() for p in positions], head_dim, dtype, layout)
        return tables

    def _build(self, positions: Sequence[torch.Tensor], head_dim: int, dtype: torch.dtype, layout: str) -> None:
        if layout not in ROPE_LAYOUTS:
            raise ValueError(f"RoPE layout must be one of {ROPE_LAYOUTS}, got {layout!r}")
        axis = rope_axis_dim(head_dim)
        if axis == 0:
            raise ValueError(f"RoPE needs a head dim of at least 6, got {head_dim}")
        omega = torch.arange(axis // 2, dtype=torch.float32, device=positions[0].device) / (axis / 2.0)
        omega = 1.0 / 10000**omega
        cos, sin = [], []
        for pos in positions:
            angles = pos.unsqueeze(-1) * omega  # (..., N, axis/2)
            c, s = angles.cos(), angles.sin()
            if layout == "repeat":
                cos.append(torch.cat([c, c], -1))
                sin.append(torch.cat([s, s], -1))
            else:
                cos.append(c.repeat_interleave(2, dim=-1))
                sin.append(s.repeat_interleave(2, dim=-1))
        # (B or 1, 1, N, 3*axis): a head dimension of 1 broadcasts over heads.
        self.cos = torch.cat(cos, -1).unsqueeze(-3).to(dtype)
        self.sin = torch.cat(sin, -1).unsqueeze(-3).to(dtype)
        self.rotated = 3 * axis

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate queries or keys x of shape (B, heads, N, head_dim)."""
        r = self.rotated
        xr = x[..., :r]
        pairs = xr.unflatten(-1, (-1, 2))
        swapped = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        out = xr * self.cos + swapped * self.sin
        if r == x.shape[-1]:
            return out
        return torch.cat([out, x[..., r:]], dim=-1)
