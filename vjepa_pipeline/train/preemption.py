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

SIGTERM (``kill <pid>``, ``scancel``, a SLURM time limit without the early signal, a container
stop) takes the same path: flag -> agreed step -> checkpoint -> stop, but never requeues, and
``pretrain`` then raises :class:`Terminated` (the CLI exits non-zero with "SIGTERM at step N;
checkpoint saved: ...; re-run the same command to resume"), so ``vjepa pretrain && vjepa export``
does not carry on. Lightning's own SIGTERM handler (which raises a ``SystemExit`` that exits 0
without a checkpoint) is replaced during training. A SIGTERM is never swallowed: when no optimizer
step completes within ``VJEPA_SIGTERM_GRACE_S`` seconds (default 60) of it (stalled data, a hang),
or a second SIGTERM follows, the process says so and exits at once with 143, keeping the last
committed checkpoint. Node failures and SIGKILL fall back to the last periodic checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist

from . import slurm_job
from .module import TrainingStopped

log = logging.getLogger(__name__)

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM  # 143, what a shell reports for a process killed by SIGTERM


class Terminated(TrainingStopped):
    """Training stopped on SIGTERM (after checkpointing at the agreed step); the message says where."""


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


def _grace_from_env() -> float:
    try:
        return float(os.environ.get("VJEPA_SIGTERM_GRACE_S", "60"))
    except ValueError:
        return 60.0


class TerminationFlag(PreemptionFlag):
    """SIGTERM: a flag like the preemption signal's, plus a watchdog so that it is never swallowed.

    The PreemptionCallback acts on it at the next completed optimizer step and sets ``handled``.
    Until then, if ``grace_s`` pass (data stall, hang) or a second SIGTERM arrives (more than a
    second after the first: the same signal sent to the process group and forwarded is one), the
    process prints why and exits with 143 at once (the last committed checkpoint stays valid).
    Lightning's child processes (``children``) get the signal forwarded, and SIGKILL on a forced exit.
    """

    def __init__(self, grace_s: float | None = None, run_dir: str | os.PathLike | None = None):
        super().__init__(signal.SIGTERM)
        self.grace_s = _grace_from_env() if grace_s is None else float(grace_s)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.step: int | None = None  # the last completed optimizer step (kept by the callback)
        self.handled = False  # the callback acted on it (checkpoint and stop), or training ended
        self.children = None  # callable -> list of Popen (Lightning's launcher), set by the callback
        self.busy = None  # callable -> True while a checkpoint is being written (the grace restarts after it)
        self._busy_until: float | None = None
        self.announce = True  # print the forced-exit line (global rank 0)
        self._done = threading.Event()
        self._watchdog: threading.Thread | None = None

    def install(self) -> bool:
        if not super().install():
            return False
        self.announce = _env_rank_zero()
        self._done.clear()
        self._watchdog = threading.Thread(target=self._watch, name="vjepa-sigterm-watchdog", daemon=True)
        self._watchdog.start()
        return True

    def uninstall(self) -> None:
        self._done.set()
        super().uninstall()

    def reinstall(self) -> None:
        """Take SIGTERM back from whoever replaced the handler (Lightning, at the start of fit)."""
        if self.owner == os.getpid() and threading.current_thread() is threading.main_thread():
            signal.signal(self.signum, self._handle)

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self.owner:
            return  # a forked dataloader worker: the training process handles it
        now = time.time()
        if self.received_at is None:
            self.received_at = now
            self._signal_children(signal.SIGTERM)
        elif now - self.received_at > 1.0 and not self._done.is_set():
            self.force_exit("a second SIGTERM arrived")

    def _watch(self) -> None:
        while not self._done.wait(0.2):
            t = self.received_at
            if t is None or self.handled:
                continue
            now = time.time()
            with contextlib.suppress(Exception):
                if self.busy is not None and self.busy():
                    self._busy_until = now  # a checkpoint is being written: that is progress
                    continue
            if now - max(t, self._busy_until or t) > self.grace_s:
                self.force_exit(f"no training step completed within {self.grace_s:g} s of it "
                                "(stalled data or a hang?)")

    def _signal_children(self, signum) -> None:
        with contextlib.suppress(Exception):  # best effort: a signal handler must not fail
            for proc in (self.children() if self.children else []):
                if proc.poll() is None:
                    proc.send_signal(signum)

    def force_exit(self, why: str) -> None:
        """Exit now with 143, saying why; the last committed checkpoint is what a re-run resumes."""
        if self.announce:
            last = None
            if self.run_dir is not None:
                from .checkpointing import read_last

                try:
                    last = read_last(self.run_dir)
                except Exception:  # noqa: BLE001
                    last = None
            at = f" at step {self.step}" if self.step is not None else ""
            line = (f"vjepa pretrain: stopped by SIGTERM{at} without a new checkpoint: {why}; last checkpoint: "
                    f"{last or 'none'}; re-run the same command to resume\n")
            with contextlib.suppress(Exception):
                sys.stdout.flush()
            os.write(2, line.encode())
        self._signal_children(signal.SIGKILL)
        for pid in _child_pids():  # dataloader workers too: they share the run directory's lock
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        os._exit(SIGTERM_EXIT_CODE)


def _child_pids() -> list[int]:
    """This process's children (Linux /proc; empty elsewhere)."""
    me, pids = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == me:
                pids.append(int(stat.parent.name))
    return pids


def _env_rank_zero() -> bool:
    from .runlock import launched_as_rank_zero

    return launched_as_rank_zero()


class PreemptionCallback(L.Callback):
    """Checks the flag after every optimizer step; on an agreed signal saves and stops the trainer.

    ``result`` is None, or after a preemption ``{"step", "requeued", "message", "checkpoint",
    "signal"}``; call ``finish`` after ``fit`` to requeue.
    """

    def __init__(self, run_dir: str | os.PathLike, flag: PreemptionFlag, max_requeues: int = 10,
                 requeue: bool = True, term: TerminationFlag | None = None):
        self.run_dir = Path(run_dir)
        self.flag = flag
        self.term = term
        self.max_requeues = max_requeues
        self.requeue = requeue
        self.result: dict | None = None
        self._checked_step = -1

    def _agreed_signal(self, trainer) -> int:
        """0: no signal; 1: the preemption signal; 2: SIGTERM (wins: no requeue). The same on every rank."""
        code = 2 if self.term is not None and self.term.raised else 1 if self.flag.raised else 0
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            t = torch.tensor([code], device=trainer.strategy.root_device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            code = int(t.item())
        return code

    def _agreed(self, trainer) -> bool:
        return self._agreed_signal(trainer) > 0

    def on_train_start(self, trainer, pl_module) -> None:
        if self.term is None:
            return
        # Lightning installed its SIGTERM handler just before this hook (it raises a SystemExit that
        # exits 0 without a checkpoint); ours goes back in place. Lightning restores ours after fit.
        self.term.reinstall()
        connector = getattr(trainer, "_signal_connector", None)
        if connector is not None and getattr(connector, "received_sigterm", False):
            connector.received_sigterm = False  # it landed in between: our flag has it too
        launcher = getattr(trainer.strategy, "launcher", None)
        if launcher is not None and hasattr(launcher, "procs"):
            self.term.children = lambda: list(launcher.procs)
        from .checkpointing import RunCheckpointer

        ckpt = next((c for c in trainer.callbacks if isinstance(c, RunCheckpointer)), None)
        if ckpt is not None:
            self.term.busy = lambda: ckpt.saving
        self.term.step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.result is not None or step == self._checked_step:
            return  # already handled, or a later micro-batch of a step that was checked
        if getattr(pl_module, "step_record", {}).get("step") != step:
            return  # the optimizer step is not complete yet (gradient accumulation)
        self._checked_step = step  # the same on every rank: the all-reduce below stays in lockstep
        if self.term is not None:
            self.term.step = step
        code = self._agreed_signal(trainer)
        if not code:
            return
        if self.term is not None:
            self.term.handled = True  # the checkpoint below may take long: no forced exit any more
        if code == 2 and trainer.max_steps and step >= trainer.max_steps:
            return  # the run is complete (its final checkpoint is written): nothing to stop
        from .checkpointing import RunCheckpointer

        ckpt = next((c for c in trainer.callbacks if isinstance(c, RunCheckpointer)), None)
        if ckpt is None:
            raise RuntimeError("PreemptionCallback needs the run's RunCheckpointer callback")
        path = ckpt.run_dir / "checkpoints" / f"step_{step:010d}" if ckpt._last_step == step else \
            ckpt.save(trainer, pl_module, step)  # collective: every rank writes its part
        # Rank 0 decides whether the job will requeue (budget left, under SLURM) and tells the others;
        # the requeue itself runs after fit() returned (``finish``): `scontrol requeue` makes SLURM
        # send SIGTERM at once, which must not land inside Lightning's loop and its collectives.
        if code == 2:  # SIGTERM: stop, never requeue (pretrain raises Terminated after fit)
            self.result = {"step": step, "requeued": False, "message": "stopped by SIGTERM",
                           "checkpoint": str(path), "signal": "SIGTERM"}
            trainer.should_stop = True
            return
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
