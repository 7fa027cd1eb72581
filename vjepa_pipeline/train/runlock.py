"""One training process group per run directory: an advisory lock on ``<run_dir>/lock``.

Global rank 0 takes an exclusive ``flock`` on ``<run_dir>/lock`` before it writes anything to the
run directory and holds it until the run ends; the operating system releases it when the process
dies, so a crash or ``kill -9`` leaves nothing to clean up. The file records the holder (pid, host,
start time, SLURM job) for the refusal message of a second ``vjepa pretrain`` on the same
directory. Other ranks never lock: under ``srun`` / ``torchrun`` rank 0's refusal reaches them in
the first collective (:class:`RunLockCallback`), so they stop instead of waiting for a rank 0 that
left.

A requeued SLURM job (same job id, higher restart count) may find the lock of its own previous,
dead incarnation still held on a network filesystem (NFS keeps a dead client's locks until its
lease expires); it waits up to ``STALE_WAIT_S`` for that lock instead of refusing. A filesystem
without ``flock`` gets one warning and no lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

import lightning as L
import torch.distributed as dist

from ..errors import UsageError
from . import slurm_job

log = logging.getLogger(__name__)

LOCK_NAME = "lock"
STALE_WAIT_S = 180.0  # how long a requeued job waits for the lock of its own previous incarnation
RETRY_S = 2.0


class RunDirInUse(UsageError):
    """Another process trains in this run directory (exit code 2, one line)."""


def launched_as_rank_zero() -> bool:
    """Whether this process is global rank 0, as far as the launcher's environment tells before
    the trainer exists: ``srun`` (SLURM_PROCID), torchrun (RANK) and Lightning's own child
    processes (LOCAL_RANK / NODE_RANK of the processes it starts)."""
    env = os.environ
    if slurm_job.in_srun_task():
        return env.get("SLURM_PROCID", "0") == "0"
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
        if env.get(key, "0") not in ("0", ""):
            return False
    return True


def launched_world_size() -> int:
    """The number of processes an external launcher (srun, torchrun) started for this run (1 when
    the processes are started by Lightning from this one, or for a single process)."""
    env = os.environ
    if slurm_job.in_srun_task():
        return int(env.get("SLURM_NTASKS", "1") or 1)
    return int(env.get("WORLD_SIZE", "1") or 1) if "RANK" in env else 1


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "slurm_job": slurm_job.job_id(), "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)}


class RunLock:
    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`RunDirInUse` naming the holder."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = self._holder(fd)
                if deadline is None and self._own_previous_job(holder):
                    deadline = time.monotonic() + STALE_WAIT_S
                    log.warning("%s is still locked by %s, an earlier run of this SLURM job; waiting up to %.0f s "
                                "for the filesystem to release it", self.run_dir, self.describe(holder), STALE_WAIT_S)
                if deadline is not None and time.monotonic() < deadline:
                    time.sleep(RETRY_S)
                    continue
                os.close(fd)
                raise RunDirInUse(f"run directory {self.run_dir} is in use by {self.describe(holder)}; wait for "
                                  "that run to end (or stop it), or use another name=") from None
            except OSError as exc:
                if exc.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    log.warning("cannot lock %s (%s): this filesystem has no flock; two runs on this directory "
                                "would not be detected", self.path, exc.strerror)
                    os.close(fd)
                    return
                os.close(fd)
                raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(_me()) + "\n").encode(), 0)
        try:
            os.fsync(fd)
        except OSError:
            pass
        self._fd = fd

    def release(self) -> None:
        """Unlock (also for forked children that share the descriptor) and close."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @staticmethod
    def _holder(fd: int) -> dict:
        for _ in range(3):  # the holder may be between truncating and writing its record
            try:
                text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
                if text:
                    record = json.loads(text.splitlines()[0])
                    if isinstance(record, dict):
                        return record
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        return {}

    @staticmethod
    def describe(holder: dict) -> str:
        if not holder.get("pid"):
            return "another process (no holder record yet)"
        text = f"pid {holder['pid']} on host {holder.get('host', '?')} (started {holder.get('started', '?')}"
        if holder.get("slurm_job"):
            text += f", SLURM job {holder['slurm_job']}"
        return text + ")"

    @staticmethod
    def _own_previous_job(holder: dict) -> bool:
        """The holder is an earlier incarnation of this SLURM job (a requeue; it cannot be alive), or
        a process of this host that no longer exists."""
        me = _me()
        if me["slurm_job"] and holder.get("slurm_job") == me["slurm_job"]:
            return int(holder.get("restart_count") or 0) < me["restart_count"]
        if holder.get("host") == me["host"] and holder.get("pid"):
            try:
                os.kill(int(holder["pid"]), 0)
            except ProcessLookupError:
                return True
            except (OSError, ValueError):
                return False
        return False


class RunLockCallback(L.Callback):
    """Passes rank 0's refusal (``None`` when rank 0 holds the lock) to every rank in the first
    hook after the process group exists, so all ranks of an ``srun`` / ``torchrun`` launch stop
    together, before anything is restored or written."""

    def __init__(self, refusal: str | None = None):
        self.refusal = refusal

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        box = [self.refusal]
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            dist.broadcast_object_list(box, src=0)
        if box[0]:
            raise RunDirInUse(box[0])
