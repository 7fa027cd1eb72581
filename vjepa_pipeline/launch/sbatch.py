"""The sbatch script of a launch: submitit's SlurmExecutor parameters built from ``launch.*`` and
the allocation, and the exact script text (``--dry-run`` prints what would be submitted).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from .resources import Allocation


def executor_parameters(launch, alloc: Allocation, job_name: str, setup: list[str] = (),
                        array: bool = False) -> dict:
    """Parameters for ``submitit.SlurmExecutor.update_parameters`` (submitit's native names).

    Tasks start under ``srun``; ``--signal=<launch.signal>@<delay>`` warns the tasks before the time
    limit; ``--requeue`` lets the job requeue itself after a preemption checkpoint.
    """
    params: dict = {
        "job_name": job_name,
        "time": int(launch.time_min),
        "nodes": alloc.nodes,
        "ntasks_per_node": alloc.tasks_per_node,
        "cpus_per_task": alloc.cpus_per_task,
        "signal_delay_s": int(launch.signal_delay_s),
        "stderr_to_stdout": False,
        "setup": [*launch.setup, *setup],
    }
    if alloc.gpus_per_node:
        params["gpus_per_node"] = alloc.gpus_per_node
    for key in ("partition", "account", "qos", "constraint", "exclude", "mem_per_gpu", "mem"):
        value = getattr(launch, key)
        if value:
            params[key] = value
    extra: dict = {"requeue": True}
    signal = launch.signal.upper().removeprefix("SIG")
    if signal != "USR2":  # submitit writes USR2@delay itself
        extra["signal"] = f"{signal}@{int(launch.signal_delay_s)}"
    params["additional_parameters"] = extra
    if array:
        params["array_parallelism"] = int(launch.array_parallelism)
    return params


def submitit_command(folder: str | Path, python: str | None = None) -> str:
    """The command submitit puts after ``srun`` (each task unpickles and runs the job)."""
    python = python or shlex.quote(sys.executable)
    return f"{python} -u -m submitit.core._submit {shlex.quote(str(folder))}"


def render_script(params: dict, folder: str | Path, array_size: int | None = None) -> str:
    """The sbatch script submitit writes for these parameters (no SLURM needed)."""
    # submitit has no public API that returns the script without submitting it (its executors
    # write it only into <folder>/<job id>_submission.sh while calling sbatch), so this is the one
    # place that calls its private renderer, exactly as SlurmExecutor does. tests/test_launch.py
    # (test_dry_run_script_is_what_submitit_submits) submits through submitit's public API with
    # a fake sbatch and fails if the two texts ever differ, or if this function disappears.
    from submitit.slurm.slurm import _make_sbatch_string

    params = dict(params)
    if array_size is not None:
        params["map_count"] = array_size
    return _make_sbatch_string(command=submitit_command(folder), folder=str(folder), **params)


def describe_job(stage: str, what: str) -> list[str]:
    """Comment lines for the script's setup block, so a reader sees what the pickled job does."""
    return [f"# vjepa launch {stage}: {what}"]
