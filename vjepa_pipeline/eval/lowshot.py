"""Low-shot subsets of a labelled training set, and mean/std summaries over seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class LowShotSplit:
    indices: torch.Tensor  # sorted LongTensor of selected rows
    k: int
    seed: int
    per_class: dict[int, int]  # class -> number of samples taken
    short_classes: dict[int, int] = field(
        default_factory=dict
    )  # classes with fewer than k samples -> how many


def low_shot_split(labels: torch.Tensor, k: int, seed: int, num_classes: int | None = None) -> LowShotSplit:
    """Exactly ``k`` samples of every class (all of a class that has fewer, recorded in
    ``short_classes``; with ``num_classes``, absent classes are recorded with 0). Deterministic for a
    seed: each class draws its own random permutation from one generator seeded with ``seed``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    labels = torch.as_tensor(labels).cpu().long()
    g = torch.Generator().manual_seed(int(seed))
    classes = range(num_classes) if num_classes is not None else labels.unique().tolist()
    picked, per_class, short = [], {}, {}
    for c in classes:
        members = (labels == c).nonzero().flatten()
        take = members[torch.randperm(len(members), generator=g)[:k]]
        picked.append(take)
        per_class[int(c)] = len(take)
        if len(take) < k:
            short[int(c)] = len(take)
    idx = torch.cat(picked).sort().values if picked else torch.empty(0, dtype=torch.long)
    return LowShotSplit(indices=idx, k=int(k), seed=int(seed), per_class=per_class, short_classes=short)


def low_shot_indices(labels: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Sorted LongTensor of k samples per class (see :func:`low_shot_split` for what is recorded
    about classes with fewer than k samples)."""
    return low_shot_split(labels, k, seed).indices


def summarize(values) -> dict:
    """{"mean", "std", "runs" (count), "values"}: std is the sample standard deviation (n - 1),
    0.0 for a single run."""
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "runs": 0, "values": []}
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "runs": n, "values": vals}
