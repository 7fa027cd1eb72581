"""``vjepa data generate-demo``: write the motion-centric demo dataset (real H.264 mp4 files);
``vjepa data generate-trajectories``: write action-labelled episodes for the world model."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

GENERATE_HELP = """\
Generate the demo dataset: tiny motion-centric action recognition, in the spirit of
Something-Something. A clip's label is what happens over time, never what a frame looks like:

  move_left move_right move_up move_down   the object translates
  rotate_cw rotate_ccw                     the object turns (clockwise on screen / anti-clockwise)
  grow shrink                              the object scales up / down

Every clip shows one large textured object (with a marked side) on a static textured
background, with outline, texture, colours, size, position and orientation drawn independently
of the label (the world wraps around at the edges), so a single frame says nothing about the
class. Deterministic in --seed.

Written under --out:
  train/<class>/*.mp4, val/<class>/*.mp4   folder per class (`vjepa shards build` labels them)
  unlabelled/*.mp4                         pretraining pool, classes mixed
  dataset.json                             written last; re-running with the same options does
                                           nothing, an interrupted run is completed

examples:
  vjepa data generate-demo --out data/demo
  vjepa data generate-demo --out /tmp/demo_small --clips 100 --train-per-class 10 --val-per-class 5
  vjepa shards build data/demo/train shards/demo/train --labelled
  vjepa shards build data/demo/unlabelled shards/demo/pretrain --unlabelled
"""


def register(sub) -> None:
    p = sub.add_parser("data", help="datasets: generate the demo dataset or world-model trajectories",
                       description="Dataset utilities.")
    data_sub = p.add_subparsers(dest="data_command", metavar="<generate-demo|generate-trajectories|generate-violations|collect>",
                                required=True)
    g = data_sub.add_parser("generate-demo", help="write the motion-defined demo dataset (mp4 files)",
                            description=GENERATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("--out", type=Path, required=True,
                   help="output folder (new, empty, or an earlier demo dataset)")
    g.add_argument("--clips", type=int, default=800, metavar="N", help="unlabelled pool size (default 800)")
    g.add_argument("--train-per-class", type=int, default=40, metavar="N",
                   help="training clips per class (default 40)")
    g.add_argument("--val-per-class", type=int, default=10, metavar="N",
                   help="validation clips per class (default 10)")
    g.add_argument("--size", type=int, default=64, metavar="PX",
                   help="frame side in pixels, even (default 64)")
    g.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    g.add_argument("--fps", type=float, default=8, help="frame rate written to the files (default 8)")
    g.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    g.add_argument("--workers", type=int, default=2, help="parallel writer processes (default 2)")
    g.add_argument("--no-progress", action="store_true", help="no progress output")
    g.set_defaults(run=run_generate_demo)
    t = data_sub.add_parser("generate-trajectories", help="write generated episodes for the world model",
                            description=TRAJ_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    t.add_argument("--episodes", type=int, default=256, metavar="N", help="training episodes (default 256)")
    t.add_argument("--val-episodes", type=int, default=32, metavar="N", help="held-out episodes (default 32)")
    t.add_argument("--frames", type=int, default=24, help="frames per episode (default 24)")
    t.add_argument("--fps", type=float, default=10, help="frame rate written to the files (default 10)")
    t.add_argument("--seed", type=int, default=0, help="seed (default 0; held-out episodes use other seeds)")
    t.set_defaults(run=run_generate_trajectories)
    v = data_sub.add_parser("generate-violations", help="write violation-of-expectation pairs for `vjepa eval surprise`",
                            description=VIOLATIONS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("--out", type=Path, required=True, help="output folder (new, empty, or an earlier set)")
    v.add_argument("--shards", type=Path, help="also shard the set here with the shard builder")
    v.add_argument("--pairs", type=int, default=40, metavar="N", help="pairs per violation type (default 40)")
    v.add_argument("--violations", nargs="+", metavar="TYPE",
                   help="violation types (default: vanish appear teleport shape colour)")
    v.add_argument("--size", type=int, default=64, metavar="PX", help="frame side in pixels, even (default 64)")
    v.add_argument("--frames", type=int, default=32, help="frames per clip (default 32)")
    v.add_argument("--fps", type=float, default=8, help="frame rate written to the files (default 8)")
    v.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    v.add_argument("--no-progress", action="store_true", help="no progress output")
    v.set_defaults(run=run_generate_violations)
    c = data_sub.add_parser("collect", help="roll policies in an embedded environment and write episodes",
                            description=COLLECT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--env", required=True, help="environment: two_rooms or push")
    c.add_argument("--out", type=Path, required=True, help="output folder (new, or an earlier collection to extend)")
    c.add_argument("--episodes", type=int, default=200, metavar="N", help="episodes (default 200)")
    c.add_argument("--steps", type=int, default=50, help="actions per episode (frames = steps + 1; default 50)")
    c.add_argument("--policy-mix", type=float, default=0.5,
                   help="share of noisy goal-reaching episodes, the rest random (default 0.5)")
    c.add_argument("--fps", type=float, default=10, help="frame rate written to the videos (default 10)")
    c.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    c.set_defaults(run=run_collect)


COLLECT_HELP = """\
Collect episodes in an embedded environment (vjepa_pipeline/envs) with a mix of policies: random
(temporally correlated wandering) and noisy goal-reaching (waypoints, through the door in two_rooms;
approach and push in push). Written in the generic trajectory layout, like a robot's logs:
  <out>/ep_00000/{video.mp4, actions.npy (steps, 2), states.npy (steps + 1, S)} ...
Deterministic in --seed; each episode is written whole (temporary folder, then renamed), and
re-running the same command completes an interrupted collection.

examples:
  vjepa data collect --env two_rooms --out data/two_rooms/train --episodes 400
  vjepa data collect --env two_rooms --out data/two_rooms/val --episodes 40 --seed 1
  vjepa shards build data/two_rooms/train shards/two_rooms/train
"""


def run_collect(args) -> int:
    from ..envs import ENVS
    from ..errors import UsageError

    if args.env not in ENVS:
        raise UsageError(f"--env {args.env!r}: not an embedded environment (one of {', '.join(sorted(ENVS))})")
    for name in ("episodes", "steps"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name}: must be >= 1")
    if not 0.0 <= args.policy_mix <= 1.0:
        raise UsageError(f"--policy-mix: a share in [0, 1], got {args.policy_mix}")
    if not args.fps > 0:
        raise UsageError(f"--fps: must be > 0, got {args.fps}")
    from ..planning.collect import collect_episodes

    t0 = time.monotonic()
    try:
        summary = collect_episodes(args.env, args.out, args.episodes, args.steps, seed=args.seed,
                                   policy_mix=args.policy_mix, fps=args.fps)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    extra = {k: v for k, v in summary.items() if k in ("episodes_crossing", "episodes_pushing")}
    print(f"{args.env}: {summary['written']} episodes written, {summary['skipped']} already there, in {args.out} "
          f"({time.monotonic() - t0:.1f} s){'; ' + ', '.join(f'{k} {v}' for k, v in extra.items()) if extra else ''}")
    return 0


TRAJ_HELP = """\
Generate action-labelled episodes in the generic trajectory layout (docs/world_model.md): a 16 px
square on a 64x64 frame moves by its action, a random integer step of up to 6 px per axis and frame
(clipped at the borders: the recorded action is the displacement that happened); the state is the
square's top-left corner in px. Deterministic in --seed.

Written under --out:
  train/ep_000/{video.mp4, actions.npy, states.npy} ...   --episodes episodes
  val/ep_000/...                                          --val-episodes held-out episodes

examples:
  vjepa data generate-trajectories --out data/moving_square
  vjepa shards build data/moving_square/train shards/moving_square/train
  vjepa shards build data/moving_square/val shards/moving_square/val
  vjepa pretrain --config configs/world_model/moving_square_cpu.yaml
  vjepa eval world-model runs/moving_square_cpu --data shards/moving_square/val
"""


def run_generate_trajectories(args) -> int:
    from ..errors import UsageError
    from ..shards.trajectory_writers import write_episodes

    for name in ("episodes", "val_episodes", "frames"):
        if getattr(args, name) < (2 if name == "frames" else 1):
            raise UsageError(f"--{name.replace('_', '-')}: must be >= {2 if name == 'frames' else 1}")
    if not args.fps > 0:
        raise UsageError(f"--fps: must be > 0, got {args.fps}")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise UsageError(f"--out {args.out} exists and is not an empty folder: give a new one")
    t0 = time.monotonic()
    write_episodes(args.out / "train", args.episodes, args.frames, fps=args.fps, seed=args.seed)
    # held-out episodes draw from seeds no training episode uses
    write_episodes(args.out / "val", args.val_episodes, args.frames, fps=args.fps, seed=args.seed + 10**6)
    print(f"trajectories: {args.episodes} train / {args.val_episodes} val episodes of {args.frames} frames at "
          f"{args.fps:g} fps in {args.out} ({time.monotonic() - t0:.1f} s)")
    return 0


def run_generate_demo(args) -> int:
    from ..demo.dataset import DemoDatasetError, write_demo_dataset
    from ..errors import UsageError

    fps = int(args.fps) if float(args.fps).is_integer() else args.fps
    t0 = time.monotonic()
    try:
        info, written = write_demo_dataset(args.out, train_per_class=args.train_per_class,
                                           val_per_class=args.val_per_class, unlabelled=args.clips,
                                           size=args.size, frames=args.frames, fps=fps, seed=args.seed,
                                           workers=args.workers, progress=not args.no_progress)
    except (ValueError, DemoDatasetError) as exc:
        raise UsageError(str(exc)) from None
    except (RuntimeError, OSError) as exc:
        print(f"vjepa data generate-demo: error: {exc}", file=sys.stderr)
        return 1
    counts = info["counts"]
    n_train, n_val = sum(counts["train"].values()), sum(counts["val"].values())
    state = f"{written} clips written" if written else "already complete, nothing written"
    side, seconds = info["size"], time.monotonic() - t0
    print(f"demo dataset: {len(info['classes'])} classes, {n_train} train / {n_val} val / "
          f"{counts['unlabelled']} unlabelled clips ({side}x{side} px, {info['frames']} frames at "
          f"{info['fps']} fps, seed {info['seed']}) in {args.out}: {state} in {seconds:.1f} s")
    return 0


VIOLATIONS_HELP = """\
Generate a violation-of-expectation set in the demo's world (vjepa_pipeline/demo/violations.py):
pairs of clips identical until an event frame, one possible, its twin impossible:

  vanish     an object passes behind an occluder and never comes out
  appear     an object comes out from behind an occluder where none went in
  teleport   the object jumps across the frame
  shape      the outline changes (round <-> boxy)
  colour     colour and texture change

Written under --out: clips/*.mp4, manifest.csv (path, pair, violation, possible, event_frame: the
shard builder's manifest format) and violations.json (written last). Deterministic in --seed.

examples:
  vjepa data generate-violations --out data/violations --shards shards/violations
  vjepa eval surprise --encoder runs/demo/runs/pretrain_seed0 --data shards/violations --out eval_results/surprise
"""


def run_generate_violations(args) -> int:
    from ..demo.violations import VIOLATIONS, build_violation_shards, write_violation_set
    from ..errors import UsageError

    t0 = time.monotonic()
    try:
        info = write_violation_set(args.out, args.pairs, args.size, args.frames, args.fps, args.seed,
                                   tuple(args.violations or VIOLATIONS), progress=not args.no_progress)
    except ValueError as exc:
        raise UsageError(f"vjepa data generate-violations: {exc}") from None
    except (RuntimeError, OSError) as exc:
        print(f"vjepa data generate-violations: error: {exc}", file=sys.stderr)
        return 1
    print(f"violations: {info['pairs']} pairs ({', '.join(info['params']['violations'])}) in {args.out} "
          f"({time.monotonic() - t0:.1f} s)")
    if args.shards:
        index = build_violation_shards(args.out, args.shards)
        print(f"shards: {index['totals']['samples']} clips in {len(index['shards'])} shards -> {args.shards}")
    return 0
