"""Shard building as a SLURM job array (submitit).

The plan (input discovery + shuffle) is made once on the submitting machine. Array task i encodes
units i, i+n, i+2n, ... into the shared staging folder; a final job, started only when the whole
array succeeded, packs the shards and writes index.json. Because every step is resumable, a failed
or pre-empted task is fixed by re-running the same command: finished units are not redone.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from .build import ShardBuilder


def _builder(source: str, out_dir: str, opts: dict) -> ShardBuilder:
    from ..config.schema import ShardsConfig

    return ShardBuilder(source, out_dir, ShardsConfig(**opts))


def encode_task(source: str, out_dir: str, opts: dict, task_index: int, num_tasks: int) -> int:
    builder = _builder(source, out_dir, opts)
    builder.encode(builder.plan(), task_index, num_tasks, progress=False)
    return task_index


def pack_task(source: str, out_dir: str, opts: dict) -> dict:
    builder = _builder(source, out_dir, opts)
    index = builder.pack(builder.plan())
    builder.finish()
    return index["totals"]


def slurm_parameters(launch, num_tasks: int) -> dict:
    params = {"timeout_min": launch.time_min, "cpus_per_task": launch.cpus_per_task, "name": "vjepa-shards",
              "slurm_array_parallelism": num_tasks}
    for key in ("partition", "account", "qos", "constraint", "exclude"):
        value = getattr(launch, key)
        if value:
            params[f"slurm_{key}"] = value
    return params


def submit_build(builder: ShardBuilder, cfg, num_tasks: int, cluster: str | None = None, wait: bool = False) -> int:
    """Submit the encode array and the dependent pack job. Without SLURM (``cluster='local'``)
    the tasks run as local processes and the pack step runs once they have finished."""
    import submitit

    plan = builder.plan()
    num_tasks = max(1, min(num_tasks, len(plan["items"])))
    executor = submitit.AutoExecutor(folder=str(builder.work / "submitit"), cluster=cluster)
    executor.update_parameters(**slurm_parameters(cfg.launch, num_tasks))
    opts = asdict(builder.opts)
    args = [str(builder.source), str(builder.out), opts]
    jobs = executor.map_array(encode_task, *[[a] * num_tasks for a in args], list(range(num_tasks)),
                              [num_tasks] * num_tasks)
    print(f"submitted {num_tasks} encode tasks: job {jobs[0].job_id.split('_')[0]} "
          f"(logs in {Path(builder.work) / 'submitit'})")
    if executor.cluster != "slurm":
        for job in jobs:
            job.result()
        print(f"packed: {pack_task(*args)}")
        return 0
    array_id = jobs[0].job_id.split("_")[0]
    executor.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{array_id}"})
    final = executor.submit(pack_task, *args)
    print(f"submitted pack job {final.job_id} (runs after job {array_id} succeeds); "
          f"re-run the same command to resume if any task fails")
    if wait:
        print(f"packed: {final.result()}")
    return 0
