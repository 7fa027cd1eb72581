"""The V-JEPA 2-AC action-conditioned predictor (pure PyTorch).

A frame-causal ViT over the frozen encoder's per-frame patch tokens, interleaved with one action,
one state and (optionally) one extrinsics token per frame; it predicts each frame's next frame in
the encoder's feature space. It is the official ``VisionTransformerPredictorAC``
(facebookresearch/vjepa2 ``src/models/ac_predictor.py``, trained by ``app/vjepa_droid``) restated
on our :class:`~vjepa_pipeline.models.vit.Block`.

Parameter names and shapes are the official ones (``predictor_embed``, ``action_encoder``,
``state_encoder``, ``extrinsics_encoder``, ``predictor_blocks.{i}``, ``predictor_norm``,
``predictor_proj``) with one difference: the official class always creates ``extrinsics_encoder``
(input ``action_dim - 1``), unused unless ``use_extrinsics``; ours has it only when used, so no
parameter is left without a gradient (a DDP error). ``checkpoint/ac_layout.py`` converts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .positions import RotaryTables
from .vit import init_vit_weights, make_blocks, run_blocks


def block_causal_mask(num_frames: int, tokens_per_frame: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (T*n, T*n) mask, True where a query may attend to a key: every token of frame t sees
    all tokens of frames <= t (the official ``build_action_block_causal_attention_mask``)."""
    frame = torch.arange(num_frames, device=device).repeat_interleave(tokens_per_frame)
    return frame[:, None] >= frame[None, :]


@dataclass
class FrameCache:
    """Keys and values of the frames fed so far, per block ((B, heads, frames * (c+N), head_dim) each), for
    :meth:`ActionConditionedPredictor.step`. Block causality makes them final: a later frame never changes
    what an earlier frame's tokens computed."""

    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    frames: int = 0


class ActionConditionedPredictor(nn.Module):
    """Action-conditioned, frame-causal predictor of V-JEPA 2-AC.

    Contract of :meth:`forward`:

    - ``tokens``: encoder patch tokens of T frames, either flat (B, T*N, embed_dim), frame-major as
      the official code takes them, or per frame (B, T, N, embed_dim); N = grid_h * grid_w patches
      of one token frame (the official trainer encodes each video frame as its own tubelet, so a
      token frame is a video frame there). T is read from the tokens and may be any length >= 1.
    - ``actions`` (B, T, action_dim), ``states`` (B, T, state_dim): the action taken at / state
      observed at each frame; ``extrinsics`` (B, T, extrinsics_dim) is required when the model was
      built with ``use_extrinsics`` and refused otherwise.
    - returns predicted tokens of the same shape as ``tokens``: output frame t is the prediction of
      frame t+1 from frames <= t and their actions / states (block-causal: nothing of a later frame
      reaches it).

    Per frame the sequence is [action, state, (extrinsics), patches...]. With RoPE (the official
    setting) patch tokens rotate by (frame, row, column); the conditioning tokens rotate by their
    frame only, i.e. position (t, 0, 0), which is how the official ``ACRoPEAttention`` treats them
    (their row / column dims are left unrotated). As in the official code, column positions are
    scaled by ``grid_h / grid_w`` (a no-op on square grids). The block-causal mask and the RoPE
    tables depend only on T and are built once per (T, device, dtype) and cached.

    Deterministic: no randomness in ``forward`` unless ``drop_path_rate`` > 0 in training mode.
    """

    def __init__(self, embed_dim: int, predictor_embed_dim: int = 1024, depth: int = 24, num_heads: int = 16,
                 action_dim: int = 7, state_dim: int | None = None, use_extrinsics: bool = False,
                 extrinsics_dim: int | None = None, img_size: int | tuple[int, int] = 256, patch_size: int = 16,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, use_rope: bool = True, drop_path_rate: float = 0.0,
                 norm_eps: float = 1e-6, activation_checkpointing: bool = False):
        super().__init__()
        img_h, img_w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if img_h % patch_size or img_w % patch_size:
            raise ValueError(f"image size {img_h}x{img_w} is not a multiple of the patch size {patch_size}")
        if action_dim < 1:
            raise ValueError(f"action_dim must be >= 1, got {action_dim}")
        self.embed_dim, self.predictor_embed_dim, self.num_heads = embed_dim, predictor_embed_dim, num_heads
        self.grid_h, self.grid_w = img_h // patch_size, img_w // patch_size
        self.action_dim = action_dim
        self.state_dim = action_dim if state_dim is None else state_dim
        self.use_extrinsics = use_extrinsics
        self.extrinsics_dim = (action_dim - 1 if extrinsics_dim is None else extrinsics_dim) if use_extrinsics else None
        if use_extrinsics and self.extrinsics_dim < 1:
            raise ValueError(f"extrinsics_dim must be >= 1, got {self.extrinsics_dim}")
        self.use_rope = use_rope
        self.activation_checkpointing = activation_checkpointing
        self.predictor_embed = nn.Linear(embed_dim, predictor_embed_dim)
        self.action_encoder = nn.Linear(action_dim, predictor_embed_dim)
        self.state_encoder = nn.Linear(self.state_dim, predictor_embed_dim)
        self.extrinsics_encoder = nn.Linear(self.extrinsics_dim, predictor_embed_dim) if use_extrinsics else None
        self.predictor_blocks = make_blocks(predictor_embed_dim, depth, num_heads, mlp_ratio, qkv_bias,
                                            drop_path_rate, norm_eps)
        if use_rope:  # fail at build time, not at the first forward
            RotaryTables.from_positions([torch.zeros(1)] * 3, predictor_embed_dim // num_heads, torch.float32)
        self.predictor_norm = nn.LayerNorm(predictor_embed_dim, eps=norm_eps)
        self.predictor_proj = nn.Linear(predictor_embed_dim, embed_dim)
        init_vit_weights(self)
        self._cache: dict[tuple, tuple[torch.Tensor, RotaryTables | None]] = {}

    @property
    def cond_tokens(self) -> int:
        """Conditioning tokens per frame: action, state (, extrinsics)."""
        return 3 if self.use_extrinsics else 2

    @property
    def patches_per_frame(self) -> int:
        return self.grid_h * self.grid_w

    def frame_layout(self, num_frames: int, device: torch.device, dtype: torch.dtype):
        """(block-causal mask, RoPE tables or None) for ``num_frames`` frames, cached (a few entries, by
        frame count, device and dtype; not part of the state dict)."""
        key = (num_frames, device, dtype)
        if key not in self._cache:
            c, h, w = self.cond_tokens, self.grid_h, self.grid_w
            n = c + h * w
            mask = block_causal_mask(num_frames, n, device)
            rope = None
            if self.use_rope:
                slot = torch.arange(n, device=device) - c  # position within the frame; < 0: conditioning token
                patch = slot.clamp(min=0)
                row = torch.where(slot >= 0, patch // w, 0).float()
                col = torch.where(slot >= 0, patch % w, 0).float() * (h / w)
                frame = torch.arange(num_frames, device=device).repeat_interleave(n).float()
                rope = RotaryTables.from_positions([frame, row.repeat(num_frames), col.repeat(num_frames)],
                                                   self.predictor_embed_dim // self.num_heads, dtype)
            if len(self._cache) >= 8:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = (mask, rope)
        return self._cache[key]

    @staticmethod
    def _check(name: str, x: torch.Tensor, b: int, t: int, dim_name: str, dim: int) -> None:
        if x.ndim != 3 or tuple(x.shape) != (b, t, dim):
            raise ValueError(f"{name} must have shape (B={b}, T={t}, {dim_name}={dim}), got {tuple(x.shape)}")

    def forward(self, tokens: torch.Tensor, actions: torch.Tensor, states: torch.Tensor,
                extrinsics: torch.Tensor | None = None) -> torch.Tensor:
        """Predict each frame's next frame; see the class docstring for shapes."""
        per_frame = tokens.ndim == 4
        n = self.patches_per_frame
        if tokens.ndim not in (3, 4) or tokens.shape[-1] != self.embed_dim:
            raise ValueError(f"tokens must be (B, T*N, {self.embed_dim}) or (B, T, N, {self.embed_dim}), "
                             f"got {tuple(tokens.shape)}")
        if per_frame and tokens.shape[2] != n:
            raise ValueError(f"tokens have {tokens.shape[2]} patches per frame, the model's grid "
                             f"{self.grid_h}x{self.grid_w} has {n}")
        if not per_frame and (tokens.shape[1] % n or tokens.shape[1] == 0):
            raise ValueError(f"tokens hold {tokens.shape[1]} patches, not a positive multiple of the "
                             f"{self.grid_h}x{self.grid_w}={n} patches of one frame")
        b = tokens.shape[0]
        t = tokens.shape[1] if per_frame else tokens.shape[1] // n
        self._check("actions", actions, b, t, "action_dim", self.action_dim)
        self._check("states", states, b, t, "state_dim", self.state_dim)
        if self.use_extrinsics:
            if extrinsics is None:
                raise ValueError("this predictor was built with use_extrinsics: pass extrinsics (B, T, "
                                 f"{self.extrinsics_dim})")
            self._check("extrinsics", extrinsics, b, t, "extrinsics_dim", self.extrinsics_dim)
        elif extrinsics is not None:
            raise ValueError("extrinsics given to a predictor built without use_extrinsics")

        x = self.predictor_embed(tokens.reshape(b, t, n, self.embed_dim))  # (B, T, N, D)
        cond = [self.action_encoder(actions), self.state_encoder(states)]
        if self.use_extrinsics:
            cond.append(self.extrinsics_encoder(extrinsics))
        x = torch.cat([torch.stack(cond, dim=2).to(x.dtype), x], dim=2).flatten(1, 2)  # (B, T*(c+N), D)
        mask, rope = self.frame_layout(t, x.device, x.dtype)
        x = run_blocks(self.predictor_blocks, x, rope, self.activation_checkpointing and self.training,
                       self.predictor_norm, attn_mask=mask)
        x = x.unflatten(1, (t, self.cond_tokens + n))[:, :, self.cond_tokens:]  # drop the conditioning tokens
        x = self.predictor_proj(x)
        return x if per_frame else x.flatten(1, 2)

    def frame_rope(self, t: int, device: torch.device, dtype: torch.dtype) -> RotaryTables | None:
        """RoPE tables of the tokens of frame ``t`` alone (the rows of frame t in :meth:`frame_layout`)."""
        if not self.use_rope:
            return None
        key = ("frame", t, device, dtype)
        if key not in self._cache:
            c, w = self.cond_tokens, self.grid_w
            slot = torch.arange(c + self.patches_per_frame, device=device) - c
            patch = slot.clamp(min=0)
            row = torch.where(slot >= 0, patch // w, 0).float()
            col = torch.where(slot >= 0, patch % w, 0).float() * (self.grid_h / w)
            frame = torch.full_like(row, float(t))
            if len(self._cache) >= 32:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = (None, RotaryTables.from_positions([frame, row, col],
                                                                   self.predictor_embed_dim // self.num_heads, dtype))
        return self._cache[key][1]

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, actions: torch.Tensor, states: torch.Tensor,
             cache: FrameCache | None = None, extrinsics: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, FrameCache]:
        """Feed ONE more frame and predict the next one, reusing the keys / values of the frames fed before
        (inference only: no gradients, no stochastic depth). ``tokens`` (B, N, embed_dim), ``actions`` (B,
        A), ``states`` (B, S) (``extrinsics`` (B, E)) of frame ``cache.frames``; returns the prediction (B,
        N, embed_dim) - equal, up to float rounding, to the last output frame of :meth:`forward` on all
        frames so far - and a new, extended cache (``cache`` itself is not changed, so one prefix can be
        extended several ways). Makes an H-step rollout cost H one-frame passes instead
        of 1 + 2 + ... + H frames."""
        cache = FrameCache() if cache is None else cache
        b, n = tokens.shape[0], self.patches_per_frame
        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != (n, self.embed_dim):
            raise ValueError(f"tokens must be (B, {n}, {self.embed_dim}), got {tuple(tokens.shape)}")
        self._check("actions", actions.unsqueeze(1), b, 1, "action_dim", self.action_dim)
        self._check("states", states.unsqueeze(1), b, 1, "state_dim", self.state_dim)
        if self.use_extrinsics != (extrinsics is not None):
            raise ValueError("pass extrinsics exactly when the predictor was built with use_extrinsics")
        cond = [self.action_encoder(actions), self.state_encoder(states)]
        if self.use_extrinsics:
            self._check("extrinsics", extrinsics.unsqueeze(1), b, 1, "extrinsics_dim", self.extrinsics_dim)
            cond.append(self.extrinsics_encoder(extrinsics))
        x = self.predictor_embed(tokens)
        x = torch.cat([torch.stack(cond, dim=1).to(x.dtype), x], dim=1)  # (B, c+N, D)
        rope = self.frame_rope(cache.frames, x.device, x.dtype)
        keys, values = [], []
        for i, blk in enumerate(self.predictor_blocks):
            past = (cache.keys[i], cache.values[i]) if cache.frames else None
            x, (k, v) = blk.forward_cached(x, rope, past)  # frame t sees frames <= t: every cached key
            keys.append(k)
            values.append(v)
        cache = FrameCache(keys, values, cache.frames + 1)  # a new cache: the caller's stays a valid prefix
        return self.predictor_proj(self.predictor_norm(x)[:, self.cond_tokens:]), cache
