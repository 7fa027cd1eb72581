"""What a training process needs to know about the SLURM job it runs in.

Works the same for jobs submitted by ``vjepa launch`` (submitit) and by the plain sbatch templates:
Lightning's SLURM environment (ranks from ``srun``; its own USR1 auto-requeue switched off, since
preemption is handled by :mod:`.preemption`), a reachable ``MASTER_ADDR``, the job-segment record
in ``<run_dir>/launch/jobs.jsonl`` and the self-requeue (counted in ``launch/requeues.jsonl``).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from pathlib import Path

from ..utils.code_state import write_code_state
from ..utils.jsonl import append_jsonl, read_jsonl

log = logging.getLogger(__name__)


def job_id() -> str | None:
    """``<array job>_<task>`` inside an array task, else ``SLURM_JOB_ID`` (None outside SLURM)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def in_srun_task() -> bool:
    """A task started by ``srun`` (what Lightning's SLURMEnvironment requires)."""
    return ("SLURM_JOB_ID" in os.environ and "SLURM_NTASKS" in os.environ and "SLURM_PROCID" in os.environ
            and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive"))


def lightning_plugins() -> list:
    if not in_srun_task():
        return []
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    ensure_master_addr()
    return [SLURMEnvironment(auto_requeue=False)]


def first_node(nodelist: str) -> str:
    """``n[1-2],m3`` -> ``n1`` (as Lightning resolves the root node)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.resolve_root_node_address(nodelist)


def ensure_master_addr() -> None:
    """Lightning uses the first node's name as MASTER_ADDR. When that name does not resolve (several
    slurmd on one host, or nodes known only to SLURM) use the NodeAddr SLURM has for it."""
    if os.environ.get("MASTER_ADDR"):
        return
    node = first_node(os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST") or "")
    if not node:
        return
    try:
        socket.gethostbyname(node)
        return
    except OSError:
        pass
    try:
        out = subprocess.run(["scontrol", "show", "node", "-o", node], check=False, capture_output=True, text=True,
                             timeout=30)
        fields = dict(f.split("=", 1) for f in out.stdout.split() if "=" in f)
        addr = fields.get("NodeAddr") or fields.get("NodeHostName")
    except (OSError, subprocess.TimeoutExpired):
        addr = None
    if addr:
        os.environ["MASTER_ADDR"] = addr
        log.info("MASTER_ADDR=%s (NodeAddr of %s)", addr, node)


def global_rank() -> int:
    return int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0")))


def record_job_start(run_dir: Path, resumed_from: str | None) -> None:
    """Append this job segment to ``launch/jobs.jsonl`` and keep its batch script (rank 0 only)."""
    jid = job_id()
    if jid is None or global_rank() != 0:
        return
    env = os.environ
    launch = Path(run_dir) / "launch"
    append_jsonl(launch / "jobs.jsonl", {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "unix_time": time.time(), "job_id": jid,
        "slurm_job_id": env.get("SLURM_JOB_ID"),
        "restart_count": int(env.get("SLURM_RESTART_COUNT", "0")), "nodes": env.get("SLURM_JOB_NODELIST"),
        "num_nodes": int(env.get("SLURM_NNODES", "1")), "ntasks": int(env.get("SLURM_NTASKS", "1")),
        "node_name": env.get("SLURMD_NODENAME"), "partition": env.get("SLURM_JOB_PARTITION"),
        "resumed_from": resumed_from})
    if not (launch / "code.json").exists():  # plain sbatch templates: record the code here
        write_code_state(launch)
    script = launch / f"sbatch_{env.get('SLURM_JOB_ID')}.sh"
    if not script.exists():  # plain sbatch templates: ask SLURM for the script it runs
        try:
            subprocess.run(["scontrol", "write", "batch_script", env["SLURM_JOB_ID"], str(script)],
                           check=False, capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass


def requeues_of(run_dir: Path, jid: str) -> int:
    return sum(1 for r in read_jsonl(Path(run_dir) / "launch" / "requeues.jsonl") if r.get("job_id") == jid)


def can_requeue(run_dir: Path, max_requeues: int) -> tuple[bool, str]:
    """Whether this job may requeue itself (under SLURM, ``max_requeues`` not reached)."""
    jid = job_id()
    if jid is None:
        return False, "not running under SLURM"
    done = requeues_of(run_dir, jid)
    if done >= max_requeues:
        return False, f"job {jid} was already requeued {done} time(s) (launch.max_requeues={max_requeues})"
    return True, f"job {jid} will be requeued ({done + 1}/{max_requeues})"


def requeue(run_dir: Path, step: int, max_requeues: int, reason: str) -> tuple[bool, str]:
    """``scontrol requeue`` this job unless ``max_requeues`` is reached. Returns (requeued, message)."""
    ok, message = can_requeue(run_dir, max_requeues)
    if not ok:
        return False, message
    jid = job_id()
    try:
        out = subprocess.run(["scontrol", "requeue", jid], check=False, capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"scontrol requeue {jid} failed: {exc}"
    if out.returncode != 0:
        return False, f"scontrol requeue {jid} failed: {(out.stderr or out.stdout).strip()}"
    done = requeues_of(run_dir, jid)
    append_jsonl(Path(run_dir) / "launch" / "requeues.jsonl", {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "unix_time": time.time(), "job_id": jid, "step": step,
        "reason": reason, "count": done + 1})
    return True, f"job {jid} requeued ({done + 1}/{max_requeues})"
