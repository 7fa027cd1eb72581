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
    p.add_argument("--steps", type=int, help="pretraining steps per seed (default: train.max_steps of configs/pretrain/demo.yaml, 800)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2)")
    p.add_argument("--quick", action="store_true", help="tiny dataset, 1 seed, few steps (a smoke test)")
    p.add_argument("--fresh", action="store_true", help="delete the working folder first")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..demo.pipeline import run_demo

    run_demo(args.out, minutes=args.minutes, fresh=args.fresh, seeds=args.seeds, steps=args.steps, quick=args.quick)
    return 0
