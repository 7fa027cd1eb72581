"""Video Vision Transformer used as the V-JEPA context and target encoder (pure PyTorch).

Parameter names follow the official V-JEPA / V-JEPA 2 checkpoints (``patch_embed.proj``,
``blocks.{i}.attn.qkv`` ...), so official weights load without renaming. Position tables are
buffers computed from the config and never stored in our own checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .positions import Grid, RotaryTables, resize_table, sincos_3d_table


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, N, D), idx (B, K) -> (B, K, D)."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device, dtype=x.dtype)
        return x * keep.bernoulli_(1 - self.p) / (1 - self.p)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop

    def forward(self, x: torch.Tensor, rope: RotaryTables | None = None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = rope.apply(q), rope.apply(k)
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, rope: RotaryTables | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), rope))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def make_blocks(dim: int, depth: int, num_heads: int, mlp_ratio: float, qkv_bias: bool,
                drop_path_rate: float, norm_eps: float) -> nn.ModuleList:
    """``depth`` blocks with stochastic depth rising linearly from 0 to ``drop_path_rate``."""
    rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
    return nn.ModuleList([Block(dim, num_heads, mlp_ratio, qkv_bias, r, norm_eps) for r in rates])


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, rope: RotaryTables | None, use_checkpoint: bool,
               norm: nn.Module, return_layers: Sequence[int] | None = None):
    """Run transformer blocks (optionally with activation checkpointing); return the normed output,
    or the normed outputs of ``return_layers`` (negative indices count from the end)."""
    wanted = {i % len(blocks) for i in return_layers} if return_layers is not None else set()
    outs = []
    for i, blk in enumerate(blocks):
        if use_checkpoint and torch.is_grad_enabled():
            x = checkpoint(blk, x, rope, use_reentrant=False)
        else:
            x = blk(x, rope)
        if i in wanted:
            outs.append(norm(x))
    return outs if return_layers is not None else norm(x)


class PatchEmbed3D(nn.Module):
    """Conv3d tubelet embedding: (B, C, T, H, W) -> (B, T'*H'*W', D)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, tubelet_size: int):
        super().__init__()
        self.patch_size, self.tubelet_size = patch_size, tubelet_size
        k = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """ViT video encoder with tubelet embedding and either a fixed 3D sin-cos table or 3D RoPE.

    ``num_frames`` / ``img_size`` only define the reference grid of the sin-cos table (inputs of
    other sizes get a resampled table, as in V-JEPA 1); RoPE works at any size directly.
    """

    def __init__(self, embed_dim: int = 192, depth: int = 12, num_heads: int = 3, mlp_ratio: float = 4.0,
                 patch_size: int = 16, tubelet_size: int = 2, in_chans: int = 3, num_frames: int = 16,
                 img_size: int = 224, pos_embed: str = "rope", uniform_power: bool = True,
                 qkv_bias: bool = True, drop_path_rate: float = 0.0, norm_eps: float = 1e-6,
                 activation_checkpointing: bool = False):
        super().__init__()
        if pos_embed not in ("rope", "sincos"):
            raise ValueError(f"pos_embed must be 'rope' or 'sincos', got {pos_embed!r}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.patch_size, self.tubelet_size = patch_size, tubelet_size
        self.use_rope = pos_embed == "rope"
        self.activation_checkpointing = activation_checkpointing
        self.patch_embed = PatchEmbed3D(in_chans, embed_dim, patch_size, tubelet_size)
        self.ref_grid: Grid = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        if not self.use_rope:
            table = sincos_3d_table(embed_dim, self.ref_grid, uniform_power)
            self.register_buffer("pos_embed", table.unsqueeze(0), persistent=False)
        self.blocks = make_blocks(embed_dim, depth, num_heads, mlp_ratio, qkv_bias, drop_path_rate, norm_eps)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        init_vit_weights(self)

    def grid_of(self, x: torch.Tensor) -> Grid:
        """Token grid (T', H', W') of an input clip (B, C, T, H, W)."""
        _, _, t, h, w = x.shape
        return t // self.tubelet_size, h // self.patch_size, w // self.patch_size

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """Accept images (B, C, H, W) as static clips and check divisibility with a clear message."""
        if x.ndim == 4:
            x = x.unsqueeze(2).expand(-1, -1, self.tubelet_size, -1, -1)
        if x.ndim != 5:
            raise ValueError(f"expected a clip (B, C, T, H, W) or an image (B, C, H, W), got shape {tuple(x.shape)}")
        _, _, t, h, w = x.shape
        if t % self.tubelet_size or h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"input of {t} frames x {h}x{w} px does not tile into {self.tubelet_size}x{self.patch_size}x"
                f"{self.patch_size} tubelets: frames must be divisible by {self.tubelet_size} and height/width "
                f"by {self.patch_size}"
            )
        return x

    def position_table(self, grid: Grid) -> torch.Tensor:
        return resize_table(self.pos_embed[0], self.ref_grid, grid).unsqueeze(0)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        """Patch-embed a clip (+ sin-cos positions): returns all tokens (B, N, D) and the grid."""
        x = self.prepare_input(x)
        grid = self.grid_of(x)
        tokens = self.patch_embed(x)
        if not self.use_rope:
            tokens = tokens + self.position_table(grid).to(tokens.device, tokens.dtype)
        return tokens, grid

    def encode_tokens(self, tokens: torch.Tensor, grid: Grid, keep: torch.Tensor | None = None,
                      return_layers: Sequence[int] | None = None):
        """Run the transformer on embedded tokens, restricted to ``keep`` indices (B, K) if given."""
        if keep is not None:
            tokens = gather_tokens(tokens, keep)
        rope = None
        if self.use_rope:
            ids = keep if keep is not None else torch.arange(tokens.shape[1], device=tokens.device)
            rope = RotaryTables(ids, grid, self.embed_dim // self.num_heads, tokens.dtype)
        return run_blocks(self.blocks, tokens, rope, self.activation_checkpointing and self.training,
                          self.norm, return_layers)

    def forward(self, x: torch.Tensor, masks: torch.Tensor | list[torch.Tensor] | None = None,
                return_layers: Sequence[int] | None = None):
        """Encode a clip or image.

        masks: None (all tokens), a LongTensor (B, K) of kept token indices, or a list of them (one
        output per mask; the patch embedding is computed once and shared).
        return_layers: block indices whose (normed) outputs are returned as a list instead.
        """
        tokens, grid = self.embed(x)
        if isinstance(masks, (list, tuple)):
            return [self.encode_tokens(tokens, grid, m, return_layers) for m in masks]
        return self.encode_tokens(tokens, grid, masks, return_layers)


def init_vit_weights(module: nn.Module, std: float = 0.02) -> None:
    """Truncated-normal init for linear/conv weights, zero biases, unit LayerNorms, and the
    V-JEPA rescaling of residual output projections by 1/sqrt(2 * layer)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv3d)):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    blocks = getattr(module, "blocks", None) or getattr(module, "predictor_blocks", None)
    for layer, blk in enumerate(blocks or [], start=1):
        blk.attn.proj.weight.data.div_((2.0 * layer) ** 0.5)
        blk.mlp.fc2.weight.data.div_((2.0 * layer) ** 0.5)
