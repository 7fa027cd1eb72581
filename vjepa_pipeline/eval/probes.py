"""Probes trained on frozen-encoder features, and the multi-view rule of the official protocols.

Feature convention: the features of one video are a tensor ``(S, V, N, D)`` (S temporal segments,
V spatial views, N tokens, D feature width); a batch is ``(B, S, V, N, D)``.

Multi-view rule (as in the official V-JEPA / V-JEPA 2 ``video_classification_frozen/eval.py``):

* ``segment_mode="attend"``: for each view v, the tokens of all S segments are concatenated
  (segment-major) into one ``(S*N, D)`` sequence and the probe gives one logit vector per view
  -> ``V`` outputs per video.
* ``segment_mode="average"``: the probe runs on each (segment, view) pair -> ``S*V`` outputs.
* Prediction: the **softmax probabilities** of the outputs are averaged (uniformly over all
  outputs: views, and segments in "average" mode). The official code averages probabilities,
  not logits, in both modes, so this module does the same.
  :func:`multiview_logits` returns ``log(mean_k softmax(logits_k))`` (log-probabilities, computed
  stably with logsumexp): its softmax/exp *is* the averaged probability vector, its argmax is the
  prediction, and cross-entropy on it is ``-log(averaged probability of the true class)``.
* Training loss (:func:`multiview_loss`): the mean cross-entropy over all outputs, as the
  official code does (``sum(criterion(o, y) for o in outputs) / len(outputs)``).

Probes:

* :class:`AttentiveProbe` - V-JEPA 1 (``self_attn_blocks=0``: a learned query cross-attends to the
  tokens) and V-JEPA 2 (``self_attn_blocks`` self-attention blocks over the tokens first).
  Parameter names follow the official ``AttentiveClassifier`` (``pooler.query_tokens``,
  ``pooler.cross_attention_block.{norm1,xattn.q,xattn.kv,xattn.proj,norm2,mlp.fc1,mlp.fc2}``,
  ``pooler.blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``linear``). We add a
  final LayerNorm (``norm``) before the classifier by default; with ``final_norm=False`` the
  layout is exactly the official one, so published probe weights load with ``load_state_dict``
  (after stripping a ``module.`` prefix).
* :class:`LinearProbe` - mean-pool the tokens, BatchNorm1d without affine parameters (the usual
  linear-probe practice, e.g. MAE: it whitens the feature scale so one lr grid fits every
  encoder), then a Linear layer.
* :func:`knn_predict` - weighted k-nearest-neighbour voting on cosine similarity (DINO style).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.vit import MLP, Block

PROBE_KINDS = ("attentive", "attentive_v2", "linear", "knn")
SEGMENT_MODES = ("average", "attend")
INIT_STD = 0.02


def _trunc_normal_(t: torch.Tensor, std: float, generator: torch.Generator | None) -> None:
    nn.init.trunc_normal_(t, mean=0.0, std=std, a=-2 * std, b=2 * std, generator=generator)


# ----------------------------------------------------------------------------- attentive probe


class _CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b, nq, d = q.shape
        n = x.shape[1]
        h = self.num_heads
        q = self.q(q).view(b, nq, h, d // h).transpose(1, 2)
        k, v = self.kv(x).view(b, n, 2, h, d // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, nq, d))


class _CrossBlock(nn.Module):
    """The query attends to the (pre-normed) tokens; MLP with residual on the query. (The
    self-attention blocks before it are the encoder's own pre-norm :class:`Block`.)"""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.xattn = _CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q = q + self.xattn(q, self.norm1(x))
        return q + self.mlp(self.norm2(q))


class _Pooler(nn.Module):
    def __init__(self, dim: int, num_heads: int, self_attn_blocks: int, mlp_ratio: float):
        super().__init__()
        self.query_tokens = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio) for _ in range(self_attn_blocks))
        self.cross_attention_block = _CrossBlock(dim, num_heads, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        q = self.query_tokens.expand(x.shape[0], -1, -1)
        return self.cross_attention_block(q, x)


def _init_module_(module: nn.Module, std: float, generator: torch.Generator | None) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            _trunc_normal_(m.weight, std, generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class AttentiveProbe(nn.Module):
    """Attentive probe: forward(tokens (B, N, D)) -> logits (B, num_classes).

    ``self_attn_blocks=0`` is the V-JEPA 1 probe (kind ``attentive``); ``self_attn_blocks=3`` the
    V-JEPA 2 one (kind ``attentive_v2``). Init: truncated normal (std 0.02, cut at 2 std) for
    Linear weights and the query token, zero biases, unit LayerNorms, and the official depth
    scaling (residual output projections of block i divided by sqrt(2 i))."""

    def __init__(
        self,
        dim: int,
        num_classes: int,
        num_heads: int = 16,
        self_attn_blocks: int = 0,
        mlp_ratio: float = 4.0,
        final_norm: bool = True,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"probe width {dim} is not divisible by num_heads={num_heads}")
        self.pooler = _Pooler(dim, num_heads, self_attn_blocks, mlp_ratio)
        self.norm = nn.LayerNorm(dim, eps=1e-6) if final_norm else nn.Identity()
        self.linear = nn.Linear(dim, num_classes)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        _trunc_normal_(self.pooler.query_tokens, INIT_STD, generator)
        _init_module_(self, INIT_STD, generator)
        for i, blk in enumerate(self.pooler.blocks):
            blk.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
            blk.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 1)))
        last = len(self.pooler.blocks) + 1
        self.pooler.cross_attention_block.xattn.proj.weight.div_(math.sqrt(2.0 * last))
        self.pooler.cross_attention_block.mlp.fc2.weight.div_(math.sqrt(2.0 * last))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(self.pooler(tokens).squeeze(1)))


class LinearProbe(nn.Module):
    """Mean-pool tokens -> BatchNorm1d(affine=False) -> Linear. forward((B, N, D)) -> (B, C)."""

    def __init__(self, dim: int, num_classes: int, generator: torch.Generator | None = None):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, num_classes)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        _trunc_normal_(self.linear.weight, 0.01, generator)
        nn.init.zeros_(self.linear.bias)
        self.bn.reset_running_stats()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.linear(self.bn(tokens.mean(dim=1)))


# ----------------------------------------------------------------------------- head configs


def make_head_config(
    kind: str,
    dim: int,
    num_classes: int,
    num_heads: int = 16,
    self_attn_blocks: int = 3,
    mlp_ratio: float = 4.0,
    final_norm: bool = True,
) -> dict[str, Any]:
    """Everything needed to rebuild a trained head (stored next to its state_dict)."""
    if kind not in PROBE_KINDS:
        raise ValueError(f"unknown probe kind {kind!r}; expected one of {PROBE_KINDS}")
    cfg: dict[str, Any] = {"kind": kind, "dim": int(dim), "num_classes": int(num_classes)}
    if kind in ("attentive", "attentive_v2"):
        cfg.update(
            num_heads=int(num_heads),
            self_attn_blocks=int(self_attn_blocks) if kind == "attentive_v2" else 0,
            mlp_ratio=float(mlp_ratio),
            final_norm=bool(final_norm),
        )
    return cfg


def build_head(head_config: dict[str, Any], generator: torch.Generator | None = None) -> nn.Module:
    kind = head_config["kind"]
    if kind in ("attentive", "attentive_v2"):
        return AttentiveProbe(
            head_config["dim"],
            head_config["num_classes"],
            head_config["num_heads"],
            head_config["self_attn_blocks"],
            head_config.get("mlp_ratio", 4.0),
            head_config.get("final_norm", True),
            generator=generator,
        )
    if kind == "linear":
        return LinearProbe(head_config["dim"], head_config["num_classes"], generator=generator)
    raise ValueError(f"probe kind {kind!r} has no trainable head")


# ----------------------------------------------------------------------------- multi-view rule


def _check_mode(segment_mode: str) -> None:
    if segment_mode not in SEGMENT_MODES:
        raise ValueError(f"segment_mode must be one of {SEGMENT_MODES}, got {segment_mode!r}")


def multiview_tokens(feats: torch.Tensor, segment_mode: str) -> tuple[torch.Tensor, int]:
    """(B, S, V, N, D) -> (tokens (B*K, L, D), K): the probe inputs of the multi-view rule.

    attend: K = V, L = S*N (segment-major concatenation per view); average: K = S*V, L = N.
    Row b*K + k of the result is output k of video b."""
    _check_mode(segment_mode)
    if feats.ndim != 5:
        raise ValueError(f"features must be (B, S, V, N, D), got shape {tuple(feats.shape)}")
    b, s, v, n, d = feats.shape
    if segment_mode == "attend":
        return feats.permute(0, 2, 1, 3, 4).reshape(b * v, s * n, d), v
    return feats.reshape(b * s * v, n, d), s * v


def multiview_forward(head: nn.Module, feats: torch.Tensor, segment_mode: str) -> torch.Tensor:
    """Raw per-output logits (B, K, C) of one head under the multi-view rule (one head call)."""
    tokens, k = multiview_tokens(feats, segment_mode)
    out = head(tokens)
    return out.reshape(feats.shape[0], k, out.shape[-1])


def combine_outputs(logits: torch.Tensor) -> torch.Tensor:
    """(B, K, C) per-output logits -> (B, C) log of the probabilities averaged over the K outputs."""
    return torch.logsumexp(F.log_softmax(logits.float(), dim=-1), dim=1) - math.log(logits.shape[1])


def multiview_logits(head: nn.Module, feats: torch.Tensor, segment_mode: str) -> torch.Tensor:
    """(B, S, V, N, D) -> (B, C) log-probabilities whose exp is the mean softmax over the outputs."""
    return combine_outputs(multiview_forward(head, feats, segment_mode))


def multiview_probs(head: nn.Module, feats: torch.Tensor, segment_mode: str) -> torch.Tensor:
    """(B, S, V, N, D) -> (B, C) softmax probabilities averaged over views (and segments)."""
    return multiview_logits(head, feats, segment_mode).exp()


def multiview_loss(
    head: nn.Module, feats: torch.Tensor, labels: torch.Tensor, segment_mode: str
) -> torch.Tensor:
    """Mean cross-entropy over all B*K outputs (the official training loss)."""
    out = multiview_forward(head, feats, segment_mode)
    k = out.shape[1]
    return F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), labels.repeat_interleave(k))


# ----------------------------------------------------------------------------- k-NN


def pool_features(feats: torch.Tensor) -> torch.Tensor:
    """(M, ..., D) -> (M, D): mean over every axis between the first and the last."""
    return feats.reshape(feats.shape[0], -1, feats.shape[-1]).float().mean(dim=1)


@torch.no_grad()
def knn_predict(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Weighted k-NN class probabilities (M, C).

    Features (N, D) / (M, D), or with extra token axes which are mean-pooled first; both sides are
    L2-normalised, similarity = cosine. Each of the top-k neighbours votes for its class with
    weight exp(sim / T); votes are normalised to sum to one. (The weights are computed as
    exp((sim - max_sim) / T), which changes nothing after normalisation but cannot overflow.)
    The test set is processed ``chunk_size`` rows at a time to bound memory to chunk x N."""
    if len(train_feats) == 0:
        raise ValueError("knn_predict needs at least one training feature")
    bank = F.normalize(pool_features(train_feats), dim=-1)
    test = pool_features(test_feats).to(bank.device)
    labels = train_labels.to(bank.device).long()
    k = min(int(k), bank.shape[0])
    out = torch.empty(test.shape[0], num_classes, device=bank.device)
    for start in range(0, test.shape[0], chunk_size):
        q = F.normalize(test[start : start + chunk_size], dim=-1)
        sim, idx = (q @ bank.T).topk(k, dim=1)  # sorted, so column 0 is the row maximum
        w = ((sim - sim[:, :1]) / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=bank.device).scatter_add_(1, labels[idx], w)
        out[start : start + chunk_size] = votes / votes.sum(dim=1, keepdim=True)
    return out


@torch.no_grad()
def knn_multiview_probs(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    feats: torch.Tensor,
    num_classes: int,
    segment_mode: str,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """k-NN under the multi-view rule: one query per output (view, or segment x view), each the mean
    of that output's tokens; the vote probabilities are averaged over the outputs. (B, C)."""
    tokens, kk = multiview_tokens(feats.float(), segment_mode)
    probs = knn_predict(bank, bank_labels, tokens.mean(dim=1), num_classes, k, temperature, chunk_size)
    return probs.view(feats.shape[0], kk, num_classes).mean(dim=1)
