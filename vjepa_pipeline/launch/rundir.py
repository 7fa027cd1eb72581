"""Launch bookkeeping in the run directory.

``<run_dir>/launch/`` holds what is needed to know how a run was started and to start it again:

- ``code.json`` (+ ``code.diff``): git commit, branch and dirty state of the code that was
  submitted (the uncommitted diff is saved); outside git, a hash of the package sources;
- ``sbatch.sh`` (latest) and ``sbatch_<job id>.sh``: the scripts handed to sbatch;
- ``submissions.jsonl``: one line per ``vjepa launch`` (time, job id, command line, cluster);
- ``jobs.jsonl`` and ``requeues.jsonl``: written by the job itself (vjepa_pipeline.train.slurm_job),
  one line per job segment (job id, restart count, nodes) and per self-requeue.

The resolved config is ``<run_dir>/config.yaml``; job logs go to ``<run_dir>/logs/``.
``python -m vjepa_pipeline.launch.rundir --config X [overrides]`` prints the run directory
(used by the plain sbatch templates in slurm/templates/).
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..utils.atomic import atomic_write_text
from ..utils.code_state import write_code_state
from ..utils.jsonl import append_jsonl, read_jsonl


def launch_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "launch"


def logs_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "logs"


def record_code(run_dir: Path) -> dict:
    return write_code_state(launch_dir(run_dir))


def record_submission(run_dir: Path, job_id: str, script: str, stage: str, cluster: str | None,
                      extra: dict | None = None) -> None:
    d = launch_dir(run_dir)
    atomic_write_text(d / f"sbatch_{job_id}.sh", script)
    atomic_write_text(d / "sbatch.sh", script)
    append_jsonl(d / "submissions.jsonl", {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "job_id": job_id, "stage": stage, "cluster": cluster,
        "user": getpass.getuser(), "host": socket.gethostname(), "cwd": os.getcwd(),
        "argv": ["vjepa", *sys.argv[1:]], **(extra or {})})


def live_jobs(run_dir: Path) -> dict[str, str]:
    """Jobs submitted for this run dir that SLURM still lists (job id -> state)."""
    ids = [str(s["job_id"]) for s in read_jsonl(launch_dir(run_dir) / "submissions.jsonl")]
    if not ids:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(ids)], check=False, capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def main(argv: list[str] | None = None) -> int:
    """Print the run directory of a recipe + overrides (for sbatch templates)."""
    import argparse

    from ..config import ConfigError, load_config

    p = argparse.ArgumentParser(prog="python -m vjepa_pipeline.launch.rundir")
    p.add_argument("--config", type=Path)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(Path(cfg.train.run_dir) / cfg.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
