"""``vjepa pretrain``: V-JEPA pretraining under Lightning, resumable from the run directory."""

from __future__ import annotations

import os
import sys

from .common import DEFAULT_RECIPE, add_config_args, load

HELP = """\
Pretrain with the V-JEPA objective. The run directory is <train.run_dir>/<name>/ (config.yaml,
checkpoints/, last, metrics.jsonl, wandb_id). Re-running the same command resumes from `last`.

examples:
  vjepa pretrain --config configs/pretrain/debug.yaml
  vjepa pretrain --config debug train.max_steps=20     # a packaged recipe, by name
  vjepa pretrain --config configs/pretrain/vjepa_vitl16.yaml data.path=/data/k400 train.devices=8
"""


def register(sub) -> None:
    import argparse

    p = sub.add_parser("pretrain", help="V-JEPA pretraining (Lightning; DDP / FSDP / DeepSpeed)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, default=DEFAULT_RECIPE)
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    p.set_defaults(run=run)


def check_inputs(cfg) -> None:
    """What a user can get wrong outside the config itself, checked before any work starts (one
    line, exit 2): the run directory (a file in the way, not writable), the config.yaml saved
    there by an earlier run (unreadable: a resume would fail), and the data (missing, not a shard
    folder, a malformed index.json, empty)."""
    from pathlib import Path

    from ..config.loader import read_run_config
    from .common import check_dataset, check_output

    run_dir = check_output(Path(cfg.train.run_dir) / cfg.name, "train.run_dir", folder=True)
    if (run_dir / "config.yaml").exists():
        read_run_config(run_dir / "config.yaml")
    if cfg.data.sources:  # a mixture: every source is found (and named when it is not) before any work
        from ..data.mixture import resolve_sources
        from ..errors import LoaderError, UsageError

        try:
            resolve_sources(cfg.data)
        except LoaderError as exc:
            raise UsageError(str(exc)) from None
    else:
        check_dataset(cfg.data.source, cfg.data.path, "data.path")
    check_output(run_dir, "train.run_dir", folder=True, create=True)


class SigtermOutsideTraining:
    """SIGTERM before the trainer takes it (loading torch and Lightning takes seconds) or after it
    gives it back: one line and exit 143 at once, instead of Python's silent default. The trainer's
    own handler (checkpoint at an agreed step, never swallowed) replaces this one while it runs and
    puts it back when it is done; ``phase`` names the moment in the line."""

    def __init__(self):
        import signal

        self.phase = "during start-up, before training began (nothing trained by this command)"
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        sys.stderr.write(f"vjepa pretrain: stopped by SIGTERM {self.phase}; re-run the same command to "
                         "start or resume from the last checkpoint\n")
        sys.stderr.flush()
        os._exit(143)  # 128 + SIGTERM, as the shell reports a process it ended


def run(args) -> int:
    guard = SigtermOutsideTraining()
    cfg = load(args)
    check_inputs(cfg)  # before the trainer's imports: a mistake is reported in a moment

    from ..train.module import TrainingStopped
    from ..train.pretrain import pretrain

    try:
        summary = pretrain(cfg, progress=False if args.no_progress else None)
    except TrainingStopped as exc:
        print(f"vjepa pretrain: stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        guard.phase = "after training ended (its checkpoints are kept)"
    stop = summary.get("preempted")
    if stop:
        print(f"preempted at step {stop['step']}: checkpoint {stop['checkpoint']}; {stop['message']}. "
              f"Resume with the same command (a requeued job resumes by itself)")
        return 1 if os.environ.get("SLURM_JOB_ID") and not stop["requeued"] else 0
    print(f"done: step {summary['global_step']} in {summary['run_dir']} (last checkpoint: {summary['last_checkpoint']})")
    return 0
