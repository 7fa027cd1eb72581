"""Published ViT sizes used by V-JEPA / V-JEPA 2 (embed dim, depth, heads, MLP ratio).

Named presets of the config's model section (``model.size``); the model package builds from the
resolved numbers (``ModelConfig.resolved_size``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vjepa_pipeline.config.messages import closest, quoted


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
    # V-JEPA 2.1's ViT-G ("2B", official vit_gigantic_xformers): 26 heads of dim 64, MLP 8192.
    "gigantic": ViTSize(1664, 48, 26, 64 / 13),
}


def unknown_size_message(size: str, sizes: Mapping[str, Any] = VIT_SIZES) -> str:
    hint = closest(size, sizes)
    suggestion = f"did you mean {hint!r}? " if hint else ""
    return f"model.size: unknown ViT size {size!r}; {suggestion}(choices: {quoted(sizes)})"
