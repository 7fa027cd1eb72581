"""The `vjepa` command as a user runs it: help, model-info, config validation, the objective run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def vjepa(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "vjepa_pipeline", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_help_lists_commands():
    out = vjepa("--help")
    assert out.returncode == 0
    for cmd in ("objective", "model-info", "config"):
        assert cmd in out.stdout
    assert vjepa("model-info", "--help").returncode == 0


def test_console_script_is_installed_when_the_package_is():
    exe = shutil.which("vjepa") or (Path(sys.executable).parent / "vjepa")
    if not Path(exe).exists():
        pytest.skip("package not pip-installed in this interpreter (make test installs it)")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "V-JEPA" in out.stdout


def test_model_info_large_matches_vit_l():
    out = vjepa("model-info", "--size", "large")
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("large"))
    assert "303.9M" in row and "1024" in row and "1568" in row


def test_model_info_all_sizes():
    out = vjepa("model-info", "--all")
    assert out.returncode == 0, out.stderr
    for size, params in [("tiny", "5.6M"), ("base", "86.2M"), ("huge", "631.6M"), ("giant_v2", "1012.2M")]:
        assert any(line.startswith(size) and params in line for line in out.stdout.splitlines()), size


def test_config_errors_exit_2_with_one_clear_line_and_no_traceback():
    out = vjepa("config", "--config", "configs/pretrain/debug.yaml", "optim.lrr=1e-3")
    assert out.returncode == 2
    assert "optim.lrr" in out.stderr and "optim.lr" in out.stderr
    assert "Traceback" not in out.stderr
    out = vjepa("config", "--config", "configs/pretrain/debug.yaml", "data.crop_size=30")
    assert out.returncode == 2 and "data.crop_size" in out.stderr and "Traceback" not in out.stderr
    out = vjepa("config", "--config", "no/such.yaml")
    assert out.returncode == 2 and "no/such.yaml" in out.stderr


def test_config_prints_a_resolved_config_that_reloads(tmp_path):
    out = vjepa("config", "--config", "configs/pretrain/debug.yaml", "optim.lr=3e-4")
    assert out.returncode == 0, out.stderr
    dumped = tmp_path / "resolved.yaml"
    dumped.write_text(out.stdout)
    again = vjepa("config", "--config", str(dumped))
    assert again.returncode == 0 and again.stdout == out.stdout


def test_output_into_a_closed_pipe_is_not_a_traceback():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "vjepa_pipeline", "config", "--config", "configs/pretrain/debug.yaml"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader leaves before the command writes (like `| head -0`; imports take ~1 s)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in err, err


def test_objective_runs_and_reports_falling_loss():
    out = vjepa("objective", "--steps", "12")
    assert out.returncode == 0, out.stderr
    assert "JEPA objective 'debug'" in out.stdout
    summary = out.stdout.strip().splitlines()[-1]
    first, last = [float(x) for x in summary.split(":")[1].split("(")[0].split("->")]
    assert last < first
    bad = vjepa("objective", "--steps", "0")
    assert bad.returncode == 2 and "--steps" in bad.stderr
