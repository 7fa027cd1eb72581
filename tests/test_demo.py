"""A shortened `vjepa demo` end to end, as a user runs it: every report file exists and the
numbers are sane (accuracies in range, loss finite and lower at the end than at the start)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "demo"
    run = subprocess.run([sys.executable, "-m", "vjepa_pipeline", "demo", "--quick", "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "[5/5] report: done" in run.stdout
    report = out / "report"
    for name in ("report.md", "summary.json", "training_curves.png", "comparison.png", "feature_pca.png",
                 "contact_sheet.png"):
        assert (report / name).exists() and (report / name).stat().st_size > 0, name
    summary = json.loads((report / "summary.json").read_text())
    labels = [row["label"] for row in summary["comparisons"]]
    assert labels == ["pretrained", "random init", "single-frame control"]
    for row in summary["comparisons"]:
        assert all(0.0 <= v <= 1.0 for v in row["runs"])
    for first, last in summary["loss_first_last"].values():
        assert math.isfinite(first) and math.isfinite(last) and last < first
    # Re-running reuses every finished stage.
    again = subprocess.run([sys.executable, "-m", "vjepa_pipeline", "demo", "--quick", "--out", str(out)],
                           env=env, capture_output=True, text=True, timeout=1500)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("reusing") == 3  # the three evaluations of the single quick seed


def test_a_working_folder_with_foreign_files_is_one_line_not_a_traceback(tmp_path, capsys):
    from vjepa_pipeline.cli.main import main

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path), "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no demo dataset" in err and "give a new or empty folder" in err
    assert (tmp_path / "data" / "notes.txt").read_text() == "mine"  # nothing of the user's was touched
