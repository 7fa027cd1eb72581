"""Training metrics: metrics.jsonl in the run dir, an optional wandb run, and the Lightning
callback that turns the module's per-optimizer-step ``step_record`` into both, plus a plain
log line for batch jobs and a representation-collapse alarm.

Everything here runs on global rank 0 only. Steps are optimizer steps (1-based); on resume the
JSONL is cut back to the restored step so no step appears twice; the line of a checkpointed step is
written (and fsynced) before the checkpoint is committed, so the cut never loses one.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import secrets
import string
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from ..utils.atomic import atomic_write_text, jsonable
from .devices import current_peak_flops, gpu_memory

log = logging.getLogger(__name__)


class MetricsWriter:
    """Appends one JSON object per line to ``<run_dir>/metrics.jsonl`` (flushed per line)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / "metrics.jsonl"
        self._fh = None

    def write(self, record: dict) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(json.dumps(jsonable(record), allow_nan=False) + "\n")
        self._fh.flush()

    def sync(self) -> None:
        """Flush and fsync: the lines written so far survive a kill or a power loss."""
        if self._fh is not None:
            self._fh.flush()
            try:
                os.fsync(self._fh.fileno())
            except OSError:
                pass

    def truncate_after(self, step: int) -> int:
        """Keep only records with ``step <= step`` (and drop unreadable lines, e.g. one cut off
        by a kill); atomic rewrite. Returns the number of lines removed."""
        self.close()
        if not self.path.exists():
            return 0
        kept, removed = [], 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                keep = isinstance(rec, dict) and int(rec.get("step", -1)) <= step
            except (ValueError, TypeError):
                keep = False
            if keep:
                kept.append(line)
            else:
                removed += 1
        if removed:
            atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))
        return removed

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _new_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


class WandbRun:
    """A wandb run tied to the run dir: its id lives in ``<run_dir>/wandb_id`` so a requeued job
    continues the same run. mode "disabled" never imports wandb. Any wandb failure is logged as
    a warning and disables wandb; it never stops training."""

    def __init__(self, run_dir: str | os.PathLike, mode: str = "offline", project: str | None = "vjepa",
                 entity: str | None = None, name: str | None = None, config_dict: dict | None = None):
        self.run_dir = Path(run_dir)
        self.run = None
        self.id: str | None = None
        if mode == "disabled":
            return
        try:
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb

            self.id = self.load_or_create_id(self.run_dir)
            self.run = wandb.init(
                id=self.id, resume="allow", dir=str(self.run_dir), mode=mode, project=project,
                entity=entity, name=name, config=config_dict, reinit="create_new",
                settings=wandb.Settings(silent=True, console="off"),
            )
        except Exception as exc:  # noqa: BLE001 - wandb must never kill training
            self._disable("init", exc)

    @staticmethod
    def load_or_create_id(run_dir: str | os.PathLike) -> str:
        path = Path(run_dir) / "wandb_id"
        if path.exists():
            run_id = path.read_text().strip()
            if run_id:
                return run_id
        run_id = _new_run_id()
        atomic_write_text(path, run_id + "\n")
        return run_id

    @property
    def active(self) -> bool:
        return self.run is not None

    def log(self, record: dict, step: int) -> None:
        if self.run is None:
            return
        data = {k: v for k, v in record.items()
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        data.update({k: int(v) for k, v in record.items() if isinstance(v, bool)})
        try:
            self.run.log(data, step=int(step))
        except Exception as exc:  # noqa: BLE001
            self._disable("log", exc)

    def finish(self, exit_code: int | None = None) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        try:
            run.finish(exit_code=exit_code)
        except Exception as exc:  # noqa: BLE001
            log.warning("wandb finish failed (%s: %s)", type(exc).__name__, exc)

    def _disable(self, what: str, exc: BaseException) -> None:
        log.warning("wandb %s failed, continuing without wandb (%s: %s)", what, type(exc).__name__, exc)
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001
                pass


def is_interactive() -> bool:
    """A person watching a terminal (not a batch job): stdout is a TTY and not under SLURM."""
    return sys.stdout.isatty() and "SLURM_JOB_ID" not in os.environ


def _fmt_sci(x: float) -> str:
    """3.1e-04 -> 3.1e-4."""
    mantissa, _, exp = f"{x:.1e}".partition("e")
    return f"{mantissa}e{int(exp)}"


# Keys of the module's step record that build_record maps (or deliberately drops) by name.
RECORD_KEYS = {"step", "loss", "loss_mask", "lr", "weight_decay", "ema_momentum", "grad_norm", "step_time_s",
               "clips", "tokens", "flops", "data_wait_s", "loader", "collapse", "_probed"}


class MetricsCallback(pl.Callback):
    """Turns ``pl_module.step_record`` (set by the module after every optimizer step) into
    metrics.jsonl lines, wandb logs and a plain log line. Rank 0 only.

    A line is written on step 1, every ``jsonl_every_steps`` steps (default: ``log_every_steps``),
    on the last step, and on every step that carries collapse statistics. Throughput figures
    (clips/s, tokens/s, data-wait fraction, MFU) are averaged over the steps since the last line;
    loss/lr/... are the values of the logged step. Unless interactive (a TTY outside SLURM, where
    Lightning's progress bar is shown), a plain line is printed on step 1, every
    ``log_every_steps`` steps and on the last step (of the steps that got a JSONL line).
    ``stats_every_steps`` is informational: the module decides when to measure collapse stats.
    """

    ALARM_AFTER = 3  # consecutive low-RankMe measurements before the collapse alarm

    def __init__(self, run_dir: str | os.PathLike, log_every_steps: int = 10, stats_every_steps: int = 50,
                 wandb_cfg: dict | None = None, world_size: int = 1, precision: str = "32",
                 interactive: bool | None = None, rankme_threshold: float = 1.5,
                 jsonl_every_steps: int | None = None, peak_flops_per_device: float | None = None):
        self.run_dir = Path(run_dir)
        self.log_every_steps = max(1, int(log_every_steps))
        self.jsonl_every_steps = max(1, int(jsonl_every_steps or log_every_steps))
        self.stats_every_steps = stats_every_steps
        self.wandb_cfg = wandb_cfg
        self.world_size = max(1, int(world_size))
        self.precision = precision
        self.interactive = is_interactive() if interactive is None else interactive
        self.rankme_threshold = rankme_threshold
        self.peak = peak_flops_per_device
        self.writer = MetricsWriter(self.run_dir)
        self.wandb: WandbRun | None = None
        self.low_rankme_streak = 0
        self.alarm_fired = False
        self._mix: dict[str, int] = {}  # videos per mixture source since the start (all ranks)
        self._last_step: int | None = None
        self._t_start = time.time()
        self._reset_window()

    # ---- lifecycle -------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Not on_fit_start: the checkpoint (and so global_step) is restored after that hook.
        if not trainer.is_global_zero:
            return
        removed = self.writer.truncate_after(trainer.global_step)
        if removed:
            log.info("metrics.jsonl: dropped %d line(s) after step %d (resumed run)",
                     removed, trainer.global_step)
        if self.peak is None and pl_module.device.type == "cuda":
            self.peak = current_peak_flops(self.precision)
        if self.wandb is None and self.wandb_cfg and self.wandb_cfg.get("mode", "offline") != "disabled":
            cfg = dict(self.wandb_cfg)
            self.wandb = WandbRun(self.run_dir, cfg.pop("mode", "offline"), cfg.pop("project", "vjepa"),
                                  cfg.pop("entity", None), cfg.pop("name", None), cfg.pop("config", None))
        self._last_step = trainer.global_step
        self._t_start = time.time()
        self._reset_window()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(exit_code=0)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException,
                     ) -> None:
        self._close(exit_code=1)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._close(exit_code=None)

    def _close(self, exit_code: int | None) -> None:
        self.writer.close()
        if self.wandb is not None:
            self.wandb.finish(exit_code=exit_code)
            self.wandb = None

    def before_checkpoint_commit(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Called by the RunCheckpointer (rank 0) before ``last`` names a new checkpoint: the line of
        the checkpointed step is written and on disk first, so a kill between the two loses no line
        (the resume keeps the lines up to the resumed step and drops the later ones)."""
        self._poll(trainer, pl_module)
        self.writer.sync()

    # ---- per step --------------------------------------------------------------------------
    # Lightning runs callback hooks before the module's own hook of the same name, so a record set
    # in the module's on_train_batch_end is only visible at the next batch start (or train end).
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx) -> None:
        self._poll(trainer, pl_module)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch,
                             batch_idx) -> None:
        self._poll(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._poll(trainer, pl_module)

    def _poll(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        rec = getattr(pl_module, "step_record", None)
        if not rec or rec.get("step") is None or rec["step"] == self._last_step:
            return  # a micro-batch inside an accumulation window, or no step yet
        step = int(rec["step"])
        self._last_step = step
        self._accumulate(rec)
        alarm = self._check_collapse(rec.get("collapse"), step)
        max_steps = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        if not (step == 1 or step % self.jsonl_every_steps == 0 or step == max_steps or "collapse" in rec):
            return
        line = self.build_record(rec, trainer.current_epoch, alarm)
        self.writer.write(line)
        if self.wandb is not None:
            self.wandb.log(line, step=step)
        if not self.interactive and (step == 1 or step % self.log_every_steps == 0 or step == max_steps):
            print(self.format_line(line, max_steps), flush=True)
        self._reset_window()

    def _reset_window(self) -> None:
        self._win = {"steps": 0, "time": 0.0, "wait": 0.0, "clips": 0.0, "tokens": 0.0, "flops": 0.0}
        self._win_wall = time.time()

    def _accumulate(self, rec: dict) -> None:
        w = self._win
        w["steps"] += 1
        w["time"] += float(rec.get("step_time_s") or 0.0)
        w["wait"] += float(rec.get("data_wait_s") or 0.0)
        for k in ("clips", "tokens", "flops"):
            w[k] += float(rec.get(k) or 0.0)
        for name, n in ((rec.get("loader") or {}).get("sources") or {}).items():
            self._mix[name] = self._mix.get(name, 0) + n

    def _check_collapse(self, collapse: dict | None, step: int) -> bool | None:
        """Track consecutive low pooled RankMe; returns the alarm state when measured, else None."""
        if not collapse or collapse.get("pooled_rankme") is None:
            return None
        rankme = float(collapse["pooled_rankme"])
        if math.isfinite(rankme):
            self.low_rankme_streak = self.low_rankme_streak + 1 if rankme < self.rankme_threshold else 0
        alarm = self.low_rankme_streak >= self.ALARM_AFTER
        if alarm and not self.alarm_fired:
            self.alarm_fired = True
            bar = "!" * 78
            print(f"\n{bar}\nCOLLAPSE ALARM at step {step}: pooled RankMe {rankme:.3f} < "
                  f"{self.rankme_threshold} for {self.low_rankme_streak} consecutive measurements.\n"
                  "The encoder is likely collapsing (see collapse/* in metrics.jsonl). "
                  f"Check the lr, EMA momentum and masks.\n{bar}\n", file=sys.stderr, flush=True)
        return alarm

    def build_record(self, rec: dict, epoch: int, alarm: bool | None = None) -> dict:
        """One flat metrics line from the module's step record and the current window."""
        w, now = self._win, time.time()
        out: dict[str, Any] = {"step": int(rec["step"]), "epoch": int(epoch)}
        if "loss" in rec:
            out["loss"] = rec["loss"]
        for i, v in enumerate(rec.get("loss_mask") or []):
            out[f"loss_mask_{i}"] = v
        for src, dst in (("lr", "lr"), ("weight_decay", "wd"), ("ema_momentum", "ema"),
                         ("grad_norm", "grad_norm"), ("step_time_s", "step_time_s")):
            if src in rec:
                out[dst] = rec[src]
        # Per-rank seconds over the window; fall back to wall clock if the module gave no timing.
        secs = w["time"] if w["time"] > 0 else now - self._win_wall
        if secs > 0:
            if w["time"] > 0:
                out["data_wait_frac"] = w["wait"] / w["time"]
            for k in ("clips", "tokens"):
                if w[k] > 0:
                    out[f"{k}_per_s_per_device"] = w[k] / secs
                    out[f"{k}_per_s"] = w[k] / secs * self.world_size
            if w["flops"] > 0:
                out["tflops_per_device"] = w["flops"] / secs / 1e12
                if self.peak:
                    out["mfu"] = w["flops"] / secs / self.peak
        out["sec_per_step"] = (now - self._win_wall) / max(1, w["steps"])  # wall, incl. val/ckpt
        out.update({f"gpu_mem_{k}": v for k, v in gpu_memory().items()})
        loader = rec.get("loader") or {}
        if "attempts" in loader:
            out["loader_attempts"] = loader["attempts"]
        failures = loader.get("failures") or {}
        if failures or "attempts" in loader:
            out["loader_failures"] = sum(failures.values())
        out.update({f"loader_fail/{k}": v for k, v in failures.items()})
        # The realised mixture (data.sources): every rank's videos per source since the process started
        # (summed across ranks by the module, counted every step in _accumulate, logged or not).
        total = sum(self._mix.values())
        if total:
            out.update({f"mix/{k}": n / total for k, n in self._mix.items()})
            out.update({f"mix_videos/{k}": n for k, n in self._mix.items()})
        out.update({f"collapse/{k}": v for k, v in (rec.get("collapse") or {}).items()})
        # The objective's own named scalars (StepOutput.terms, after_optimizer_step extras).
        out.update({k: v for k, v in rec.items() if k not in RECORD_KEYS and isinstance(v, (int, float))})
        if alarm is not None:
            out["collapse_alarm"] = alarm
        out["time"] = now
        out["elapsed_s"] = now - self._t_start
        return out

    @staticmethod
    def format_line(line: dict, max_steps: int | None = None) -> str:
        """`step 120/1000 | loss 0.4123 | lr 3.1e-4 | 412 clips/s | wait 3% | eta 0:12:30`."""
        step = line["step"]
        parts = [f"step {step}/{max_steps}" if max_steps else f"step {step}"]
        loss = line.get("loss")
        if loss is not None:
            parts.append(f"loss {loss:.4f}" if math.isfinite(loss) else f"loss {loss}")
        if line.get("lr") is not None:
            parts.append(f"lr {_fmt_sci(line['lr'])}")
        if line.get("clips_per_s") is not None:
            parts.append(f"{line['clips_per_s']:.0f} clips/s")
        if line.get("data_wait_frac") is not None:
            parts.append(f"wait {100 * line['data_wait_frac']:.0f}%")
        if line.get("mfu") is not None:
            parts.append(f"mfu {100 * line['mfu']:.1f}%")
        if line.get("collapse_alarm"):
            parts.append("COLLAPSE?")
        if max_steps and line.get("sec_per_step"):
            eta = max(0, max_steps - step) * line["sec_per_step"]
            parts.append(f"eta {datetime.timedelta(seconds=round(eta))}")
        return " | ".join(parts)
