"""Violation-of-expectation metrics on per-video surprise scores (Garrido et al. 2025).

- relative accuracy: over matched pairs (possible, impossible twins identical until the event),
  the fraction where the possible video is the less surprising; a tie counts one half (the official
  code counts ties as failures; with continuous scores ties do not happen);
- AUROC: over all videos, the probability that an impossible video is more surprising than a
  possible one (ties one half): ranks, no threshold;
- absolute accuracy: one threshold for all videos, at the 90th percentile of the possible videos'
  scores (the official calibration); a possible video is right strictly below it, an impossible one
  strictly above it, so a video exactly at the threshold is an error either way (as in the official
  code; the threshold is itself a possible video's score, so even separable data stays below 100 %).

- quadruplet accuracy (IntPhys's relative test): over matched quadruplets - two pairs of one scene,
  e.g. an object that passes behind an occluder / vanishes there, and nothing there / an object that
  appears from it - the fraction where the two possible movies together are less surprising than the
  two impossible ones (ties one half). What is visible cancels in the sums (over the four movies the
  object is on screen equally long), so a model is not rewarded for being surprised by an object it
  sees, only by one that breaks permanence. With the *mean* over time the cancellation is exact; with
  the max it is not.

- quadruplet margin: how much more surprising the impossible movies of a quadruplet are, as a
  fraction of the possible ones' summed surprise (0.0021 = 0.21 %), averaged over quadruplets. The
  accuracy says how consistent an effect is, the margin how large (a margin of 0.01 at 80 % accuracy:
  a small effect that is nearly always there).

All take plain sequences of floats and return floats (accuracies in [0, 1]); grouping by violation
type is :func:`pair_metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def relative_accuracy(possible: Sequence[float], impossible: Sequence[float]) -> float:
    """Fraction of pairs i with possible[i] < impossible[i] (ties: 0.5)."""
    p, q = np.asarray(possible, dtype=np.float64), np.asarray(impossible, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1 or p.size == 0:
        raise ValueError(f"relative accuracy needs two equal, non-empty lists of pair scores, got {p.shape} / {q.shape}")
    return float(np.mean((p < q) + 0.5 * (p == q)))


def auroc(possible: Sequence[float], impossible: Sequence[float]) -> float:
    """Area under the ROC curve of "impossible" scored by surprise (Mann-Whitney U / (n m), ties 0.5)."""
    from scipy.stats import rankdata

    p, q = np.asarray(possible, dtype=np.float64), np.asarray(impossible, dtype=np.float64)
    if p.size == 0 or q.size == 0:
        raise ValueError("AUROC needs at least one possible and one impossible video")
    ranks = rankdata(np.concatenate([p, q]))  # average ranks for ties
    u = ranks[p.size:].sum() - q.size * (q.size + 1) / 2
    return float(u / (p.size * q.size))


def absolute_accuracy(possible: Sequence[float], impossible: Sequence[float], quantile: float = 0.9) -> float:
    """Accuracy of one threshold at the ``quantile`` of the possible scores (official: the score at
    index ceil(0.9 n) of the sorted possible scores; clamped here to the last, where the official code
    fails for n < 10). As in facebookresearch/jepa-intuitive-physics ``compute_metrics``
    (``(data1 < thresh).sum() + (data2 > thresh).sum()``), both comparisons are strict: the possible
    video that sets the threshold counts as an error, so published numbers stay comparable (e.g. 10
    possible scores 0..9 below 10 impossible ones: 19 / 20, not 1)."""
    p, q = np.sort(np.asarray(possible, dtype=np.float64)), np.asarray(impossible, dtype=np.float64)
    if p.size == 0 or q.size == 0:
        raise ValueError("absolute accuracy needs at least one possible and one impossible video")
    thresh = p[min(int(np.ceil(quantile * p.size)), p.size - 1)]
    return float(((p < thresh).sum() + (q > thresh).sum()) / (p.size + q.size))


def quadruplet_accuracy(possible_sums: Sequence[float], impossible_sums: Sequence[float]) -> float:
    """Fraction of quadruplets whose two possible movies' summed surprise is below the two impossible
    ones' (ties: 0.5): :func:`relative_accuracy` on the per-quadruplet sums."""
    return relative_accuracy(possible_sums, impossible_sums)


def quadruplet_margin(possible_sums: Sequence[float], impossible_sums: Sequence[float]) -> float:
    """Mean over quadruplets of (impossible sum - possible sum) / possible sum (surprise is a distance,
    so the sums are positive; a zero possible sum is refused)."""
    p, q = np.asarray(possible_sums, dtype=np.float64), np.asarray(impossible_sums, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1 or p.size == 0:
        raise ValueError(f"the margin needs two equal, non-empty lists of sums, got {p.shape} / {q.shape}")
    if (p <= 0).any():
        raise ValueError("the margin needs positive possible sums (surprise is a distance)")
    return float(np.mean((q - p) / p))


def _quadruplets(pairs: Sequence[dict], score: str, context: int) -> dict | None:
    """{"overall": {"quadruplet_accuracy", "margin", "quadruplets"}, "per_type": {type: ...}} over the pairs whose
    "quadruplet" id names exactly two of them (type: the violation, or both joined by "+"); None
    when there is none."""
    by_id: dict[str, list[dict]] = {}
    for pair in pairs:
        if pair.get("quadruplet"):
            by_id.setdefault(pair["quadruplet"], []).append(pair)
    quads = [two for two in by_id.values() if len(two) == 2]
    if not quads:
        return None

    def sums(items, side):
        return [sum(p[side]["scores"][score][context] for p in two) for two in items]

    def one(items):
        p, q = sums(items, "possible"), sums(items, "impossible")
        # a zero possible sum (a predictor exact on both possible movies) leaves no margin: None, not a failed run
        return {"quadruplet_accuracy": quadruplet_accuracy(p, q), "margin": quadruplet_margin(p, q) if min(p) > 0 else None,
                "quadruplets": len(items)}

    types: dict[str, list] = {}
    for two in quads:
        types.setdefault("+".join(sorted({p["violation"] for p in two})), []).append(two)
    return {"overall": one(quads), "per_type": {t: one(items) for t, items in sorted(types.items())}}


def pair_metrics(pairs: Sequence[dict], score: str = "max", context: int = 0) -> dict:
    """Metrics overall and per violation type.

    ``pairs``: [{"violation": str, "possible": {"scores": {"max": [per context], ...}}, "impossible":
    {...}, "quadruplet": id or None (optional)}]. Returns {"overall": {...}, "per_violation": {type:
    {...}}, "quadruplets": ...}, each entry {"relative_accuracy", "auroc", "absolute_accuracy",
    "pairs"}; "quadruplets" as :func:`_quadruplets` (None without matched quadruplets)."""
    groups: dict[str, list[dict]] = {}
    for pair in pairs:
        groups.setdefault(pair["violation"], []).append(pair)

    def one(items: Sequence[dict]) -> dict:
        p = [it["possible"]["scores"][score][context] for it in items]
        q = [it["impossible"]["scores"][score][context] for it in items]
        return {"relative_accuracy": relative_accuracy(p, q), "auroc": auroc(p, q),
                "absolute_accuracy": absolute_accuracy(p, q), "pairs": len(items)}

    if not pairs:
        raise ValueError("no pairs to score")
    return {"overall": one(pairs), "per_violation": {v: one(items) for v, items in sorted(groups.items())},
            "quadruplets": _quadruplets(pairs, score, context)}


__all__ = ["absolute_accuracy", "auroc", "pair_metrics", "quadruplet_accuracy", "quadruplet_margin",
           "relative_accuracy"]
