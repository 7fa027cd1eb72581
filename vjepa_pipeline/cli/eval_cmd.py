"""``vjepa eval``: frozen-backbone evaluation suites (attentive / linear / k-NN probes)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """\
Evaluate a frozen encoder on the datasets of a suite (eval/*.yaml): features of S segments x V
views per video, a grid of probe heads (lr x wd) trained in one pass, the head chosen on a held-out
part of the training split (or best on val when the suite asks, labelled optimistic), low-shot
runs, then results.json, report.md, confusion-matrix and learning-curve PNGs and probe checkpoints.

encoder sources: a run directory or checkpoint of `vjepa pretrain` (its EMA target encoder), a
`vjepa export` file, an official V-JEPA / V-JEPA 2 checkpoint (describe the model with --model),
or a Hugging Face VJEPA2 directory (VJEPA2Model or VJEPA2ForVideoClassification).

--head evaluates a trained head as it is, on the validation split of one dataset, without training
probes: the pooler + classifier of a Hugging Face VJEPA2ForVideoClassification directory (mapped
onto our attentive probe; refused, with the reason, where it cannot be reproduced exactly) or a
probe file written by vjepa eval (probes/<dataset>.pt).

examples:
  vjepa eval --suite eval/k400.yaml --encoder runs/vitl16
  vjepa eval --suite k400 --encoder runs/vitl16                             # the packaged suite
  vjepa eval --suite eval/ssv2.yaml --encoder vitl16.pth --model model.size=large model.pos_embed=sincos
  vjepa eval --suite eval/k400.yaml --encoder runs/vitl16 --val-only      # re-evaluate saved probes
  vjepa eval --suite ssv2 --dataset ssv2 --encoder vjepa2-vitl-ssv2 --head vjepa2-vitl-ssv2   # HF classifier
"""


def register(sub) -> None:
    p = sub.add_parser("eval", help="frozen-backbone evaluation suites", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", type=Path, required=True,
                   help="suite YAML, or the name of a packaged suite such as k400 (see eval/)")
    p.add_argument("--encoder", required=True, help="run dir, checkpoint, exported file or HF directory")
    p.add_argument("--out", type=Path, help="report folder (default: eval_results/<suite name>)")
    p.add_argument("--dataset", action="append", help="only this dataset of the suite (repeatable)")
    p.add_argument("--val-only", action="store_true", help="re-evaluate the saved probes without training")
    p.add_argument("--head", metavar="SOURCE",
                   help="evaluate this trained head on one dataset, no training: a Hugging Face "
                        "VJEPA2ForVideoClassification directory or a probes/<dataset>.pt file")
    p.add_argument("--model", nargs="*", default=[], metavar="key=value",
                   help="architecture of checkpoints that do not carry it (official files)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..config.recipes import not_found, resolve_recipe
    from ..errors import UsageError
    from ..eval.suite import load_suite
    from .common import check_dataset, check_output

    path = resolve_recipe(args.suite, "eval")
    if path is None:
        raise UsageError(f"--suite: no file {args.suite}, and {not_found(args.suite, 'eval')}")
    suite = load_suite(path)
    if args.dataset:
        unknown = set(args.dataset) - {d.name for d in suite.datasets}
        if unknown:
            raise UsageError(f"--dataset {sorted(unknown)} not in the suite (has {[d.name for d in suite.datasets]})")
    head = None
    if args.head:
        from ..eval.hf_classifier import load_head

        chosen = args.dataset or [d.name for d in suite.datasets]
        if len(chosen) != 1:
            raise UsageError(f"--head evaluates one head on one dataset: pick it with --dataset (suite has {chosen})")
        head = load_head(args.head)
    out = args.out or Path("eval_results") / suite.name
    for i, ds in enumerate(suite.datasets):  # data that cannot be read at all: one line before any work
        if args.dataset and ds.name not in args.dataset:
            continue
        for split in ("val",) if args.val_only or head is not None else ("train", "val"):
            check_dataset(ds.source, getattr(ds, split), f"datasets[{i}].{split} ({ds.name})")
    check_output(out, "--out", folder=True, create=True)  # hours of features must not die at the report

    from ..eval.runner import run_suite  # torch: after the checks, so that a mistake is reported in a moment

    run_suite(suite, args.encoder, out, args.model, val_only=args.val_only, datasets=args.dataset, device=args.device,
              head=head)
    print(f"report: {out / 'report.md'}")
    return 0
