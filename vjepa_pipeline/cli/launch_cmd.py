"""``vjepa launch pretrain|eval|shards``: run a stage on SLURM through submitit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import DEFAULT_RECIPE

HELP = """\
Submit a stage to SLURM (submitit, one task per GPU, started with srun). Resources come from, lowest
first: the config's launch.* section, a cluster profile (--cluster NAME reads
slurm/profiles/NAME.yaml: partition, account, qos, setup lines ...), dotted launch.* overrides, and
the flags below. The allocation is checked against the trainer before anything is submitted
(--nodes = train.num_nodes, tasks per node = train.devices). --dry-run prints the sbatch script and
the resolved config instead of submitting.

Pretraining jobs write into the run directory: config.yaml, logs/ (job output), launch/ (git commit
and diff, sbatch scripts, submissions, job ids per requeue). On the warning signal (launch.signal,
USR2, launch.signal_delay_s before the time limit, or `scancel --signal=USR2 <job>`) every rank
saves a checkpoint at the same step, the job requeues itself (at most launch.max_requeues times)
and resumes from `last`.

examples:
  vjepa launch pretrain --config configs/pretrain/vjepa_vitl16.yaml --cluster example --dry-run
  vjepa launch pretrain --config configs/pretrain/vjepa_vitl16.yaml --nodes 4 --gpus-per-node 8 \\
      --partition gpu --time 3-00:00:00 train.num_nodes=4 train.accumulate_grad_batches=4 data.path=/data/mix
  vjepa launch pretrain --config configs/pretrain/debug.yaml --cluster local --nodes 2 train.num_nodes=2
  vjepa launch eval --suite eval/k400.yaml --encoder runs/vitl16 --encoder runs/vith16 --cluster example
  vjepa launch shards ~/videos/k400 shards/k400 --tasks 64 --cluster example
"""


def _resource_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SLURM resources (override launch.* and the cluster profile)")
    g.add_argument("--cluster", help="cluster profile: a name in slurm/profiles/ or a YAML file")
    g.add_argument("--nodes", type=int, help="--nodes (must equal train.num_nodes)")
    g.add_argument("--gpus-per-node", type=int, help="GPUs per node = tasks per node (must equal train.devices)")
    g.add_argument("--cpu", action="store_true", help="CPU job: no GPUs, --tasks-per-node processes on gloo")
    g.add_argument("--tasks-per-node", type=int, help="tasks per node of a CPU job (default: gpus per node, or 1)")
    g.add_argument("--cpus-per-task", type=int, help="CPU cores per task (loader workers + 1)")
    g.add_argument("--mem-per-gpu", help="memory per GPU, e.g. 64G")
    g.add_argument("--mem", help="memory per node, e.g. 32G (CPU jobs)")
    g.add_argument("--partition", help="partition")
    g.add_argument("--account", help="account")
    g.add_argument("--qos", help="quality of service")
    g.add_argument("--time", help="time limit: minutes, HH:MM:SS or D-HH:MM:SS")
    g.add_argument("--constraint", help="node features, e.g. h100")
    g.add_argument("--exclude", help="nodes to avoid")
    g.add_argument("--signal-delay", type=int, help="seconds before the time limit to send launch.signal")
    g.add_argument("--max-requeues", type=int, help="self-requeues allowed after preemption / time limit")
    g.add_argument("--array-parallelism", type=int, help="array tasks running at once (eval, shards)")
    g.add_argument("--dry-run", action="store_true", help="print the sbatch script and resolved config; submit nothing")
    g.add_argument("--wait", action="store_true", help="wait until the job(s) finished")


def register(sub) -> None:
    p = sub.add_parser("launch", help="run pretrain / eval / shards on SLURM (submitit)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    stages = p.add_subparsers(dest="stage", metavar="<pretrain|eval|shards>", required=True)

    pt = stages.add_parser("pretrain", help="pretraining job (one task per GPU, requeues on preemption)",
                           description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    pt.add_argument("--config", type=Path, default=DEFAULT_RECIPE, help=f"YAML recipe (default {DEFAULT_RECIPE})")
    pt.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    _resource_args(pt)
    pt.set_defaults(run=run_pretrain)

    ev = stages.add_parser("eval", help="eval suite as a job array (one task per dataset and encoder)")
    ev.add_argument("--suite", type=Path, required=True, help="suite YAML (see eval/)")
    ev.add_argument("--encoder", action="append", required=True,
                    help="run dir, checkpoint, exported file or HF dir; repeat for one task per checkpoint")
    ev.add_argument("--out", type=Path, help="report folder (default eval_results/<suite>); per task "
                                             "<out>[/<encoder>][/<dataset>]")
    ev.add_argument("--dataset", action="append", help="only this dataset of the suite (repeatable)")
    ev.add_argument("--whole-suite", action="store_true", help="one task per encoder instead of per dataset")
    ev.add_argument("--model", nargs="*", default=[], metavar="key=value",
                    help="architecture of checkpoints that do not carry it (official files)")
    ev.add_argument("--config", type=Path, help="YAML whose launch.* section gives the resources")
    ev.add_argument("overrides", nargs="*", metavar="key=value", help="dotted launch.* overrides")
    _resource_args(ev)
    ev.set_defaults(run=run_eval)

    sh = stages.add_parser("shards", help="shard building as a job array, then a dependent pack job")
    sh.add_argument("source", type=Path, help="video folder or manifest")
    sh.add_argument("out_dir", type=Path, help="output folder for shards and index.json")
    sh.add_argument("--tasks", type=int, default=16, help="array tasks encoding in parallel (default 16)")
    sh.add_argument("--config", type=Path, help="YAML recipe whose shards.* and launch.* sections are used")
    sh.add_argument("overrides", nargs="*", metavar="key=value", help="dotted shards.* / launch.* overrides")
    _resource_args(sh)
    sh.set_defaults(run=run_shards)


def _resolve(args):
    from ..launch.resources import flag_overrides
    from ..launch.submit import resolve

    return resolve(args.config, list(args.overrides), args.cluster, flag_overrides(args))


def _go(args, launch) -> int:
    from ..launch.submit import JobFailed, LaunchError, dry_run, submit

    if args.dry_run:
        dry_run(launch)
        return 0
    for note in launch.notes:
        print(note)
    try:
        submit(launch, wait=args.wait)
    except LaunchError as exc:
        from ..errors import UsageError

        raise UsageError(str(exc)) from None
    except JobFailed as exc:
        print(f"vjepa launch {args.stage}: {exc}", file=sys.stderr)
        return 1
    return 0


def run_pretrain(args) -> int:
    from ..launch.submit import plan_pretrain

    return _go(args, plan_pretrain(_resolve(args)))


def run_eval(args) -> int:
    from ..launch.submit import plan_eval

    launch = plan_eval(_resolve(args), args.suite, args.encoder, args.out, args.dataset, args.model,
                       per_dataset=not args.whole_suite)
    return _go(args, launch)


def run_shards(args) -> int:
    from ..launch.submit import plan_shards
    from ..shards.build import BuildError
    from ..shards.items import SourceError
    from ..errors import UsageError

    try:
        launch = plan_shards(_resolve(args), args.source, args.out_dir, args.tasks)
    except (BuildError, SourceError) as exc:
        raise UsageError(str(exc)) from None
    return _go(args, launch)
