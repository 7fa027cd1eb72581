"""Periodic, atomic checkpoints in the run directory, and the choice of the checkpoint to resume.

``checkpoints/step_<10 digits>/`` holds ``model.ckpt`` (a Lightning file, or a DeepSpeed directory)
and ``data_state/rank_<r>.json`` (each rank's loader position). Everything is written into a
hidden temporary directory first and fsynced; the metrics line of the step is made durable; rank 0
renames the directory into place, then rewrites ``last`` (a small text file naming the checkpoint)
atomically, then prunes old checkpoints. A crash at any moment leaves ``last`` pointing at a
complete checkpoint whose metrics line is on disk.

A resume does not trust ``last`` blindly (:func:`find_resume_checkpoint`): the checkpoint is
verified before use (``model.ckpt`` loads weights-only, the data state parses); an unreadable,
empty or corrupt one is skipped for the newest valid ``step_*`` with one warning line, and a run
directory that has history but no valid checkpoint is refused rather than restarted at step 1.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import zipfile
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist

from ..checkpoint.export import unsafe_pickle_problem
from ..errors import CheckpointError
from ..utils.atomic import atomic_write_text, write_json

log = logging.getLogger(__name__)

STEP_DIGITS = 10
STEP_DIR = re.compile(rf"step_(\d{{{STEP_DIGITS}}})")


def step_dir_name(step: int) -> str:
    return f"step_{step:0{STEP_DIGITS}d}"


def step_of(path: Path) -> int | None:
    m = STEP_DIR.fullmatch(Path(path).name)
    return int(m.group(1)) if m else None


def _read_last_name(run_dir: Path) -> tuple[str | None, str | None]:
    """(the checkpoint name ``last`` holds, why it cannot be used); both None when there is no ``last``."""
    last = Path(run_dir) / "last"
    if not last.exists():
        return None, None
    try:
        raw = last.read_bytes()
    except OSError as exc:
        return None, f"'last' is unreadable ({exc.strerror or exc})"
    try:
        name = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None, "'last' is not UTF-8 text"
    if not name:
        return None, "'last' is empty"
    if step_of(Path(name)) is None:
        return None, f"'last' holds {name[:40]!r}, not a step_<{STEP_DIGITS} digits> name"
    return name, None


def read_last(run_dir: Path) -> Path | None:
    """The checkpoint directory ``last`` names, if ``last`` is readable and its model.ckpt exists
    (no deeper check: see :func:`find_resume_checkpoint`)."""
    name, _ = _read_last_name(Path(run_dir))
    if name is None:
        return None
    ckpt = Path(run_dir) / "checkpoints" / name
    return ckpt if (ckpt / "model.ckpt").exists() else None


# ---------------------------------------------------------------------------------- verification
def _zip_problem(path: Path) -> str | None:
    """Why ``path`` is not an intact torch zip archive (central directory read; cheap)."""
    try:
        if path.stat().st_size == 0:
            return f"{path.name} is empty"
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"{path.name} is truncated or not a torch archive ({type(exc).__name__})"
    if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return f"{path.name} has no data.pkl"
    return None


def _model_file_problem(path: Path) -> str | None:
    problem = _zip_problem(path)
    if problem:
        return problem
    try:  # mmap: the tensors are not read, only the structure and the pickle
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any failure to load means: do not resume from it
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
        return f"{path.name} does not load weights-only ({type(exc).__name__}: {first})"
    return None


def _model_dir_problem(path: Path) -> str | None:
    """A DeepSpeed (``latest`` + tag folder) or other sharded checkpoint directory."""
    latest = path / "latest"
    if latest.is_file():
        try:
            tag = latest.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return "model.ckpt/latest is unreadable"
        if not tag or not (path / tag).is_dir():
            return f"model.ckpt/latest names {tag[:40]!r}, which does not exist"
        if not any((path / tag).glob("*model_states.pt")):
            return f"model.ckpt/{tag} has no *model_states.pt"
    files = [p for p in path.rglob("*") if p.is_file()]
    if not files:
        return "model.ckpt is an empty directory"
    # DeepSpeed unpickles these with weights_only=False on resume: vet them as `vjepa export` does
    for f in files:
        if f.suffix in (".pt", ".ckpt"):
            problem = _zip_problem(f) or unsafe_pickle_problem(f)
            if problem:
                return f"model.ckpt/{f.relative_to(path)}: {problem}"
    return None


def checkpoint_problem(ckpt_dir: Path) -> str | None:
    """Why the checkpoint directory cannot be resumed from, or None when it can."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return "does not exist"
    model = ckpt_dir / "model.ckpt"
    if model.is_dir():
        problem = _model_dir_problem(model)
    elif model.is_file():
        problem = _model_file_problem(model)
    else:
        problem = "has no model.ckpt"
    if problem:
        return problem
    states = ckpt_dir / "data_state"
    if not (states / "rank_0.json").is_file():
        return "has no data_state/rank_0.json"
    for state in sorted(states.glob("rank_*.json")):
        try:
            ok = isinstance(json.loads(state.read_text(encoding="utf-8")), dict)
        except (OSError, UnicodeDecodeError, ValueError):
            ok = False
        if not ok:
            return f"data_state/{state.name} is not a readable JSON object"
    return None


def _has_history(run_dir: Path) -> list[str]:
    """What of a run's history the directory holds (checkpoints, metrics lines)."""
    found = ["'last'"] if (run_dir / "last").exists() else []
    steps = [p for p in (run_dir / "checkpoints").glob("step_*") if p.is_dir()]
    if steps:
        found.append(f"{len(steps)} checkpoint folder(s)")
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size > 0:
        found.append("metrics.jsonl")
    return found


def find_resume_checkpoint(run_dir: Path, warn: bool = True) -> Path | None:
    """The checkpoint directory to resume from: the one ``last`` names when it verifies, else the
    newest valid ``checkpoints/step_*`` (one warning line names what was skipped and why).

    None for a fresh run directory. Raises :class:`CheckpointError` when the directory has history
    (checkpoint folders, ``last`` or metrics lines) but no valid checkpoint: restarting at step 1
    would truncate metrics.jsonl and overwrite the old checkpoints."""
    run_dir = Path(run_dir)
    root = run_dir / "checkpoints"
    name, last_problem = _read_last_name(run_dir)
    skipped = [last_problem] if last_problem else []
    candidates = [root / name] if name else []
    others = sorted((p for p in root.glob("step_*") if p.is_dir() and step_of(p) is not None),
                    key=step_of, reverse=True)
    candidates += [p for p in others if p.name != name]
    for ckpt in candidates:
        problem = checkpoint_problem(ckpt)
        if problem is None:
            if skipped and warn:
                log.warning("resuming from %s; skipped: %s", ckpt, "; ".join(skipped))
            return ckpt
        skipped.append(f"{ckpt.name} {problem}")
    history = _has_history(run_dir)
    if history == ["metrics.jsonl"]:  # killed before its first checkpoint: a restart, nothing to lose
        if warn:
            log.warning("%s: no checkpoint was written before the run stopped; restarting at step 1 "
                        "(the earlier attempt's metrics.jsonl is kept beside the new one)", run_dir)
        return None
    if history:
        what = "; ".join(skipped) if skipped else "no checkpoint was written yet"
        raise CheckpointError(
            f"{run_dir}: no valid checkpoint to resume from ({what}), but the directory holds "
            f"{' and '.join(history)}; refusing to restart at step 1 over that history. "
            "Repair or move the run directory away, or use another name=")
    return None


def set_aside_metrics(run_dir: Path) -> Path | None:
    """Before a fresh start in a run directory that holds metrics lines but no checkpoint (a run
    killed before its first checkpoint), rename metrics.jsonl to
    ``metrics.before-restart-<UTC time>.jsonl`` so the new run's lines do not mix with, or erase,
    the old ones. Rank 0 only. Returns the new name, or None when there was nothing to move."""
    metrics = Path(run_dir) / "metrics.jsonl"
    if not metrics.is_file() or metrics.stat().st_size == 0:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = metrics.with_name(f"metrics.before-restart-{stamp}.jsonl")
    n = 1
    while target.exists():
        n += 1
        target = metrics.with_name(f"metrics.before-restart-{stamp}-{n}.jsonl")
    os.replace(metrics, target)
    return target


# ---------------------------------------------------------------------------------- saving
def _fsync_path(path: Path) -> None:
    """fsync a file or a directory (its entries); errors are ignored (not every filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for f in files:
            _fsync_path(Path(dirpath) / f)
        _fsync_path(Path(dirpath))


def _barrier(trainer: L.Trainer) -> None:
    if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
        trainer.strategy.barrier("vjepa-checkpoint")


class RunCheckpointer(L.Callback):
    def __init__(self, run_dir: Path, every_steps: int, every_minutes: float | None, keep_last: int):
        self.run_dir = Path(run_dir)
        self.every_steps, self.every_minutes, self.keep_last = every_steps, every_minutes, keep_last
        self._last_time = time.monotonic()
        self._last_step = -1
        self.saving = False  # read by the SIGTERM watchdog: writing a checkpoint is progress

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
        self.saving = True
        try:
            return self._save(trainer, pl_module, step)
        finally:
            self.saving = False

    def _save(self, trainer: L.Trainer, pl_module, step: int) -> Path:
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
        # A full checkpoint (weights, optimizer, loops); saying so also keeps Lightning from logging
        # "`weights_only` was not set, defaulting to `False`" at every save.
        trainer.save_checkpoint(tmp / "model.ckpt", weights_only=False)  # collective under DeepSpeed / FSDP
        _barrier(trainer)
        if trainer.is_global_zero:
            _fsync_tree(tmp)  # the data is on disk before any name points at it (a crash, a power loss)
            # The metrics line of this step is written before `last` names the step: a kill between
            # the two must not lose it (the resume keeps the lines up to the resumed step).
            for cb in trainer.callbacks:
                hook = getattr(cb, "before_checkpoint_commit", None)
                if callable(hook):
                    hook(trainer, pl_module)
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            _fsync_path(ckpt_root)
            atomic_write_text(self.run_dir / "last", name + "\n")
            _fsync_path(self.run_dir)
            self._prune(ckpt_root, keep=name)
        _barrier(trainer)
        pl_module.last_checkpoint = str(final)
        self._last_step = step
        self._last_time = time.monotonic()
        return final

    def _prune(self, root: Path, keep: str) -> None:
        """Keep the newest ``keep_last`` checkpoints up to ``keep``. Folders of later steps (left by
        a run that resumed from an earlier checkpoint because those did not verify) are not counted
        and not deleted here: the save of their step replaces them."""
        current = step_of(Path(keep))
        done = sorted(p for p in root.glob("step_*")
                      if p.is_dir() and step_of(p) is not None and step_of(p) <= current)
        for old in done[: max(0, len(done) - self.keep_last)]:
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob(".tmp_step_*"):
            if stale.name != f".tmp_{keep}":
                shutil.rmtree(stale, ignore_errors=True)
