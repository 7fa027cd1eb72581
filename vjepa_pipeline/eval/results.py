"""The results of an evaluation suite: typed records, and ``results.json`` (their JSON form).

:func:`vjepa_pipeline.eval.runner.run_suite` builds a :class:`SuiteResults` (one
:class:`DatasetResult` per dataset) and writes its :meth:`SuiteResults.to_dict` form; the report
(:mod:`.markdown`, :mod:`.plots`) reads that plain dict, which is also what ``results.json`` holds,
so a report can be rendered from any results dict (a file read back, or one built by hand).
Accuracies are fractions in [0, 1]. The helpers at the end read a results dict tolerantly.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils.atomic import jsonable, write_json

RESULTS_NAME = "results.json"


# --------------------------------------------------------------------------------------------------
# typed records
# --------------------------------------------------------------------------------------------------


@dataclass
class LowShotResult:
    """Top-1 over seeds with k labelled clips per class."""

    mean: float
    std: float
    runs: list[float]  # one top-1 per seed

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "runs": self.runs}



@dataclass
class DatasetResult:
    """One dataset of a suite: protocol, data sizes, the selected probe's metrics on val."""

    protocol: dict[str, Any]  # clip / test-view settings and the ProbeConfig fields its kind reads
    num_train: int
    num_val: int
    num_classes: int
    class_names: list[str]
    failed_videos: int
    top1: float
    top5: float
    mean_class_acc: float
    per_class: list[float | None]  # None: no val clips of that class
    confusion: list[list[int]]  # [true class][predicted class] counts
    selected: dict[str, float] | None  # {lr, wd} (knn: {k, temperature})
    selection_rule: str | None
    low_shot: dict[str, LowShotResult] = field(default_factory=dict)  # keyed by k (as text)
    # written when the probes were trained; absent after a --val-only re-evaluation
    grid: list[dict[str, Any]] | None = None  # [{lr, wd, holdout_top1, val_top1}] in grid order
    curves: dict[str, list] | None = None  # epoch, train_loss, holdout_top1, val_top1: [epoch][head]
    probe_checkpoint: str | None = None  # relative to the output folder

    def to_dict(self) -> dict[str, Any]:
        out = {
            "protocol": self.protocol,
            "num_train": self.num_train,
            "num_val": self.num_val,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "failed_videos": self.failed_videos,
            "top1": self.top1,
            "top5": self.top5,
            "mean_class_acc": self.mean_class_acc,
            "per_class": self.per_class,
            "confusion": self.confusion,
            "low_shot": {k: v.to_dict() for k, v in self.low_shot.items()},
            "selected": self.selected,
            "selection_rule": self.selection_rule,
        }
        optional = {"grid": self.grid, "curves": self.curves, "probe_checkpoint": self.probe_checkpoint}
        return out | {k: v for k, v in optional.items() if v is not None}



@dataclass
class EncoderInfo:
    source: str  # what was given (run folder, checkpoint file, hub name ...)
    kind: str  # run | native | official | hf | random-init ...
    fingerprint: str
    params: int
    layers: list[int]  # blocks whose features were concatenated

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "fingerprint": self.fingerprint, "params": self.params,
                "layers": self.layers}


@dataclass
class SuiteResults:
    """Everything ``results.json`` holds for one encoder on one suite."""

    suite: str
    encoder: EncoderInfo
    datasets: dict[str, DatasetResult] = field(default_factory=dict)
    created_by: str = "vjepa-pipeline"
    comparisons: list[dict[str, Any]] | None = None  # [{label, dataset, top1, top1_std, runs}]

    def to_dict(self) -> dict[str, Any]:
        out = {"suite": self.suite, "created_by": self.created_by, "encoder": self.encoder.to_dict(),
               "datasets": {name: ds.to_dict() for name, ds in self.datasets.items()}}
        if self.comparisons is not None:
            out["comparisons"] = self.comparisons
        return out



# --------------------------------------------------------------------------------------------------
# results.json
# --------------------------------------------------------------------------------------------------


def write_results(out_dir: str | os.PathLike, results: Mapping[str, Any] | SuiteResults) -> Path:
    """Write ``<out_dir>/results.json`` atomically: sorted keys, plain floats, NaN/inf as null."""
    if isinstance(results, SuiteResults):
        results = results.to_dict()
    return write_json(Path(out_dir) / RESULTS_NAME, jsonable(results), sort_keys=True, indent=2,
                      allow_nan=False, ensure_ascii=False)


# --------------------------------------------------------------------------------------------------
# reading a results dict (tolerant: missing keys, NaN, numpy values)
# --------------------------------------------------------------------------------------------------


def num(x: Any) -> float | None:
    """A finite float, or None for missing / NaN / inf / non-numbers."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def present(x: Any) -> bool:
    """Not None and not empty (works for lists and numpy arrays alike)."""
    if x is None:
        return False
    try:
        return len(x) > 0
    except TypeError:
        return True


def is_optimistic(ds: Mapping[str, Any]) -> bool:
    """True when the reported head was picked on the split it is reported on ("best on val")."""
    protocol = ds.get("protocol") or {}
    if str(protocol.get("selection", "")).lower() == "best_on_val":
        return True
    rule = re.sub(r"[\s_-]+", " ", str(ds.get("selection_rule", "")).lower())
    return "best on val" in rule or ("val" in rule and "best" in rule and "held" not in rule)


def chosen_index(ds: Mapping[str, Any]) -> int | None:
    """Index of the selected head in ``grid`` (and in the per-head curves), or None if unknown."""
    sel = ds.get("selected") or {}
    if isinstance(sel.get("index"), int):
        return sel["index"]
    lr, wd = num(sel.get("lr")), num(sel.get("wd"))
    if lr is None or wd is None:
        return None
    for i, g in enumerate(ds.get("grid") or []):
        glr, gwd = num(g.get("lr")), num(g.get("wd"))
        if (
            glr is not None
            and gwd is not None
            and math.isclose(glr, lr, rel_tol=1e-6)
            and math.isclose(gwd, wd, rel_tol=1e-6, abs_tol=1e-12)
        ):
            return i
    return None
