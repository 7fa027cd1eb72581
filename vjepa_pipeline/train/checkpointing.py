"""Periodic, atomic checkpoints in the run directory.

``checkpoints/step_<10 digits>/`` holds ``model.ckpt`` (a Lightning file, or a DeepSpeed directory)
and ``data_state/rank_<r>.json`` (each rank's loader position). Everything is written into a
hidden temporary directory first; rank 0 renames it into place, then rewrites ``last`` (a small
text file naming the checkpoint) atomically, then prunes old checkpoints. A crash at any moment
leaves ``last`` pointing at a complete checkpoint.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import lightning as L
import torch.distributed as dist

from ..utils.atomic import atomic_write_text, write_json

STEP_DIGITS = 10


def step_dir_name(step: int) -> str:
    return f"step_{step:0{STEP_DIGITS}d}"


def read_last(run_dir: Path) -> Path | None:
    """The checkpoint directory ``last`` names, if it exists and is complete."""
    last = run_dir / "last"
    if not last.exists():
        return None
    ckpt = run_dir / "checkpoints" / last.read_text().strip()
    return ckpt if (ckpt / "model.ckpt").exists() else None


def _barrier(trainer: L.Trainer) -> None:
    if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
        trainer.strategy.barrier("vjepa-checkpoint")


class RunCheckpointer(L.Callback):
    def __init__(self, run_dir: Path, every_steps: int, every_minutes: float | None, keep_last: int):
        self.run_dir = Path(run_dir)
        self.every_steps, self.every_minutes, self.keep_last = every_steps, every_minutes, keep_last
        self._last_time = time.monotonic()
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._last_step or step == 0:
            return
        due = step % self.every_steps == 0 or step >= trainer.max_steps
        if self.every_minutes is not None:
            # Ranks must agree: rank 0's clock decides and is broadcast.
            timed = [time.monotonic() - self._last_time >= 60 * self.every_minutes]
            if trainer.world_size > 1 and dist.is_initialized():
                dist.broadcast_object_list(timed, src=0)
            due = due or timed[0]
        if due and step > self._last_step and self._completed_step(pl_module, step):
            self.save(trainer, pl_module, step)

    @staticmethod
    def _completed_step(pl_module, step: int) -> bool:
        """Only save right after an optimizer step (not between micro-batches)."""
        return getattr(pl_module, "step_record", {}).get("step") == step

    def save(self, trainer: L.Trainer, pl_module, step: int) -> Path:
        name = step_dir_name(step)
        ckpt_root = self.run_dir / "checkpoints"
        tmp = ckpt_root / f".tmp_{name}"
        final = ckpt_root / name
        if trainer.is_global_zero:
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "data_state").mkdir(parents=True, exist_ok=True)
        _barrier(trainer)
        stream_state = getattr(trainer.datamodule, "stream_state", None)
        state = stream_state.state_dict() if stream_state is not None else {}
        (tmp / "data_state").mkdir(parents=True, exist_ok=True)
        write_json(tmp / "data_state" / f"rank_{trainer.global_rank}.json", state, newline=False)
        trainer.save_checkpoint(tmp / "model.ckpt")  # collective under DeepSpeed / FSDP
        _barrier(trainer)
        if trainer.is_global_zero:
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            atomic_write_text(self.run_dir / "last", name + "\n")
            self._prune(ckpt_root, keep=name)
        _barrier(trainer)
        pl_module.last_checkpoint = str(final)
        self._last_step = step
        self._last_time = time.monotonic()
        return final

    def _prune(self, root: Path, keep: str) -> None:
        done = sorted(p for p in root.glob("step_*") if p.is_dir())
        for old in done[: max(0, len(done) - self.keep_last)]:
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob(".tmp_step_*"):
            if stale.name != f".tmp_{keep}":
                shutil.rmtree(stale, ignore_errors=True)
