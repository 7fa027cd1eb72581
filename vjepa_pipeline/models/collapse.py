"""Representation-collapse statistics as plain functions.

The JEPA loss is a weak progress signal (EMA + stop-gradient can reach a low loss by collapsing),
so training also watches how spread out the target features are.
"""

from __future__ import annotations

import torch


def per_dim_std(features: torch.Tensor) -> torch.Tensor:
    """Std of each feature dimension across all leading dims: (..., D) -> (D,).
    A collapsed encoder drives these to 0."""
    flat = features.detach().reshape(-1, features.shape[-1]).float()
    return flat.std(dim=0, unbiased=flat.shape[0] > 1)


def rankme(embeddings: torch.Tensor, eps: float = 1e-7) -> float:
    """Effective rank (RankMe, Garrido et al. 2023) of an (N, D) embedding matrix:
    exp(entropy of the normalised singular values). Ranges from 1 (collapsed) to min(N, D)."""
    if embeddings.ndim != 2:
        raise ValueError(f"rankme expects (N, D) embeddings, got shape {tuple(embeddings.shape)}")
    s = torch.linalg.svdvals(embeddings.detach().double())
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def collapse_stats(targets: torch.Tensor) -> dict[str, float]:
    """Summary for logging from target features (B, N, D): token-level std (mean/min over dims),
    the std of clip embeddings (mean-pooled tokens) across the batch, and their RankMe."""
    token_std = per_dim_std(targets)
    pooled = targets.detach().float().mean(dim=1)
    return {
        "target_std_mean": float(token_std.mean()),
        "target_std_min": float(token_std.min()),
        "pooled_std_mean": float(per_dim_std(pooled).mean()) if pooled.shape[0] > 1 else float("nan"),
        "pooled_rankme": rankme(pooled),
        "token_rankme": rankme(targets.detach().reshape(-1, targets.shape[-1])[:4096]),
    }
