"""Faults injected into `vjepa pretrain` (issue "Reliability", items 5-8 and 13): corrupt checkpoint
state, two runs on one run directory, a kill between the checkpoint commit and the metrics line,
SIGTERM (mid-run and during a data stall), and the per-save log noise.

Debug recipe on the CPU, a few steps each; the signal tests run `vjepa pretrain` in a subprocess
through a small driver that slows down or stalls the generated data (bounded by timeouts).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from payloads import Payload

from vjepa_pipeline.config import dump_config, load_config
from vjepa_pipeline.errors import CheckpointError
from vjepa_pipeline.train import checkpointing
from vjepa_pipeline.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "configs/pretrain/debug.yaml"
STEP3, STEP6 = "step_0000000003", "step_0000000006"


def cfg_for(run_root: Path, *overrides):
    return load_config(DEBUG, [f"train.run_dir={run_root}", "train.max_steps=6", "train.checkpoint_every_steps=3",
                               "train.keep_last=3", "logging.log_every_steps=1", *overrides])


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def steps(run: Path) -> list[int]:
    return [r["step"] for r in metrics(run)]


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def six_steps(tmp_path_factory):
    """One 6-step run (checkpoints at steps 3 and 6), and what Lightning's checkpoint code logged."""
    root = tmp_path_factory.mktemp("six")
    records = Records()
    lightning_log = logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector")
    lightning_log.addHandler(records)
    try:
        pretrain(cfg_for(root), progress=False)
    finally:
        lightning_log.removeHandler(records)
    return root / "debug", records.messages


def copy_run(six_steps, tmp_path: Path, *overrides):
    """A copy of the 6-step run under ``tmp_path`` and the config that resumes it."""
    run = tmp_path / "debug"
    shutil.copytree(six_steps[0], run)
    (run / "lock").unlink(missing_ok=True)
    cfg = cfg_for(tmp_path, *overrides)
    dump_config(cfg_for(tmp_path), run / "config.yaml")  # the copy lives under another train.run_dir
    return run, cfg


def resume_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "vjepa_pipeline.train.checkpointing" and r.levelno == logging.WARNING]


# ------------------------------------------------------------------ 5. corrupt checkpoint state
def _truncate_model_file(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncate_model(ckpt_dir: Path) -> None:
    _truncate_model_file(ckpt_dir / "model.ckpt")


def _garble_data_state(ckpt_dir: Path) -> None:
    (ckpt_dir / "data_state/rank_0.json").write_text('{"step": 6, "ro')


@pytest.mark.parametrize("damage", [_truncate_model, _garble_data_state], ids=["truncated-model", "bad-data-state"])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(six_steps, tmp_path, caplog, damage):
    run, cfg = copy_run(six_steps, tmp_path)
    damage(run / "checkpoints" / STEP6)
    with caplog.at_level(logging.WARNING, logger="vjepa_pipeline.train.checkpointing"):
        summary = pretrain(cfg, progress=False)
    assert summary["resumed_from"].endswith(STEP3) and summary["global_step"] == 6
    (warning,) = resume_warnings(caplog)  # one line, naming what was skipped and where it resumed
    assert STEP6 in warning and STEP3 in warning and "\n" not in warning
    assert steps(run) == [1, 2, 3, 4, 5, 6]
    for a, b in zip(metrics(six_steps[0]), metrics(run)):  # steps 4-6 trained again, identically
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6)
    assert (run / "last").read_text().strip() == STEP6
    assert checkpointing.checkpoint_problem(run / "checkpoints" / STEP6) is None  # rewritten whole


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00\x81step"], ids=["empty", "not-utf8"])
def test_unreadable_last_resumes_from_the_newest_valid_checkpoint(six_steps, tmp_path, caplog, content):
    run, cfg = copy_run(six_steps, tmp_path, "train.max_steps=8")
    (run / "last").write_bytes(content)
    (run / ".last.k1ll3d.tmp").write_text("step_00")  # a kill inside the atomic write of `last`
    old = metrics(run)
    with caplog.at_level(logging.WARNING, logger="vjepa_pipeline.train.checkpointing"):
        summary = pretrain(cfg, progress=False)
    assert summary["resumed_from"].endswith(STEP6)  # not a restart at step 1
    (warning,) = resume_warnings(caplog)
    assert "'last'" in warning and STEP6 in warning
    assert metrics(run)[:6] == old and steps(run) == list(range(1, 9))  # history kept
    assert (run / "checkpoints" / STEP3).is_dir()  # old checkpoints not overwritten
    assert (run / "last").read_text().strip() == "step_0000000008"
    assert not list(run.glob(".*.tmp"))  # the killed write's temporary is gone


def test_no_valid_checkpoint_refuses_instead_of_wiping_history(six_steps, tmp_path):
    run, cfg = copy_run(six_steps, tmp_path)
    for name in (STEP3, STEP6):
        _truncate_model(run / "checkpoints" / name)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "lock"}
    with pytest.raises(CheckpointError, match=r"no valid checkpoint.*refusing to restart at step 1") as err:
        pretrain(cfg, progress=False)
    assert "\n" not in str(err.value) and STEP6 in str(err.value) and STEP3 in str(err.value)
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "lock"}
    assert after == before  # nothing truncated, rewritten or deleted


def test_a_run_killed_before_its_first_checkpoint_restarts_and_keeps_its_metrics(tmp_path, caplog):
    """A requeued job that was killed before its first checkpoint must start again (refusing would
    fail every requeue), and the earlier attempt's lines are kept, not truncated."""
    run = tmp_path / "debug"
    run.mkdir()
    old = '{"step": 1, "loss": 0.8}\n{"step": 2, "loss": 0.7}\n'
    (run / "metrics.jsonl").write_text(old)
    with caplog.at_level(logging.WARNING):
        summary = pretrain(cfg_for(tmp_path), progress=False)
    assert summary["resumed_from"] is None and steps(run) == list(range(1, 7))
    kept = list(run.glob("metrics.before-restart-*.jsonl"))
    assert len(kept) == 1 and kept[0].read_text() == old
    assert any("no checkpoint was written before the run stopped" in r.getMessage() for r in caplog.records)


def test_deepspeed_checkpoint_directories_are_verified_too(tmp_path):
    """The layout Lightning's DeepSpeed strategy writes (checked on the CPU; training it needs CUDA)."""
    step = tmp_path / STEP6
    tag = step / "model.ckpt" / "checkpoint"
    tag.mkdir(parents=True)
    (step / "model.ckpt" / "latest").write_text("checkpoint")
    (step / "model.ckpt" / "zero_to_fp32.py").write_text("# DeepSpeed's conversion script\n")
    torch.save({"module": {"w": torch.ones(3)}}, tag / "mp_rank_00_model_states.pt")
    torch.save({"optimizer_state_dict": {}}, tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (step / "data_state").mkdir()
    (step / "data_state/rank_0.json").write_text("{}")
    assert checkpointing.checkpoint_problem(step) is None
    _truncate_model_file(tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    assert "zero_pp_rank_0_mp_rank_00_optim_states.pt" in checkpointing.checkpoint_problem(step)
    (step / "model.ckpt" / "latest").write_text("global_step6")
    assert "global_step6" in checkpointing.checkpoint_problem(step)


def test_deepspeed_resume_vets_pickles_like_export(tmp_path, caplog):
    """A DeepSpeed checkpoint whose files reference globals outside ALLOWED_GLOBALS is never handed
    to DeepSpeed's loader: resume skips it (one warning line) for the previous valid checkpoint."""
    run, step5 = tmp_path / "run", "step_0000000005"
    for step_name, payload in ((step5, None), (STEP6, Payload())):
        step = run / "checkpoints" / step_name
        tag = step / "model.ckpt" / "checkpoint"
        tag.mkdir(parents=True)
        (step / "model.ckpt" / "latest").write_text("checkpoint")
        torch.save({"module": {"w": torch.ones(3)}, "client": payload}, tag / "mp_rank_00_model_states.pt")
        torch.save({"optimizer_state_dict": {}}, tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
        (step / "data_state").mkdir()
        (step / "data_state/rank_0.json").write_text("{}")
    (run / "last").write_text(STEP6)
    problem = checkpointing.checkpoint_problem(run / "checkpoints" / STEP6)
    assert problem and "not accepted for safety" in problem and "Payload" in problem
    with caplog.at_level(logging.WARNING):
        assert checkpointing.find_resume_checkpoint(run) == run / "checkpoints" / step5
    assert any("not accepted for safety" in r.getMessage() for r in caplog.records)
    assert not Payload.built


# ------------------------------------------------------------------ 7. kill between commit and metrics line
class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def test_kill_right_after_the_checkpoint_commit_loses_no_metrics_line(tmp_path, monkeypatch):
    real = checkpointing.atomic_write_text

    def commit_then_die(path, text):
        real(path, text)
        if Path(path).name == "last" and text.strip() == STEP3:
            raise Killed

    monkeypatch.setattr(checkpointing, "atomic_write_text", commit_then_die)
    with pytest.raises(Killed):
        pretrain(cfg_for(tmp_path), progress=False)
    monkeypatch.undo()
    run = tmp_path / "debug"
    assert (run / "last").read_text().strip() == STEP3
    summary = pretrain(cfg_for(tmp_path), progress=False)
    assert summary["resumed_from"].endswith(STEP3)
    assert steps(run) == [1, 2, 3, 4, 5, 6]  # the line of step 3 was written before the commit


# ------------------------------------------------------------------ 13. per-save log noise
def test_checkpoint_saves_do_not_log_the_weights_only_default(six_steps):
    run, messages = six_steps
    assert (run / "checkpoints" / STEP3).is_dir() and (run / "checkpoints" / STEP6).is_dir()
    assert not [m for m in messages if "weights_only" in m], messages


# ------------------------------------------------------------------ subprocess runs (6, 8)
DRIVER = """\
import os, sys, time
from vjepa_pipeline.train import data
real = data.synthetic_batch
stall = int(os.environ.get("FAULT_STALL_AT_BATCH", "-1"))
delay = float(os.environ.get("FAULT_BATCH_DELAY_S", "0"))
def batch(clips, g, batch_size, epoch=0):
    if 0 <= stall <= g:
        time.sleep(3600)  # the data never comes
    time.sleep(delay)
    return real(clips, g, batch_size, epoch)
data.synthetic_batch = batch
from vjepa_pipeline.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def start(tmp_path: Path, *overrides, stall_at: int = -1, delay: float = 0.0, grace: float | None = None,
          ) -> subprocess.Popen:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "FAULT_STALL_AT_BATCH": str(stall_at),
           "FAULT_BATCH_DELAY_S": str(delay)}
    if grace is not None:
        env["VJEPA_SIGTERM_GRACE_S"] = str(grace)
    cmd = [sys.executable, str(driver), "pretrain", "--config", str(DEBUG), "--no-progress",
           f"train.run_dir={tmp_path}", "logging.log_every_steps=1", *overrides]
    return subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(proc: subprocess.Popen, run: Path, step: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run / "metrics.jsonl").exists() and any(s >= step for s in steps(run)):
            return
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"pretrain exited with {proc.returncode} before step {step}:\n{err[-3000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no step {step} within {timeout} s")


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"still running {timeout} s after the signal (the signal was swallowed):\n{err[-2000:]}")
    return proc.returncode, out, err


# ------------------------------------------------------------------ 6. two runs on one run directory
@pytest.mark.slow
def test_a_second_run_on_a_busy_run_directory_is_refused_and_a_crash_frees_it(tmp_path):
    run = tmp_path / "debug"
    common = ["train.max_steps=6", "train.checkpoint_every_steps=1"]
    holder = start(tmp_path, *common, stall_at=3)
    try:
        wait_for_step(holder, run, 1)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        second = subprocess.run(
            [sys.executable, "-m", "vjepa_pipeline", "pretrain", "--config", str(DEBUG), "--no-progress",
             f"train.run_dir={tmp_path}", "logging.log_every_steps=1", *common],
            check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
        assert second.returncode == 2, second.stderr[-3000:]
        lines = [line for line in second.stderr.splitlines() if "in use by" in line]
        assert len(lines) == 1, second.stderr[-3000:]
        assert f"run directory {run} is in use by pid {holder.pid} on host {socket.gethostname()} (started " \
            in lines[0]
        assert holder.poll() is None  # the holder was not disturbed
    finally:
        holder.kill()  # SIGKILL: the operating system releases the lock
        holder.communicate()
    summary = pretrain(cfg_for(tmp_path, *common), progress=False)
    assert summary["resumed_from"] is not None and summary["global_step"] == 6
    assert steps(run) == [1, 2, 3, 4, 5, 6]


# ------------------------------------------------------------------ 8. SIGTERM
@pytest.mark.slow
def test_sigterm_checkpoints_exits_nonzero_with_a_message_and_resumes(tmp_path):
    run = tmp_path / "debug"
    proc = start(tmp_path, "train.max_steps=40", "train.checkpoint_every_steps=100", delay=0.3)
    wait_for_step(proc, run, 2)
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc, timeout=120)
    assert code != 0, err[-3000:]
    found = re.search(r"SIGTERM at step (\d+); checkpoint saved: (\S+); re-run the same command to resume", err)
    assert found, err[-3000:]
    step = int(found.group(1))
    assert 2 <= step < 40 and found.group(2).endswith(f"step_{step:010d}")
    assert (run / "last").read_text().strip() == f"step_{step:010d}"
    assert checkpointing.checkpoint_problem(run / "checkpoints" / f"step_{step:010d}") is None
    assert steps(run) == list(range(1, step + 1))
    summary = pretrain(cfg_for(tmp_path, f"train.max_steps={step + 2}", "train.checkpoint_every_steps=100"),
                       progress=False)
    assert summary["resumed_from"].endswith(f"step_{step:010d}") and summary["global_step"] == step + 2
    assert steps(run) == list(range(1, step + 3))


@pytest.mark.slow
def test_sigterm_during_a_data_stall_is_not_swallowed(tmp_path):
    run = tmp_path / "debug"
    proc = start(tmp_path, "train.max_steps=6", "train.checkpoint_every_steps=1", stall_at=3, grace=2)
    wait_for_step(proc, run, 1)
    time.sleep(1.0)  # well inside the stall
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc, timeout=60)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    line = [x for x in err.splitlines() if "stopped by SIGTERM" in x]
    assert len(line) == 1 and "no training step completed within 2 s" in line[0], err[-3000:]
    last = (run / "last").read_text().strip()
    assert f"last checkpoint: {run / 'checkpoints' / last};" in line[0]
    assert torch.load(run / "checkpoints" / last / "model.ckpt", weights_only=True)["global_step"] >= 1


def test_a_requeued_job_waits_for_the_lock_of_its_own_previous_run(tmp_path, monkeypatch):
    """On a network filesystem the lock of a dead, requeued job can outlive it for a while: the next
    run of the same SLURM job waits for it; anyone else is refused at once."""
    import fcntl
    import threading

    from vjepa_pipeline.train import runlock

    monkeypatch.setattr(runlock, "STALE_WAIT_S", 20.0)
    monkeypatch.setattr(runlock, "RETRY_S", 0.1)
    for key in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")

    def hold(restart_count: int) -> int:  # a lock record as the previous run left it
        fd = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": 1, "host": "node-a", "started": "earlier", "slurm_job": "77",
                                  "restart_count": restart_count}).encode(), 0)
        return fd

    fd = hold(0)
    threading.Timer(0.5, os.close, (fd,)).start()  # the filesystem lets go of the dead run's lock
    lock = runlock.RunLock(tmp_path)
    lock.acquire()  # waited instead of refusing
    assert lock.held and json.loads((tmp_path / "lock").read_text())["pid"] == os.getpid()
    lock.release()

    fd = hold(1)  # the same run of the job (two `vjepa pretrain` in one allocation): refused at once
    try:
        with pytest.raises(runlock.RunDirInUse, match=r"in use by pid 1 on host node-a \(started earlier, "
                                                      r"SLURM job 77\)"):
            runlock.RunLock(tmp_path).acquire()
    finally:
        os.close(fd)


@pytest.mark.parametrize("after", [False, True])
def test_sigterm_outside_training_says_so_and_exits_143(after):
    """Before the trainer takes SIGTERM (seconds of imports) or after it gives it back, `vjepa pretrain`
    prints one line and exits 143 at once, not Python's silent default."""
    code = ("import os, signal, time\n"
            "from vjepa_pipeline.cli.pretrain_cmd import SigtermOutsideTraining\n"
            "guard = SigtermOutsideTraining()\n"
            + ("guard.phase = 'after training ended (its checkpoints are kept)'\n" if after else "")
            + "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(30)\nprint('not reached')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 143 and "not reached" not in res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vjepa pretrain: stopped by SIGTERM "), res.stderr
    assert ("after training ended" if after else "during start-up") in lines[0]
