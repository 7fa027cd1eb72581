"""Video Vision Transformer used as the V-JEPA context and target encoder (pure PyTorch).

Parameter names follow the official V-JEPA / V-JEPA 2 checkpoints (``patch_embed.proj``,
``blocks.{i}.attn.qkv`` ...), so official weights load without renaming. Position tables are
buffers computed from the config and never stored in our own checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .positions import ROPE_LAYOUTS, Grid, RotaryTables, resize_table, sincos_3d_table


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

    def _qkv(self, x: torch.Tensor, rope: RotaryTables | None):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = rope.apply(q), rope.apply(k)
        return q, k, v

    def forward(self, x: torch.Tensor, rope: RotaryTables | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``attn_mask``: optional boolean (N, N) mask, True where a query may attend to a key."""
        b, n, d = x.shape
        q, k, v = self._qkv(x, rope)
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))

    def forward_cached(self, x: torch.Tensor, rope: RotaryTables | None,
                       past: tuple[torch.Tensor, torch.Tensor] | None):
        """Attention of new tokens ``x`` (B, n, D) over the cached keys / values ``past`` ((B or 1, heads,
        m, head_dim) each, already rotated) and their own: every query sees every key (inference; no
        mask, no dropout). Returns (output (B, n, D), (keys, values) now m + n long)."""
        b, n, d = x.shape
        q, k, v = self._qkv(x, rope)
        if past is not None:
            k = torch.cat([past[0].expand(b, -1, -1, -1), k], dim=2)
            v = torch.cat([past[1].expand(b, -1, -1, -1), v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d)), (k, v)


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

    def forward(self, x: torch.Tensor, rope: RotaryTables | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), rope, attn_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward_cached(self, x: torch.Tensor, rope: RotaryTables | None,
                       past: tuple[torch.Tensor, torch.Tensor] | None):
        """:meth:`forward` for new tokens attending over cached keys / values (``Attention.forward_cached``;
        inference: no stochastic depth). Returns (output, (keys, values))."""
        out, kv = self.attn.forward_cached(self.norm1(x), rope, past)
        x = x + out
        return x + self.mlp(self.norm2(x)), kv


def make_blocks(dim: int, depth: int, num_heads: int, mlp_ratio: float, qkv_bias: bool,
                drop_path_rate: float, norm_eps: float) -> nn.ModuleList:
    """``depth`` blocks with stochastic depth rising linearly from 0 to ``drop_path_rate``."""
    rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
    return nn.ModuleList([Block(dim, num_heads, mlp_ratio, qkv_bias, r, norm_eps) for r in rates])


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, rope: RotaryTables | None, use_checkpoint: bool,
               norm: nn.Module, return_layers: Sequence[int] | None = None,
               layer_norm: Callable[[int], nn.Module] | None = None, attn_mask: torch.Tensor | None = None):
    """Run transformer blocks (optionally with activation checkpointing); return the normed output,
    or the normed outputs of ``return_layers`` (negative indices count from the end).
    ``layer_norm(i)`` picks the norm of block i's output (default: ``norm`` for every block).
    ``attn_mask``: optional boolean (N, N) attention mask shared by all blocks (True = may attend)."""
    wanted = {i % len(blocks) for i in return_layers} if return_layers is not None else set()
    outs = []
    for i, blk in enumerate(blocks):
        if use_checkpoint and torch.is_grad_enabled():
            x = checkpoint(blk, x, rope, attn_mask, use_reentrant=False)
        else:
            x = blk(x, rope, attn_mask)
        if i in wanted:
            outs.append((layer_norm(i) if layer_norm is not None else norm)(x))
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


#: V-JEPA 2.1: the blocks whose outputs have their own LayerNorm (``norms_block``), by encoder depth
#: (official table; the last entry is the final block, whose norm gives the encoder output).
HIERARCHICAL_LAYERS: dict[int, tuple[int, ...]] = {
    12: (2, 5, 8, 11), 24: (5, 11, 17, 23), 40: (9, 19, 29, 39), 48: (11, 23, 37, 47),
}


def hierarchical_layers(depth: int) -> tuple[int, ...]:
    """The four hierarchical output blocks of a V-JEPA 2.1 encoder of ``depth`` blocks: the official
    table for depths 12 / 24 / 40 / 48; other depths (custom models the official code refuses) get
    the last block of each quarter, or every block below depth 4."""
    if depth in HIERARCHICAL_LAYERS:
        return HIERARCHICAL_LAYERS[depth]
    if depth < 4:
        return tuple(range(depth))
    return tuple(depth * (k + 1) // 4 - 1 for k in range(4))


class VisionTransformer(nn.Module):
    """ViT video encoder with tubelet embedding and either a fixed 3D sin-cos table or 3D RoPE.

    ``num_frames`` / ``img_size`` only define the reference grid of the sin-cos table (inputs of
    other sizes get a resampled table, as in V-JEPA 1); RoPE works at any size directly.

    V-JEPA 2.1 encoders (``app/vjepa_2_1``) switch on: ``rope_layout="interleave"`` and
    ``rope_rescale_grid=16`` (its ``interpolate_rope``), ``image_tokenizer`` (``patch_embed_img``:
    single frames, shape (B, C, H, W) or (B, C, 1, H, W), get a tubelet-1 embedding),
    ``modality_embedding`` (learned ``img_mod_embed`` / ``video_mod_embed`` added to the tokens) and
    ``hierarchical_norms`` (``norms_block``: one LayerNorm per hierarchical output block instead of
    the final ``norm``; the encoder output is the last one applied to the last block).
    """

    def __init__(self, embed_dim: int = 192, depth: int = 12, num_heads: int = 3, mlp_ratio: float = 4.0,
                 patch_size: int = 16, tubelet_size: int = 2, in_chans: int = 3, num_frames: int = 16,
                 img_size: int = 224, pos_embed: str = "rope", uniform_power: bool = True,
                 qkv_bias: bool = True, drop_path_rate: float = 0.0, norm_eps: float = 1e-6,
                 activation_checkpointing: bool = False, rope_layout: str = "repeat",
                 rope_rescale_grid: int | None = None, image_tokenizer: bool = False,
                 modality_embedding: bool = False, hierarchical_norms: bool = False):
        super().__init__()
        if pos_embed not in ("rope", "sincos"):
            raise ValueError(f"pos_embed must be 'rope' or 'sincos', got {pos_embed!r}")
        if rope_layout not in ROPE_LAYOUTS:
            raise ValueError(f"rope_layout must be one of {ROPE_LAYOUTS}, got {rope_layout!r}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.patch_size, self.tubelet_size = patch_size, tubelet_size
        self.use_rope = pos_embed == "rope"
        self.rope_layout, self.rope_rescale_grid = rope_layout, rope_rescale_grid
        self.activation_checkpointing = activation_checkpointing
        self.patch_embed = PatchEmbed3D(in_chans, embed_dim, patch_size, tubelet_size)
        self.patch_embed_img = PatchEmbed3D(in_chans, embed_dim, patch_size, 1) if image_tokenizer else None
        self.ref_grid: Grid = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        if not self.use_rope:
            table = sincos_3d_table(embed_dim, self.ref_grid, uniform_power)
            self.register_buffer("pos_embed", table.unsqueeze(0), persistent=False)
        self.blocks = make_blocks(embed_dim, depth, num_heads, mlp_ratio, qkv_bias, drop_path_rate, norm_eps)
        self.hierarchical_layers = hierarchical_layers(depth) if hierarchical_norms else None
        if self.hierarchical_layers is not None:
            self.norms_block = nn.ModuleList([nn.LayerNorm(embed_dim, eps=norm_eps) for _ in self.hierarchical_layers])
        else:
            self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        init_vit_weights(self)
        self.img_mod_embed = self.video_mod_embed = None
        if modality_embedding:  # official init: N(0, 1e-6)
            self.img_mod_embed = nn.Parameter(nn.init.normal_(torch.empty(1, 1, embed_dim), std=1e-6))
            self.video_mod_embed = nn.Parameter(nn.init.normal_(torch.empty(1, 1, embed_dim), std=1e-6))

    def is_image(self, x: torch.Tensor) -> bool:
        """Whether ``x`` goes through the image tokenizer: a single frame, (B, C, H, W) or
        (B, C, 1, H, W), for an encoder that has one (V-JEPA 2.1)."""
        return self.patch_embed_img is not None and (x.ndim == 4 or (x.ndim == 5 and x.shape[2] == 1))

    def grid_of(self, x: torch.Tensor) -> Grid:
        """Token grid (T', H', W') of an input clip (B, C, T, H, W) or image (B, C, H, W)."""
        if x.ndim == 4:
            (_, _, h, w), t = x.shape, 1
        else:
            _, _, t, h, w = x.shape
            t = t if self.is_image(x) else t // self.tubelet_size
        return t, h // self.patch_size, w // self.patch_size

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """Accept images (B, C, H, W) as static clips (or as single frames for the image tokenizer)
        and check divisibility with a clear message."""
        if x.ndim == 4:
            x = x.unsqueeze(2) if self.is_image(x) else x.unsqueeze(2).expand(-1, -1, self.tubelet_size, -1, -1)
        if x.ndim != 5:
            raise ValueError(f"expected a clip (B, C, T, H, W) or an image (B, C, H, W), got shape {tuple(x.shape)}")
        _, _, t, h, w = x.shape
        tubelet = 1 if self.is_image(x) else self.tubelet_size
        if t % tubelet or h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"input of {t} frames x {h}x{w} px does not tile into {tubelet}x{self.patch_size}x"
                f"{self.patch_size} tubelets: frames must be divisible by {tubelet} and height/width "
                f"by {self.patch_size}"
            )
        return x

    def position_table(self, grid: Grid) -> torch.Tensor:
        return resize_table(self.pos_embed[0], self.ref_grid, grid).unsqueeze(0)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        """Patch-embed a clip (+ modality embedding, + sin-cos positions): returns all tokens (B, N, D)
        and the grid."""
        x = self.prepare_input(x)
        grid = self.grid_of(x)
        image = self.is_image(x)
        tokens = self.patch_embed_img(x) if image else self.patch_embed(x)
        modality = self.img_mod_embed if image else self.video_mod_embed
        if modality is not None:
            tokens = tokens + modality
        if not self.use_rope:
            tokens = tokens + self.position_table(grid).to(tokens.device, tokens.dtype)
        return tokens, grid

    def output_norm(self, layer: int) -> nn.Module:
        """The LayerNorm of block ``layer``'s output when it is returned: the shared final ``norm``,
        or (V-JEPA 2.1) that block's entry of ``norms_block``."""
        if self.hierarchical_layers is None:
            return self.norm
        layer %= len(self.blocks)
        if layer not in self.hierarchical_layers:
            raise ValueError(f"block {layer} has no output norm in this V-JEPA 2.1 encoder: norms_block follows "
                             f"blocks {list(self.hierarchical_layers)}")
        return self.norms_block[self.hierarchical_layers.index(layer)]

    def encode_tokens(self, tokens: torch.Tensor, grid: Grid, keep: torch.Tensor | None = None,
                      return_layers: Sequence[int] | None = None):
        """Run the transformer on embedded tokens, restricted to ``keep`` indices (B, K) if given."""
        for layer in return_layers or ():
            self.output_norm(layer)  # an unknown hierarchical layer fails before any compute
        if keep is not None:
            tokens = gather_tokens(tokens, keep)
        rope = None
        if self.use_rope:
            ids = keep if keep is not None else torch.arange(tokens.shape[1], device=tokens.device)
            rope = RotaryTables(ids, grid, self.embed_dim // self.num_heads, tokens.dtype, self.rope_layout,
                                self.rope_rescale_grid)
        hierarchical = self.hierarchical_layers is not None
        return run_blocks(self.blocks, tokens, rope, self.activation_checkpointing and self.training,
                          self.norms_block[-1] if hierarchical else self.norm, return_layers,
                          self.output_norm if hierarchical else None)

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
