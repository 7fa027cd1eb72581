"""Submission of the three stages through submitit (or their dry runs).

Each ``plan_*`` function resolves the config (recipe < profile < overrides < flags), checks the
resources against what the stage needs, and returns a :class:`Launch`; ``submit`` (or ``dry_run``)
acts on it. Nothing reaches SLURM before every check has passed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError, apply_overrides, config_to_dict, dump_config, load_config
from . import rundir
from .profiles import apply_profile
from .resources import Allocation, check_pretrain, check_single_task, cpu_notes
from .sbatch import describe_job, executor_parameters, render_script


class LaunchError(RuntimeError):
    """Submission failed (sbatch refused the job, a job of this run is still queued, ...)."""


class JobFailed(RuntimeError):
    """A job waited for (--wait) failed or was cancelled."""


@dataclass
class Launch:
    stage: str
    cfg: Any
    alloc: Allocation
    out_dir: Path  # the run directory (pretrain), report folder (eval) or shard folder (shards)
    params: dict
    tasks: list = field(default_factory=list)  # callables, one per array task (one for pretrain)
    labels: list[str] = field(default_factory=list)
    after: Callable | None = None  # a job that runs when the array succeeded (shards: pack)
    notes: list[str] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return rundir.logs_dir(self.out_dir)

    @property
    def array(self) -> bool:
        return len(self.tasks) > 1


def resolve(config: str | Path | None, overrides: list[str], cluster: str | None, flags: list[str]):
    cfg = load_config(config, overrides)
    cfg = apply_profile(cfg, cluster)
    return apply_overrides(cfg, flags) if flags else cfg


def plan_pretrain(cfg) -> Launch:
    from ..train.pretrain import check_resume_config, run_dir_of

    alloc = check_pretrain(cfg)
    from .entry import PretrainJob

    run_dir = run_dir_of(cfg)
    check_resume_config(run_dir, cfg)  # a changed config for an existing run fails here, not in the job
    run_dir = run_dir.absolute()  # relative paths in the config stay relative: sbatch keeps this cwd

    params = executor_parameters(cfg.launch, alloc, f"vjepa-pretrain-{cfg.name}",
                                 describe_job("pretrain", f"{run_dir} (resumes from its `last`)"))
    return Launch("pretrain", cfg, alloc, run_dir, params, [PretrainJob(cfg)], [cfg.name],
                  notes=cpu_notes(cfg, alloc))


def plan_eval(cfg, suite_path: Path, encoders: list[str], out: Path | None, datasets: list[str] | None,
              model_overrides: list[str], per_dataset: bool = True) -> Launch:
    from ..eval.suite import load_suite
    from .entry import EvalTask, eval_out_dir

    alloc = check_single_task(cfg, "eval", max_gpus=1)
    suite = load_suite(suite_path)
    names = [d.name for d in suite.datasets]
    unknown = sorted(set(datasets or []) - set(names))
    if unknown:
        raise ConfigError(f"--dataset {unknown} not in the suite (has {names})")
    chosen = [n for n in names if not datasets or n in datasets]
    out = (out or Path("eval_results") / suite.name).absolute()
    labels_seen: dict[str, int] = {}
    tasks, labels = [], []
    device = "cpu" if alloc.cpu else None
    for enc in encoders:
        label = None
        if len(encoders) > 1:
            base = Path(enc.rstrip("/")).name or "encoder"
            labels_seen[base] = labels_seen.get(base, 0) + 1
            label = base if labels_seen[base] == 1 else f"{base}_{labels_seen[base]}"
        groups = [[n] for n in chosen] if per_dataset else [chosen]
        for group in groups:
            task_out = eval_out_dir(out, label, group[0] if per_dataset and len(chosen) > 1 else None)
            tasks.append(EvalTask(str(Path(suite_path).absolute()), _abs_if_path(enc), str(task_out), group,
                                  list(model_overrides), device))
            labels.append(f"{label or 'encoder'}:{','.join(group)} -> {task_out}")
    params = executor_parameters(cfg.launch, alloc, f"vjepa-eval-{suite.name}",
                                 describe_job("eval", f"{len(tasks)} task(s) of suite {suite.name}"),
                                 array=len(tasks) > 1)
    return Launch("eval", cfg, alloc, out, params, tasks, labels)


def plan_shards(cfg, source: Path, out_dir: Path, num_tasks: int) -> Launch:
    """A shard build (``cfg.shards``) as an encode job array and a dependent pack job.

    The plan (input discovery + shuffle) is made once, here: array task i encodes units i, i+n,
    i+2n, ... into the shared staging folder; the pack job, started only when the whole array
    succeeded, packs the shards and writes index.json. Every step resumes, so a failed or
    pre-empted task is fixed by re-running the same command: finished units are not redone.
    """
    from ..shards.build import ShardBuilder
    from .entry import encode_shards, pack_shards

    cfg = apply_overrides(cfg, ["launch.gpus_per_node=0"]) if cfg.launch.gpus_per_node else cfg
    alloc = check_single_task(cfg, "shards", max_gpus=0)
    builder = ShardBuilder(source, out_dir, cfg.shards, log=lambda *a: None)
    plan = builder.plan()  # discovery + shuffle once, here: every task reads the same plan
    n = max(1, min(num_tasks, len(plan["items"])))
    args = [str(Path(source).absolute()), str(Path(out_dir).absolute()), asdict(cfg.shards)]
    tasks = [partial(encode_shards, *args, i, n) for i in range(n)]  # picklable, as submitit needs
    params = executor_parameters(cfg.launch, alloc, "vjepa-shards",
                                 describe_job("shards", f"encode {len(plan['items'])} inputs in {n} task(s)"),
                                 array=n > 1)
    return Launch("shards", cfg, alloc, Path(out_dir).absolute(), params, tasks,
                  [f"encode {i}/{n}" for i in range(n)], after=partial(pack_shards, *args))


def submit_build(builder, cfg, num_tasks: int, cluster: str | None = None, wait: bool = False) -> int:
    """``vjepa shards build --slurm``: the build of ``builder`` (its source and output folder, with
    the settings ``cfg.shards``) planned by :func:`plan_shards` and submitted by :func:`submit`,
    as ``vjepa launch shards`` does. ``cluster`` is submitit's executor: None picks SLURM when
    ``srun`` is on the PATH and local processes otherwise; "local" always runs the encode tasks as
    local processes (logs in the staging folder), then packs here."""
    import submitit

    launch = plan_shards(cfg, builder.source, builder.out, num_tasks)
    if (cluster or submitit.AutoExecutor.which()) == "slurm":
        submit(launch, wait=wait)
    else:
        run_local(launch, builder.work / "submitit")
    return 0


def _abs_if_path(value: str) -> str:
    p = Path(value)
    return str(p.absolute()) if p.exists() else value


def dry_run(launch: Launch, out=None) -> str:
    """The sbatch script(s) and the resolved config, as text; nothing is submitted."""
    lines = [f"# vjepa launch {launch.stage} --dry-run: nothing submitted",
             f"# allocation: {launch.alloc.describe()}"]
    if launch.stage == "pretrain":
        t = launch.cfg.train
        lines.append(f"# Lightning: num_nodes={t.num_nodes} devices={t.devices} strategy={t.strategy} "
                     f"(--nodes {launch.alloc.nodes}, --ntasks-per-node {launch.alloc.tasks_per_node})")
    lines.append(f"# output: {launch.out_dir} (job logs in {launch.folder})")
    if launch.array:
        lines.append(f"# job array of {len(launch.tasks)} task(s):")
        lines += [f"#   [{i}] {label}" for i, label in enumerate(launch.labels)]
    lines += [*(f"# {n}" for n in launch.notes), "", "----- sbatch script -----",
              render_script(launch.params, launch.folder, len(launch.tasks) if launch.array else None)]
    if launch.after is not None:
        lines += ["----- then, after the array succeeds (dependency afterok) -----",
                  render_script({**launch.params, "array_parallelism": 1}, launch.folder)]
    lines += ["----- resolved config -----",
              yaml.safe_dump(config_to_dict(launch.cfg), sort_keys=False, default_flow_style=None)]
    text = "\n".join(lines)
    print(text, file=out or sys.stdout)
    return text


def submit(launch: Launch, wait: bool = False, log=print) -> list[str]:
    """Submit; record the submission in ``<out_dir>/launch/``; return the job ids."""
    import submitit

    alive = rundir.live_jobs(launch.out_dir)
    if alive:
        jobs = ", ".join(f"{j} ({s})" for j, s in sorted(alive.items()))
        raise LaunchError(f"{launch.out_dir} already has a queued or running job: {jobs}. "
                          f"Wait for it or `scancel` it before launching again")
    launch.folder.mkdir(parents=True, exist_ok=True)
    if launch.stage == "pretrain":
        dump_config(launch.cfg, launch.out_dir / "config.yaml")
    rundir.record_code(launch.out_dir)
    executor = submitit.SlurmExecutor(folder=str(launch.folder), max_num_timeout=launch.cfg.launch.max_requeues)
    executor.update_parameters(**launch.params)
    t0 = time.time()
    try:
        if launch.array:
            jobs = executor.submit_array(launch.tasks)
        else:
            jobs = [executor.submit(launch.tasks[0])]
    except Exception as exc:
        raise LaunchError(f"sbatch failed: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}") from exc
    main_id = jobs[0].job_id.split("_")[0]
    script = _submission_script(launch.folder, jobs[0].job_id, main_id)
    rundir.record_submission(launch.out_dir, main_id, script, launch.stage, launch.cfg.launch.cluster,
                             {"tasks": len(jobs), "labels": launch.labels})
    log(f"submitted {launch.stage} job {main_id}" + (f" ({len(jobs)} array tasks)" if launch.array else "")
        + f" in {time.time() - t0:.1f}s: output {launch.out_dir}, logs {launch.folder}")
    ids = [main_id]
    final = None
    if launch.after is not None:
        executor.update_parameters(additional_parameters={**launch.params.get("additional_parameters", {}),
                                                          "dependency": f"afterok:{main_id}"})
        final = executor.submit(launch.after)
        ids.append(final.job_id)
        rundir.record_submission(launch.out_dir, final.job_id, _submission_script(launch.folder, final.job_id,
                                 final.job_id), launch.stage + "-final", launch.cfg.launch.cluster)
        log(f"submitted job {final.job_id}: runs after job {main_id} succeeds")
    if wait:
        try:
            for job in [*jobs, *([final] if final is not None else [])]:
                job.results()  # every task of the job (one per rank)
        except Exception as exc:
            lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
            raise JobFailed(f"{launch.stage} job {main_id} did not finish: {lines[0] if lines else exc} "
                            f"(logs in {launch.folder})") from exc
        log(f"{launch.stage} job {main_id} finished")
    return ids


def run_local(launch: Launch, folder: Path, log=print) -> list:
    """Run ``launch`` without SLURM: its tasks as local processes (submitit's LocalExecutor, files
    in ``folder``), then, once every task succeeded, its ``after`` step in this process. Returns
    the results, in task order (then the ``after`` result)."""
    import submitit

    executor = submitit.LocalExecutor(folder=str(folder))
    executor.update_parameters(timeout_min=launch.cfg.launch.time_min)
    jobs = executor.submit_array(launch.tasks)
    log(f"started {len(jobs)} {launch.stage} task(s) as local processes (logs in {folder})")
    results = [job.result() for job in jobs]
    if launch.after is not None:
        results.append(launch.after())
        log(f"{launch.stage}: final step done: {results[-1]}")
    return results


def _submission_script(folder: Path, job_id: str, main_id: str) -> str:
    for name in (f"{job_id}_submission.sh", f"{main_id}_submission.sh"):
        if (folder / name).exists():
            return (folder / name).read_text()
    found = sorted(folder.glob(f"{main_id}*_submission.sh"))
    return found[0].read_text() if found else ""
