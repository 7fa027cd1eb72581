"""SLURM resources: command-line flags -> ``launch.*`` overrides, the job's allocation, and the
checks that the allocation matches what Lightning will be told (before anything is submitted).

Lightning under SLURM needs one task per device: ``--ntasks-per-node`` == ``train.devices`` and
``--nodes`` == ``train.num_nodes``, processes started by ``srun``. GPUs are requested per node
(``--gpus-per-node``); ``gpus_per_node: 0`` is a CPU job whose ``tasks_per_node`` processes talk
over gloo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import ConfigError

# command-line flag (argparse dest) -> launch.* key
FLAG_KEYS = {
    "partition": "partition", "account": "account", "qos": "qos", "constraint": "constraint",
    "exclude": "exclude", "nodes": "nodes", "gpus_per_node": "gpus_per_node", "tasks_per_node": "tasks_per_node",
    "cpus_per_task": "cpus_per_task", "mem_per_gpu": "mem_per_gpu", "mem": "mem", "signal_delay": "signal_delay_s",
    "max_requeues": "max_requeues", "array_parallelism": "array_parallelism",
}

_MEM = re.compile(r"^\d+(\.\d+)?[KMGT]?B?$", re.IGNORECASE)
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time(text: str) -> int:
    """SLURM time -> whole minutes: ``90``, ``1:30:00``, ``2-00:00:00``, ``1-12``, ``45:00`` (mm:ss)."""
    text = str(text).strip()
    m = _TIME.match(text)
    if not m:
        raise ConfigError(f"--time: {text!r} is not a SLURM time (minutes, HH:MM:SS, D-HH:MM:SS)")
    d, a, b, c = m.groups()
    has_days, days = d is not None, int(d or 0)
    if has_days and b is None:  # D-HH
        h, mi, s = int(a), 0, 0
    elif c is not None:  # [D-]HH:MM:SS
        h, mi, s = int(a), int(b), int(c)
    elif b is not None:  # MM:SS, or D-HH:MM
        h, mi, s = (int(a), int(b), 0) if has_days else (0, int(a), int(b))
    else:  # minutes
        h, mi, s = 0, int(a), 0
    minutes = days * 1440 + h * 60 + mi + (1 if s else 0)
    if minutes < 1:
        raise ConfigError(f"--time: {text!r} is shorter than a minute")
    return minutes


def format_time(minutes: int) -> str:
    days, rest = divmod(int(minutes), 1440)
    return (f"{days}-" if days else "") + f"{rest // 60:02d}:{rest % 60:02d}:00"


def flag_overrides(args) -> list[str]:
    """``launch.key=value`` overrides for the resource flags that were given."""
    out = []
    for dest, key in FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is not None:
            out.append(f"launch.{key}={value}")
    if getattr(args, "time", None) is not None:
        out.append(f"launch.time_min={parse_time(args.time)}")
    if getattr(args, "cpu", False):
        out.append("launch.gpus_per_node=0")
    return out


@dataclass(frozen=True)
class Allocation:
    """What SLURM gives the job: ``nodes`` x ``tasks_per_node`` tasks, one device each."""

    nodes: int
    tasks_per_node: int
    gpus_per_node: int
    cpus_per_task: int

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node

    @property
    def cpu(self) -> bool:
        return self.gpus_per_node == 0

    def describe(self) -> str:
        per = "CPU processes (gloo)" if self.cpu else f"tasks, 1 GPU each ({self.gpus_per_node} per node)"
        return (f"{self.nodes} node(s) x {self.tasks_per_node} {per} = {self.world_size} rank(s), "
                f"{self.cpus_per_task} CPUs per task")


def allocation(launch) -> Allocation:
    """The allocation ``launch.*`` asks for (one task per GPU, or tasks_per_node CPU processes)."""
    problems = []
    for key in ("mem_per_gpu", "mem"):
        value = getattr(launch, key)
        if value is not None and not _MEM.match(str(value)):
            problems.append(f"launch.{key}: {value!r} is not a SLURM memory size (e.g. 64G, 512M)")
    gpus = launch.gpus_per_node
    tasks = launch.tasks_per_node if launch.tasks_per_node is not None else max(gpus, 1)
    if gpus and tasks != gpus:
        problems.append(f"launch.tasks_per_node={tasks} but launch.gpus_per_node={gpus}: Lightning runs one task "
                        f"per GPU (--ntasks-per-node must equal --gpus-per-node); drop --tasks-per-node")
    if gpus == 0 and launch.mem_per_gpu:
        problems.append("launch.mem_per_gpu is set for a CPU job (gpus_per_node 0); use launch.mem / --mem")
    if problems:
        raise ConfigError(problems)
    return Allocation(launch.nodes, tasks, gpus, launch.cpus_per_task)


def check_pretrain(cfg) -> Allocation:
    """The allocation of a pretraining job, checked against the trainer settings; raises ConfigError
    naming the mismatching keys and the override that fixes each one."""
    alloc = allocation(cfg.launch)
    t = cfg.train
    problems = []
    if t.devices != alloc.tasks_per_node:
        flag = "--tasks-per-node" if alloc.cpu else "--gpus-per-node"
        problems.append(f"train.devices={t.devices} but the job runs {alloc.tasks_per_node} task(s) per node "
                        f"({flag} {alloc.tasks_per_node}); Lightning needs devices == --ntasks-per-node. "
                        f"Pass train.devices={alloc.tasks_per_node} or {flag} {t.devices}")
    if t.num_nodes != alloc.nodes:
        problems.append(f"train.num_nodes={t.num_nodes} but --nodes {alloc.nodes}; Lightning needs "
                        f"num_nodes == --nodes. Pass train.num_nodes={alloc.nodes} or --nodes {t.num_nodes}")
    if problems:
        batch = cfg.data.batch_size * t.accumulate_grad_batches
        problems[-1] += (f" (global batch {batch * t.devices * t.num_nodes} with the config, "
                         f"{batch * alloc.world_size} with this allocation: adjust "
                         f"train.accumulate_grad_batches to keep it)")
    if alloc.cpu and t.accelerator == "gpu":
        problems.append("train.accelerator=gpu but the job asks for no GPUs (--cpu / gpus_per_node 0)")
    if not alloc.cpu and t.accelerator == "cpu":
        problems.append(f"train.accelerator=cpu but the job asks for {alloc.gpus_per_node} GPU(s) per node; "
                        "use --cpu for a CPU job")
    if alloc.cpu and t.strategy.startswith("deepspeed"):
        problems.append(f"train.strategy={t.strategy} needs GPUs; use ddp or fsdp for a CPU job")
    if problems:
        raise ConfigError(problems)
    return alloc


def check_single_task(cfg, stage: str, max_gpus: int) -> Allocation:
    """Array stages (eval, shards): every array task is one process on one node."""
    alloc = allocation(cfg.launch)
    problems = []
    if alloc.nodes != 1 or alloc.tasks_per_node != 1:
        problems.append(f"{stage} runs one process per array task: use --nodes 1 (got {alloc.nodes}) and one "
                        f"task per node (got {alloc.tasks_per_node}); parallelism comes from the array")
    if alloc.gpus_per_node > max_gpus:
        problems.append(f"{stage} array tasks use at most {max_gpus} GPU(s) each, got --gpus-per-node "
                        f"{alloc.gpus_per_node}")
    if problems:
        raise ConfigError(problems)
    return alloc


def cpu_notes(cfg, alloc: Allocation) -> list[str]:
    """Non-fatal advice printed with the submission."""
    notes = []
    need = cfg.data.num_workers + 1
    if cfg.data.source != "synthetic" and alloc.cpus_per_task < need:
        notes.append(f"note: --cpus-per-task {alloc.cpus_per_task} < data.num_workers + 1 = {need}; "
                     "loader workers will share cores")
    if cfg.launch.time_min < 60:
        notes.append(f"note: --time {cfg.launch.time_min} min < 60: submitit treats any signal as a timeout "
                     "below ~50 min")
    return notes
