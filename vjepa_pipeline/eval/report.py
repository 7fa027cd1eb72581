"""Evaluation report: ``results.json``, ``report.md`` and PNG plots from a suite's results dict.

Layout written by :func:`write_all` under ``out_dir``::

    results.json                      the results dict (sorted keys, NaN/inf -> null)
    report.md                         human-readable summary (links to the PNGs below)
    plots/confusion_<dataset>.png     row-normalised confusion matrix
    plots/curves_<dataset>.png        probe learning curves (chosen head bold)
    plots/comparison.png              encoders side by side (only when ``comparisons`` is present)

Accuracies in the results dict are fractions in [0, 1]; the report shows them as percentages.
Every file is written atomically (temporary file in the same folder, then ``os.replace``), so a
reader never sees a half-written report or image.

The parts live in :mod:`.results` (typed records, ``results.json``), :mod:`.plots` (the PNGs) and
:mod:`.markdown` (``report.md``); this module writes them all, in that order, and re-exports their
public functions so ``report.write_results`` / ``report.plot_confusion`` ... keep working.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .markdown import REPORT_NAME, head_labels, render_report, write_report
from .plots import (
    PLOTS_DIR,
    comparison_png,
    confusion_png,
    curves_png,
    plot_comparison,
    plot_confusion,
    plot_learning_curve,
)
from .results import RESULTS_NAME, SuiteResults, chosen_index, is_optimistic, present, write_results

__all__ = [
    "PLOTS_DIR", "REPORT_NAME", "RESULTS_NAME", "chosen_index", "comparison_png", "confusion_png", "curves_png",
    "is_optimistic", "plot_comparison", "plot_confusion", "plot_learning_curve", "render_report", "write_all",
    "write_report", "write_results",
]


def write_all(out_dir: str | os.PathLike, results: Mapping[str, Any] | SuiteResults) -> list[Path]:
    """results.json, the plots (confusion + curves per dataset where present, comparison where
    present), then report.md linking them. Returns the written paths in that order."""
    if isinstance(results, SuiteResults):
        results = results.to_dict()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [write_results(out_dir, results)]
    for name, ds in (results.get("datasets") or {}).items():
        ds = ds or {}
        if present(ds.get("confusion")):
            written.append(
                plot_confusion(
                    confusion_png(out_dir, name), ds["confusion"], ds.get("class_names"), title=str(name)
                )
            )
        curves = ds.get("curves") or {}
        if any(present(curves.get(k)) for k in ("train_loss", "holdout_top1", "val_top1")):
            written.append(
                plot_learning_curve(
                    curves_png(out_dir, name),
                    curves,
                    chosen_index(ds),
                    head_labels=head_labels(ds),
                    title=f"{name}: probe learning curves",
                )
            )
    if results.get("comparisons"):
        written.append(plot_comparison(comparison_png(out_dir), results["comparisons"]))
    written.append(write_report(out_dir, results))
    return written
