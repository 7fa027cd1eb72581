"""Published ViT sizes used by V-JEPA / V-JEPA 2 (embed dim, depth, heads, MLP ratio)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ViTSize:
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0


VIT_SIZES: dict[str, ViTSize] = {
    "tiny": ViTSize(192, 12, 3),
    "small": ViTSize(384, 12, 6),
    "base": ViTSize(768, 12, 12),
    "large": ViTSize(1024, 24, 16),
    "huge": ViTSize(1280, 32, 16),
    "giant": ViTSize(1408, 40, 16, 48 / 11),
    # V-JEPA 2's ViT-g: same width/depth, 22 heads of dim 64.
    "giant_v2": ViTSize(1408, 40, 22, 48 / 11),
}
