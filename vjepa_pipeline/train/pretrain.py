"""`vjepa pretrain`: the run directory, strategy selection and the Lightning Trainer.

Re-running the same command resumes from ``runs/<name>/last`` (verified first; a corrupt newest
checkpoint falls back to the newest valid one, see checkpointing.py): weights, optimizer, EMA
target, schedules (functions of the optimizer step), masks (functions of the data step) and each
rank's loader stream continue where they stopped. ``launch.signal`` (USR2) checkpoints and stops at
an agreed step; under SLURM the job then requeues itself. SIGTERM checkpoints and stops the same
way, then raises :class:`~.preemption.Terminated` (see preemption.py). A second ``vjepa pretrain``
on a run directory in use is refused (runlock.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path

import torch

from ..config import ConfigError, config_to_dict, dump_config, read_run_config
from ..utils.atomic import remove_stale_temporaries
from .checkpointing import RunCheckpointer, find_resume_checkpoint, read_last, set_aside_metrics
from .determinism import pinned

# Keys that may change between the first run and a resume (the run stays the same run).
# The files of the run directory's top level that are replaced atomically (utils.atomic).
RUN_DIR_FILES = ("last", "config.yaml", "metrics.jsonl", "wandb_id")
RESUMABLE_CHANGES = ("train.max_steps", "train.checkpoint_every_steps", "train.checkpoint_every_minutes",
                     "train.keep_last", "logging.", "launch.", "data.num_workers", "train.nan_policy",
                     "train.max_nan_skips", "data.path", "data.reseed_on_world_size_change",
                     # a mixture's paths may move; its weights and clip settings are checked against the
                     # saved stream state (refused unless data.reseed_on_mixture_change)
                     "data.sources", "data.reseed_on_mixture_change",
                     "train.num_threads", "train.deterministic")  # how the same math runs, not what it is


def run_dir_of(cfg) -> Path:
    return Path(cfg.train.run_dir) / cfg.name


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


# Lightning's chatter that tells our users nothing: our own log names the device, and where training
# stopped ("done: step N in RUN", the demo's "seed S: step N -> RUN").
_CHATTER = ("GPU available:", "TPU available:", "HPU available:", "\N{ELECTRIC LIGHT BULB} Tip:",
            "`Trainer.fit` stopped: `max_steps=", "`Trainer.fit` stopped: `max_epochs=")


class _DropChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_CHATTER)


def silence_lightning_chatter() -> None:
    """Drop Lightning's hardware summary and advertising lines; warnings and errors stay. Idempotent."""
    for name in ("lightning.pytorch.utilities.rank_zero", "pytorch_lightning.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropChatter) for f in log.filters):
            log.addFilter(_DropChatter())


@contextlib.contextmanager
def quiet_lightning_warnings():
    """Lightning warnings that say nothing to our users: few loader workers (ours stream), resuming
    mid-epoch (our loader resumes exactly), a deprecation inside Lightning, and - outside any SLURM
    job - "srun is available but not used" (on a login node or a machine with SLURM installed,
    `vjepa launch` is the way onto the cluster; inside an allocation the hint stays)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch.*")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
        if "SLURM_JOB_ID" not in os.environ:
            warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system but is not")
        yield


def check_resume_config(run_dir: Path, cfg) -> None:
    """A run directory belongs to one configuration: refuse a resume with other settings."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return
    saved = _flatten(config_to_dict(read_run_config(saved_path)))
    new = _flatten(config_to_dict(cfg))
    changed = [k for k in sorted(set(saved) | set(new)) if saved.get(k) != new.get(k)
               and not any(k == a or (a.endswith(".") and k.startswith(a)) for a in RESUMABLE_CHANGES)]
    if changed:
        diffs = "; ".join(f"{k}: {saved.get(k)!r} -> {new.get(k)!r}" for k in changed[:6])
        raise ConfigError(f"{run_dir} was started with other settings ({diffs}). Use another name= for a new "
                          f"run, or restore the original settings to resume")


def strategy_for(cfg, use_gpu: bool):
    """The Lightning strategy object for ``train.strategy`` on this machine."""
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy

    t = cfg.train
    world = t.devices * t.num_nodes
    name = t.strategy
    if name.startswith("deepspeed"):
        stage = int(name[-1])
        if not use_gpu:
            raise ConfigError(f"train.strategy={name}: Lightning's DeepSpeed strategy needs CUDA GPUs and none is "
                              "available here. Use train.strategy=ddp (gloo on CPU) or train.strategy=fsdp")
        if stage == 3:
            raise ConfigError("train.strategy=deepspeed_stage_3 needs a shard-local EMA of the target encoder, "
                              "which is not implemented yet; use deepspeed_stage_2 or fsdp")
        return DeepSpeedStrategy(stage=stage)
    if name == "fsdp":
        return FSDPStrategy()
    if name == "ddp" or (name == "auto" and world > 1):
        return DDPStrategy(process_group_backend="nccl" if use_gpu else "gloo")
    return "auto"


def is_interactive() -> bool:
    return sys.stdout.isatty() and "SLURM_JOB_ID" not in os.environ


def pretrain(cfg, extra_callbacks=(), progress: bool | None = None) -> dict:
    """Train ``cfg``; returns a small summary. Resumes automatically from the run directory."""
    import signal

    from .preemption import PreemptionFlag, TerminationFlag, signal_number

    # Installed first: a preemption signal or SIGTERM during start-up must not kill the process.
    flag = PreemptionFlag(signal_number(cfg.launch.signal))
    term = TerminationFlag(run_dir=run_dir_of(cfg)) if flag.signum != signal.SIGTERM else None
    flag.install()
    if term is not None:
        term.install()
    try:
        with pinned(cfg.train):  # train.deterministic / train.num_threads, restored afterwards
            return _pretrain(cfg, flag, term, extra_callbacks, progress)
    finally:
        if term is not None:
            term.uninstall()
        flag.uninstall()


def _pretrain(cfg, flag, term, extra_callbacks, progress) -> dict:
    from .runlock import RunDirInUse, RunLock, RunLockCallback, launched_as_rank_zero, launched_world_size

    run_dir = run_dir_of(cfg)
    check_resume_config(run_dir, cfg)
    lock, refusal = RunLock(run_dir), None
    if launched_as_rank_zero():
        try:
            lock.acquire()
        except RunDirInUse as exc:
            if launched_world_size() <= 1:
                raise
            refusal = str(exc)  # srun / torchrun: the other ranks learn it in the first collective
    try:
        return _train(cfg, flag, term, extra_callbacks, progress, run_dir, RunLockCallback(refusal),
                      rank_zero=launched_as_rank_zero())
    finally:
        lock.release()


def _train(cfg, flag, term, extra_callbacks, progress, run_dir, lock_callback, rank_zero: bool) -> dict:
    import lightning as L

    from . import slurm_job
    from .data import TrainDataModule
    from .metrics import MetricsCallback
    from .module import ObjectiveModule
    from .preemption import PreemptionCallback, Terminated
    from .world_model import build_training_objective

    use_gpu = torch.cuda.is_available() and cfg.train.accelerator != "cpu"
    if cfg.train.accelerator == "gpu" and not torch.cuda.is_available():
        raise ConfigError("train.accelerator=gpu but CUDA is not available; use train.accelerator=auto or cpu")
    precision = cfg.train.precision
    if not use_gpu and precision != "32":
        warnings.warn(f"train.precision={precision} needs a GPU; training in fp32 on the CPU", stacklevel=2)
        precision = "32"
    strategy = strategy_for(cfg, use_gpu)
    run_dir.mkdir(parents=True, exist_ok=True)
    refused = lock_callback.refusal is not None
    # Every rank picks the same checkpoint (a deterministic check of the same files); rank 0 warns.
    last = None if refused else find_resume_checkpoint(run_dir, warn=rank_zero)
    if rank_zero and not refused:  # rank 0, holding the lock: the only process that writes these
        if last is None:
            set_aside_metrics(run_dir)
        for name in RUN_DIR_FILES:  # what a kill inside an atomic write of these left behind
            remove_stale_temporaries(run_dir, name)
        dump_config(cfg, run_dir / "config.yaml")
        slurm_job.record_job_start(run_dir, str(last) if last else None)
    interactive = is_interactive() if progress is None else progress

    module = ObjectiveModule(cfg, last_checkpoint=str(last) if last else None,
                             objective=build_training_objective(cfg))
    data = TrainDataModule(cfg, resume_dir=last)
    t = cfg.train
    callbacks = [
        lock_callback,
        RunCheckpointer(run_dir, t.checkpoint_every_steps, t.checkpoint_every_minutes, t.keep_last),
        MetricsCallback(run_dir, cfg.logging.log_every_steps, t.stats_every_steps,
                        wandb_cfg={"mode": cfg.logging.wandb_mode, "project": cfg.logging.wandb_project,
                                   "entity": cfg.logging.wandb_entity, "name": cfg.name,
                                   "config": config_to_dict(cfg)},
                        world_size=t.devices * t.num_nodes, precision=precision, interactive=interactive,
                        rankme_threshold=t.collapse_rankme_threshold),
        preemption := PreemptionCallback(run_dir, flag, cfg.launch.max_requeues, term=term),
        *extra_callbacks,
    ]
    if cfg.logging.probe_train and cfg.logging.probe_val:
        from .probe_callback import KNNProbeCallback

        callbacks.append(KNNProbeCallback(cfg.data, cfg.logging.probe_train, cfg.logging.probe_val,
                                          cfg.logging.probe_every_steps, run_dir))
    silence_lightning_chatter()
    with quiet_lightning_warnings():
        trainer = L.Trainer(
            accelerator="gpu" if use_gpu else "cpu", devices=t.devices, num_nodes=t.num_nodes, strategy=strategy,
            precision=precision, max_steps=t.max_steps, max_epochs=-1,
            accumulate_grad_batches=t.accumulate_grad_batches,
            gradient_clip_val=cfg.optim.clip_grad, gradient_clip_algorithm="norm", logger=False,
            enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=interactive,
            num_sanity_val_steps=0, reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False,
            callbacks=callbacks, default_root_dir=str(run_dir), plugins=slurm_job.lightning_plugins() or None,
        )
    if t.compile:
        module.compile_networks()
    with quiet_lightning_warnings():
        ckpt = str(last / "model.ckpt") if last else None
        # Our checkpoints hold tensors, numbers and strings only: load them weights-only. DeepSpeed
        # directories carry DeepSpeed's own objects and are read by DeepSpeed.
        try:
            trainer.fit(module, datamodule=data, ckpt_path=ckpt,
                        weights_only=None if ckpt is None or Path(ckpt).is_dir() else True)
        except SystemExit as exc:  # Lightning's SIGTERMException, should its handler have run after all
            if type(exc).__name__ != "SIGTERMException":
                raise
            raise Terminated(f"SIGTERM at step {trainer.global_step} before a new checkpoint; last checkpoint: "
                             f"{read_last(run_dir) or 'none'}; re-run the same command to resume") from None
        finally:
            if term is not None:
                term.handled = True  # training is over: no forced exit from here on
    stop = preemption.finish(trainer.is_global_zero)  # rank 0 requeues here, after fit() let go
    if stop is not None and stop["signal"] == "SIGTERM":
        raise Terminated(f"SIGTERM at step {stop['step']}; checkpoint saved: {stop['checkpoint']}; "
                         "re-run the same command to resume")
    final = read_last(run_dir)
    return {"run_dir": str(run_dir), "global_step": trainer.global_step,
            "last_checkpoint": str(final) if final else None, "resumed_from": str(last) if last else None,
            "preempted": stop}
