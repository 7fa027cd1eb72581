"""What runs inside a submitted job: picklable callables that submitit starts in every task.

Preemption of a training job is handled by the trainer itself (train/preemption.py): every rank
saves, rank 0 requeues, then the tasks leave with SystemExit so submitit writes no result for
the interrupted segment (its watcher keeps waiting for the requeued job). ``checkpoint()`` only
matters when a signal arrives outside the training loop (start-up), where submitit's own handler
requeues the same job.
"""

from __future__ import annotations

import os
from pathlib import Path


def _resubmit(obj):
    import submitit

    return submitit.helpers.DelayedSubmission(obj)


class PretrainJob:
    """``vjepa pretrain`` of a resolved config; resumes from ``<run_dir>/last``."""

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self) -> dict:
        from ..train.pretrain import pretrain

        os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("SLURM_CPUS_PER_TASK", "1"))
        summary = pretrain(self.cfg, progress=False)
        stop = summary.get("preempted")
        if stop:
            if stop["requeued"]:
                print(f"preempted at step {stop['step']}: {stop['message']}; exiting for the requeue", flush=True)
                raise SystemExit(0)
            raise RuntimeError(f"preempted at step {stop['step']} and not requeued ({stop['message']}); "
                               f"checkpoint {stop['checkpoint']}: re-run `vjepa launch pretrain` to resume")
        return summary

    def checkpoint(self):
        return _resubmit(self)


class EvalTask:
    """One array task of ``vjepa launch eval``: one encoder on some datasets of a suite."""

    def __init__(self, suite_path: str, encoder: str, out_dir: str, datasets: list[str] | None,
                 model_overrides: list[str], device: str | None):
        self.suite_path, self.encoder, self.out_dir = suite_path, encoder, out_dir
        self.datasets, self.model_overrides, self.device = datasets, model_overrides, device

    def __call__(self) -> dict:
        from ..eval.runner import run_suite
        from ..eval.suite import load_suite

        suite = load_suite(self.suite_path)
        results = run_suite(suite, self.encoder, self.out_dir, self.model_overrides, datasets=self.datasets,
                            device=self.device)
        return {"out_dir": self.out_dir, "datasets": sorted(results["datasets"])}

    def checkpoint(self):
        return _resubmit(self)


def _shard_builder(source: str, out_dir: str, opts: dict):
    from ..config.schema import ShardsConfig
    from ..shards.build import ShardBuilder

    return ShardBuilder(source, out_dir, ShardsConfig(**opts))


def encode_shards(source: str, out_dir: str, opts: dict, task_index: int, num_tasks: int) -> int:
    """Array task ``task_index`` of ``vjepa launch shards``: encode units task_index,
    task_index + num_tasks, ... of the plan made at submission (finished units are skipped)."""
    builder = _shard_builder(source, out_dir, opts)
    builder.encode(builder.plan(), task_index, num_tasks, progress=False)
    return task_index


def pack_shards(source: str, out_dir: str, opts: dict) -> dict:
    """The job after the encode array: pack the shards, write index.json, drop the staging folder."""
    builder = _shard_builder(source, out_dir, opts)
    index = builder.pack(builder.plan())
    builder.finish()
    return index["totals"]


def eval_out_dir(out: Path, encoder_label: str | None, dataset: str | None) -> Path:
    path = out
    if encoder_label:
        path = path / encoder_label
    if dataset:
        path = path / dataset
    return path
