"""The local SLURM cluster (slurm/local_cluster.sh) really behaves like a cluster: a 2-node job
gets two distinct nodes, submitit gets results and accounting, a requeued job restarts."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from waiting import wait_until

pytestmark = pytest.mark.slurm


def run(*cmd: str | Path, timeout: float = 30) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=True)
    return proc.stdout


def sacct_state(job_id: str) -> str:
    out = run("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State")
    return out.strip().splitlines()[0].split()[0] if out.strip() else ""


def test_two_node_batch_job_runs_one_task_on_each_node(slurm_cluster, tmp_path):
    # Inside a fake node `hostname` prints the real host: the node is SLURMD_NODENAME.
    script = tmp_path / "two_nodes.sh"
    script.write_text(
        "#!/bin/bash\n"
        "srun bash -c 'echo task $SLURM_NODEID $SLURMD_NODENAME'\n"
        "echo nodelist $(scontrol show hostnames $SLURM_JOB_NODELIST | paste -sd,)\n"
    )
    out = tmp_path / "two_nodes.out"
    run("sbatch", "--wait", "-N", "2", "--ntasks-per-node", "1", "-p", slurm_cluster.partition,
        "-t", "2", "-o", out, script, timeout=60)
    lines = out.read_text().split("\n")
    tasks = dict(line.split()[1:] for line in lines if line.startswith("task "))
    nodelist = next(line.split()[1] for line in lines if line.startswith("nodelist ")).split(",")
    assert sorted(tasks) == ["0", "1"]
    assert tasks["0"] != tasks["1"]
    assert sorted(tasks.values()) == sorted(nodelist)
    assert set(nodelist) <= set(slurm_cluster.nodes)


def test_submitit_job_returns_result_and_is_accounted(slurm_cluster, tmp_path):
    submitit = pytest.importorskip("submitit")

    def work(x: int) -> tuple[int, str]:  # nested: pickled by value, nothing to import in the job
        import os

        return x * x, os.environ["SLURMD_NODENAME"]

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(timeout_min=5, slurm_partition=slurm_cluster.partition, nodes=1,
                               tasks_per_node=1, cpus_per_task=1)
    job = executor.submit(work, 7)
    try:
        wait_until(job.done, 60, f"submitit job {job.job_id}", poll=0.5)
    except AssertionError:
        subprocess.run(["scancel", job.job_id], check=False, capture_output=True, timeout=30)
        raise
    value, node = job.result()
    assert value == 49
    assert node in slurm_cluster.nodes
    # submitit depends on accounting: the job must be in sacct with its final state (the job
    # may still be exiting when its result is there: not cancelled, waited for).
    assert wait_until(lambda: sacct_state(job.job_id) == "COMPLETED", 15, "sacct to report COMPLETED")


def test_requeued_job_restarts(slurm_cluster, tmp_path, capsys):
    log = tmp_path / "starts.log"
    command = f'echo "${{SLURM_RESTART_COUNT:-0}} $SLURMD_NODENAME" >> {log}; sleep 300'
    job_id = run("sbatch", "--parsable", "--requeue", "-p", slurm_cluster.partition, "-t", "5",
                 "-o", "/dev/null", "--wrap", command).strip()

    def starts() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    try:
        wait_until(lambda: len(starts()) >= 1, 30, "the job to start")
        t0 = time.monotonic()
        run("scontrol", "requeue", job_id)
        wait_until(lambda: len(starts()) >= 2, 60, "the requeued job to restart", poll=0.1)
        delay = time.monotonic() - t0
    finally:
        subprocess.run(["scancel", job_id], check=False, capture_output=True, timeout=30)
    assert [line.split()[0] for line in starts()] == ["0", "1"]  # SLURM_RESTART_COUNT
    with capsys.disabled():
        print(f"\n[local SLURM] requeued job {job_id} restarted after {delay:.1f} s")
