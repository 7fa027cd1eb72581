"""``vjepa demo``: the embedded end-to-end run (generate -> shard -> pretrain -> evaluate -> report)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """\
Raw footage to evaluated encoder on one CPU: generates a motion-defined action dataset as real
mp4 files, shards it with the shard builder, pretrains the `demo` recipe on the unlabelled pool
with the real trainer and loader (one run per seed), evaluates frozen encoders with the eval
suite (pretrained vs the same architecture randomly initialised vs a single-frame control), and
writes a report folder. Re-running reuses finished stages; --fresh starts over.
"""


def register(sub) -> None:
    p = sub.add_parser("demo", help="end-to-end demo on generated data (CPU, minutes)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="working folder (default runs/demo)")
    p.add_argument("--minutes", type=float, help="rough time budget: sets the pretraining steps")
    p.add_argument("--steps", type=int, help="pretraining steps per seed (default: train.max_steps of configs/pretrain/demo.yaml, 1600)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2)")
    p.add_argument("--quick", action="store_true", help="tiny dataset, 1 seed, few steps (a smoke test)")
    p.add_argument("--fresh", action="store_true", help="delete the working folder first")
    p.set_defaults(run=run)
    kinds = p.add_subparsers(dest="demo_kind", metavar="[surprise | world-model]")
    s = kinds.add_parser("surprise", help="intuitive physics of the demo's checkpoints vs random init",
                         description=SURPRISE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--out", type=Path, default=argparse.SUPPRESS,  # no default here: `demo --out X surprise` works too
                   help="the working folder of a finished `vjepa demo` (default runs/demo)")
    s.add_argument("--seeds", type=int, nargs="+", help="seeds (default: every finished pretraining run)")
    s.add_argument("--pairs", type=int, default=40, help="pairs per violation type (default 40)")
    s.add_argument("--set-seed", type=int, default=0,
                   help="seed of the violation set (default 0); another seed draws a held-out set, scored "
                        "under <out>/surprise_set<seed>/")
    s.set_defaults(run=run_surprise)
    w = kinds.add_parser("world-model", help="a world model that plans: two_rooms, trained and compared with baselines",
                         description=WORLD_MODEL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    w.add_argument("--out", type=Path, default=argparse.SUPPRESS,
                   help="working folder (default runs/demo_world_model)")
    w.add_argument("--pairs", type=int, help="start / goal pairs to plan on (default 50; --quick: 6)")
    w.add_argument("--steps", type=int, help="training steps of each world model (default: the recipe's, 1200)")
    w.add_argument("--quick", action="store_true", default=argparse.SUPPRESS,
                   help="small dataset, short training, few pairs (a smoke test)")
    w.add_argument("--fresh", action="store_true", default=argparse.SUPPRESS, help="delete the working folder first")
    w.set_defaults(run=run_world_model)


SURPRISE_HELP = """\
Intuitive physics on the demo: generates violation-of-expectation pairs in the demo's world (vanish /
appear behind an occluder, teleport, shape change, colour change; see `vjepa data generate-violations`),
shards them, and scores them with `vjepa eval surprise`'s machinery for every pretrained seed of a
finished `vjepa demo` folder and for the same architecture randomly initialised. Writes
<out>/surprise/ (per-seed reports, summary.json, summary.md: relative accuracy per violation type,
mean +- std over seeds). A few minutes on a 2-core CPU. --set-seed K scores a held-out set drawn with
another seed, under <out>/surprise_setK/.
"""


WORLD_MODEL_HELP = """\
A world model that acts, on one CPU in about ten minutes: collects episodes in the embedded two_rooms
environment (a point agent, a wall with a door) as real videos + actions + states, shards them, trains
a world model with the real trainer (configs/world_model/two_rooms_cpu.yaml: a conv encoder trained with
the V-JEPA 2-AC predictor under variance / covariance / time-similarity terms) and the same predictor on
a random-init encoder, then plans toward goal images with CEM in latent space on fixed start / goal
pairs across the wall, against a random policy and a greedy controller. Writes <out>/report/
(summary.json, summary.md, paths and energy-landscape pictures, prediction error over the horizon).
Re-running reuses finished stages; --fresh starts over.
"""


def run_world_model(args) -> int:
    from ..demo.world_model import run_world_model_demo
    from ..errors import UsageError

    for name in ("pairs", "steps"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UsageError(f"--{name}: must be >= 1")
    out = args.out if "out" in vars(args) and args.out != Path("runs/demo") else Path("runs/demo_world_model")
    run_world_model_demo(out, quick=getattr(args, "quick", False), fresh=getattr(args, "fresh", False),
                         pairs=args.pairs, steps=args.steps)
    return 0


def run_surprise(args) -> int:
    from ..demo.surprise import run_demo_surprise
    from ..errors import UsageError

    if args.pairs < 1:
        raise UsageError("--pairs: must be >= 1")
    if args.set_seed < 0:
        raise UsageError("--set-seed: must be >= 0")
    run_demo_surprise(args.out, seeds=args.seeds, pairs=args.pairs, set_seed=args.set_seed)
    return 0


def run(args) -> int:
    import sys

    from ..demo.dataset import DemoDatasetError
    from ..demo.pipeline import run_demo
    from ..errors import UsageError
    from ..shards.build import BuildError, EnvironmentalFailure

    try:
        run_demo(args.out, minutes=args.minutes, fresh=args.fresh, seeds=args.seeds, steps=args.steps,
                 quick=args.quick)
    except EnvironmentalFailure as exc:  # disk full, ffmpeg killed...: a runtime failure, stages kept
        print(f"vjepa demo: shard build failed: {exc}", file=sys.stderr)
        return 1
    except (DemoDatasetError, BuildError) as exc:  # --out holds files the demo did not write: kept
        raise UsageError(str(exc)) from None
    return 0
