"""Preemption and time limits: signal -> flag -> agreed step -> collective checkpoint -> requeue.

SLURM sends ``launch.signal`` (USR2) to every process of the job's tasks some time before the
time limit (``--signal=USR2@<delay>``), and ``scancel --signal=USR2`` does the same for a
preemption. The handler only sets a flag, and only in the training process (dataloader workers
inherit it through fork and ignore the signal). After every optimizer step the ranks all-reduce
the flag (max), so all of them stop at the same step; all ranks then write the checkpoint
collectively through the run's RunCheckpointer, global rank 0 requeues the job
(``scontrol requeue``, bounded by ``launch.max_requeues``) and the trainer stops cleanly. The
requeued job resumes from ``last`` in the same run directory (and the same wandb run).

Outside SLURM the same signal gives a clean checkpoint-and-stop (``kill -USR2 <pid>``).
Node failures and plain SIGTERM/SIGKILL fall back to the last periodic checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist

from . import slurm_job

log = logging.getLogger(__name__)


def signal_number(name: str) -> signal.Signals:
    return signal.Signals["SIG" + name.upper().removeprefix("SIG")]


class PreemptionFlag:
    """A signal handler that records the signal in the installing process only."""

    def __init__(self, signum: int = signal.SIGUSR2):
        self.signum = signum
        self.owner: int | None = None
        self.received_at: float | None = None
        self._previous = None

    @property
    def raised(self) -> bool:
        return self.received_at is not None

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False  # signal handlers can only be set from the main thread
        self.owner = os.getpid()
        self._previous = signal.signal(self.signum, self._handle)
        return True

    def uninstall(self) -> None:
        if self._previous is not None and self.owner == os.getpid():
            signal.signal(self.signum, self._previous)
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self.owner:
            return  # a forked dataloader worker: the training process handles it
        if self.received_at is None:
            self.received_at = time.time()


class PreemptionCallback(L.Callback):
    """Checks the flag after every optimizer step; on an agreed signal saves and stops the trainer.

    ``result`` is None, or after a preemption ``{"step", "requeued", "message", "checkpoint",
    "signal"}``; call ``finish`` after ``fit`` to requeue.
    """

    def __init__(self, run_dir: str | os.PathLike, flag: PreemptionFlag, max_requeues: int = 10,
                 requeue: bool = True):
        self.run_dir = Path(run_dir)
        self.flag = flag
        self.max_requeues = max_requeues
        self.requeue = requeue
        self.result: dict | None = None
        self._checked_step = -1

    def _agreed(self, trainer) -> bool:
        raised = self.flag.raised
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            t = torch.tensor([1 if raised else 0], device=trainer.strategy.root_device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            raised = bool(t.item())
        return raised

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.result is not None or step == self._checked_step:
            return  # already handled, or a later micro-batch of a step that was checked
        if getattr(pl_module, "step_record", {}).get("step") != step:
            return  # the optimizer step is not complete yet (gradient accumulation)
        self._checked_step = step  # the same on every rank: the all-reduce below stays in lockstep
        if not self._agreed(trainer):
            return
        from .checkpointing import RunCheckpointer

        ckpt = next((c for c in trainer.callbacks if isinstance(c, RunCheckpointer)), None)
        if ckpt is None:
            raise RuntimeError("PreemptionCallback needs the run's RunCheckpointer callback")
        path = ckpt.run_dir / "checkpoints" / f"step_{step:010d}" if ckpt._last_step == step else \
            ckpt.save(trainer, pl_module, step)  # collective: every rank writes its part
        # Rank 0 decides whether the job will requeue (budget left, under SLURM) and tells the others;
        # the requeue itself runs after fit() returned (``finish``): `scontrol requeue` makes SLURM
        # send SIGTERM at once, which must not land inside Lightning's loop and its collectives.
        plan = (False, "requeue disabled")
        if trainer.is_global_zero and self.requeue:
            plan = slurm_job.can_requeue(self.run_dir, self.max_requeues)
        if trainer.world_size > 1 and dist.is_initialized():
            box = [plan]
            dist.broadcast_object_list(box, src=0)
            plan = box[0]
        self.result = {"step": step, "requeued": plan[0], "message": plan[1], "checkpoint": str(path),
                       "signal": signal.Signals(self.flag.signum).name}
        if trainer.is_global_zero:
            log.warning("preempted at step %d: checkpoint %s; %s", step, path, plan[1])
        trainer.should_stop = True

    def finish(self, is_global_zero: bool) -> dict | None:
        """After fit(): global rank 0 requeues the job when that was planned. Returns ``result``."""
        r = self.result
        if r is not None and r["requeued"] and is_global_zero:
            r["requeued"], r["message"] = slurm_job.requeue(self.run_dir, r["step"], self.max_requeues,
                                                            reason=r["signal"])
        return r
