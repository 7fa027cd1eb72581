"""The V-JEPA predictor: a narrow ViT that maps context tokens + learned mask tokens placed at the
target positions to predictions of the target encoder's features (pure PyTorch).

Parameter names match the official checkpoints: ``predictor_embed``, ``mask_tokens.{k}``,
``predictor_blocks.{i}``, ``predictor_norm``, ``predictor_proj``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .positions import Grid, RotaryTables, resize_table, sincos_3d_table
from .vit import gather_tokens, init_vit_weights, make_blocks, run_blocks


class Predictor(nn.Module):
    def __init__(self, embed_dim: int, predictor_embed_dim: int = 384, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, num_mask_tokens: int = 10, zero_init_mask_tokens: bool = True,
                 patch_size: int = 16, tubelet_size: int = 2, num_frames: int = 16, img_size: int = 224,
                 pos_embed: str = "rope", uniform_power: bool = True, qkv_bias: bool = True,
                 drop_path_rate: float = 0.0, norm_eps: float = 1e-6, activation_checkpointing: bool = False):
        super().__init__()
        self.embed_dim, self.predictor_embed_dim = embed_dim, predictor_embed_dim
        self.num_heads = num_heads
        self.use_rope = pos_embed == "rope"
        self.activation_checkpointing = activation_checkpointing
        self.ref_grid: Grid = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        self.predictor_embed = nn.Linear(embed_dim, predictor_embed_dim)
        self.mask_tokens = nn.ParameterList(
            [nn.Parameter(torch.zeros(1, 1, predictor_embed_dim)) for _ in range(num_mask_tokens)]
        )
        if not self.use_rope:
            table = sincos_3d_table(predictor_embed_dim, self.ref_grid, uniform_power)
            self.register_buffer("predictor_pos_embed", table.unsqueeze(0), persistent=False)
        self.predictor_blocks = make_blocks(predictor_embed_dim, depth, num_heads, mlp_ratio, qkv_bias,
                                            drop_path_rate, norm_eps)
        self.predictor_norm = nn.LayerNorm(predictor_embed_dim, eps=norm_eps)
        self.predictor_proj = nn.Linear(predictor_embed_dim, embed_dim)
        init_vit_weights(self)
        if not zero_init_mask_tokens:
            for tok in self.mask_tokens:
                nn.init.trunc_normal_(tok, std=0.02)

    @property
    def num_mask_tokens(self) -> int:
        return len(self.mask_tokens)

    def forward(self, context: torch.Tensor, ctx_idx: torch.Tensor, tgt_idx: torch.Tensor, grid: Grid,
                mask_index: int = 0) -> torch.Tensor:
        """Predict target features.

        context: encoder outputs (B, Nc, D) at token indices ctx_idx (B, Nc); tgt_idx (B, Nt) are the
        positions to predict on the token grid ``grid``; mask_index picks the learned mask token
        (one per mask configuration). Returns (B, Nt, D).
        """
        b, n_ctx, _ = context.shape
        x = self.predictor_embed(context)
        tokens = self.mask_tokens[mask_index % self.num_mask_tokens].to(x.dtype)
        targets = tokens.expand(b, tgt_idx.shape[1], -1)
        rope = None
        if self.use_rope:
            ids = torch.cat([ctx_idx, tgt_idx], dim=1)
            rope = RotaryTables(ids, grid, self.predictor_embed_dim // self.num_heads, x.dtype)
        else:
            table = resize_table(self.predictor_pos_embed[0], self.ref_grid, grid).to(x.device, x.dtype)
            table = table.unsqueeze(0).expand(b, -1, -1)
            x = x + gather_tokens(table, ctx_idx)
            targets = targets + gather_tokens(table, tgt_idx)
        x = torch.cat([x, targets], dim=1)
        # Attention is permutation-equivariant and positions travel with the tokens, so unlike the
        # official code no sort/unsort by position is needed.
        x = run_blocks(self.predictor_blocks, x, rope, self.activation_checkpointing and self.training,
                       self.predictor_norm)
        return self.predictor_proj(x[:, n_ctx:])
