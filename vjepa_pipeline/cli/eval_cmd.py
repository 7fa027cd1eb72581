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

world models: `vjepa eval world-model RUN --data SHARDS` validates an action-conditioned predictor
offline (see `vjepa eval world-model --help`). Intuitive physics: `vjepa eval surprise --encoder RUN
--data SHARDS|SUITE` (see `vjepa eval surprise --help`).
"""

WM_HELP = """Validate a world model (V-JEPA 2-AC predictor on its frozen encoder) offline, without a robot: on
held-out trajectory shards, the k-step latent prediction error of the predictor rolled out with the
true actions, against two baselines a useful world model must beat: "the last frame stays" and "the
actions shuffled across the batch" (a predictor that ignores its actions scores the same with
shuffled and true actions). Windows are deterministic (frame 0 of each sample, then every window
length, up to --windows-per-sample), frames centre-cropped, actions combined as in training.

Writes results.json, report.md (a table per horizon) and plots/world_model_errors.png under --out.

examples:
  vjepa eval world-model runs/moving_square_cpu --data shards/moving_square/val
  vjepa export runs/droid_wm --format native --out wm.pt
  vjepa eval world-model wm.pt --data /data/shards/droid_val --horizons 1 2 4 --device cuda
"""


def model_override(token: str) -> str:
    """One ``key=value`` of --model. ``--model`` takes any number of values, so a subcommand named
    after it (``vjepa eval --model k=v surprise ...``) would be swallowed as a value: say where it goes."""
    if "=" not in token:
        hint = {"surprise": "; put --model after the subcommand: `vjepa eval surprise ... --model key=value`",
                "world-model": "; `vjepa eval world-model` takes no --model (the model is its first argument)"}
        hint = hint.get(token, "")
        raise argparse.ArgumentTypeError(f"expected key=value, got {token!r}{hint}")
    return token


def register(sub) -> None:
    p = sub.add_parser("eval", help="frozen-backbone evaluation suites", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", type=Path,
                   help="suite YAML, or the name of a packaged suite such as k400 (see eval/); required")
    p.add_argument("--encoder", help="run dir, checkpoint, exported file or HF directory; required")
    p.add_argument("--out", type=Path, help="report folder (default: eval_results/<suite name>)")
    p.add_argument("--dataset", action="append", help="only this dataset of the suite (repeatable)")
    p.add_argument("--val-only", action="store_true", help="re-evaluate the saved probes without training")
    p.add_argument("--head", metavar="SOURCE",
                   help="evaluate this trained head on one dataset, no training: a Hugging Face "
                        "VJEPA2ForVideoClassification directory or a probes/<dataset>.pt file")
    p.add_argument("--model", nargs="*", default=[], metavar="key=value", type=model_override,
                   help="architecture of checkpoints that do not carry it (official files)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.set_defaults(run=run)
    kinds = p.add_subparsers(dest="eval_kind", metavar="[world-model|surprise]")
    w = kinds.add_parser("world-model", help="offline validation of an action-conditioned world model",
                         description=WM_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    w.add_argument("model", help="world-model run directory, its model.ckpt, or a `vjepa export` file of one")
    w.add_argument("--data", required=True, help="held-out trajectory shards (folder, index.json or URL pattern)")
    w.add_argument("--horizons", type=int, nargs="+", default=[1, 2], metavar="K",
                   help="rollout horizons to report (default: 1 2)")
    # SUPPRESS: an option given before the subcommand (`vjepa eval --device cuda world-model ...`) is kept
    w.add_argument("--out", type=Path, default=argparse.SUPPRESS,
                   help="report folder (default: eval_results/world_model/<run name>)")
    w.add_argument("--batch-size", type=int, default=32, help="windows per batch (default 32)")
    w.add_argument("--windows-per-sample", type=int, default=4, help="windows read per sample (default 4)")
    w.add_argument("--seed", type=int, default=0, help="seed of the action shuffles (default 0)")
    w.add_argument("--device", default=argparse.SUPPRESS, help="cpu or cuda (default: cuda when available)")
    w.set_defaults(run=run_world_model)
    s = kinds.add_parser("surprise", help="intuitive physics: violation-of-expectation surprise of a JEPA",
                         description=SURPRISE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--encoder", required=True,
                   help="run directory, training checkpoint, or export / official file WITH its predictor")
    s.add_argument("--data", required=True,
                   help="shards with pair metadata, or a surprise suite YAML (eval/surprise/*.yaml)")
    s.add_argument("--out", type=Path, default=argparse.SUPPRESS,  # keeps `vjepa eval --out X surprise` (and --device)
                   help="report folder (default: eval_results/surprise/<encoder name>)")
    s.add_argument("--context-frames", type=int, nargs="+", metavar="C",
                   help="context lengths in frames (default: the suite's, else every whole-tubelet length)")
    s.add_argument("--frame-step", type=int, help="keep every k-th frame (default: the suite's, else the run's)")
    s.add_argument("--stride", type=int, help="frames between windows (default: the suite's, else 2)")
    s.add_argument("--window", type=int, help="frames per window (default: the suite's, else the model's clip length)")
    s.add_argument("--batch-size", type=int, default=16, help="windows per forward pass (default 16)")
    s.add_argument("--model", nargs="*", default=argparse.SUPPRESS, metavar="key=value", type=model_override,
                   help="architecture of checkpoints that do not carry it (official files)")
    s.add_argument("--device", default=argparse.SUPPRESS, help="cpu or cuda (default: cuda when available)")
    s.set_defaults(run=run_surprise)


SURPRISE_HELP = """\
Intuitive physics without training (Garrido et al. 2025): the JEPA's own predictor is surprised when
a video breaks the rules of its world. Windows of the model's clip length slide over each video; the
encoder sees the first C frames, the predictor predicts the latents of the rest, and surprise is the
L1 distance to the target encoder's latents of the real frames. A video scores the max (and mean) of
its surprise over time. On matched pairs (possible / impossible, identical until the event):
relative accuracy (the possible one less surprising), AUROC and absolute accuracy, per violation type.

--data: shards whose samples carry pair / violation / possible metadata (`vjepa data
generate-violations --shards DIR`), or a surprise suite YAML naming a local copy of IntPhys (dev),
GRASP or InfLevel-lab (eval/surprise/; nothing is downloaded). The encoder source must hold the
predictor (a run, a training checkpoint, `vjepa export --format native`, an official file).

Writes results.json, report.md, plots/surprise_over_time.png and plots/example_pairs.png under --out.

examples:
  vjepa data generate-violations --out data/violations --shards shards/violations
  vjepa eval surprise --encoder runs/demo/runs/pretrain_seed0 --data shards/violations --out eval_results/surprise
  vjepa eval surprise --encoder vitl16.pth --model model.size=large --data eval/surprise/intphys_dev.yaml
"""


def run_surprise(args) -> int:
    from ..errors import UsageError
    from .common import check_output

    for name in ("frame_step", "stride", "batch_size", "window"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')}: must be >= 1")
    if not Path(args.encoder).exists():
        raise UsageError(f"--encoder {args.encoder} does not exist")
    data = Path(args.data)
    if not data.exists():
        raise UsageError(f"--data {args.data} does not exist")
    from ..eval.surprise_data import SurpriseSuite, load_surprise_suite, read_pairs

    if data.suffix in (".yaml", ".yml"):
        suite = load_surprise_suite(data)
    else:
        suite = SurpriseSuite(name=data.name, dataset="shards", root=str(data))
    pairs, skipped = read_pairs(suite)  # nothing paired: one line, exit 2, before loading the model
    out = args.out or Path("eval_results") / "surprise" / Path(args.encoder).resolve().name
    check_output(out, "--out", folder=True, create=True)
    from ..eval.surprise import load_surprise_model
    from ..eval.surprise_report import run_surprise as score

    model = load_surprise_model(args.encoder, args.model)
    frame_step = args.frame_step or suite.frame_step or model.frame_step
    score(model, pairs, skipped, out, str(args.data), frame_step, args.stride or suite.stride,
          args.context_frames or suite.context_frames or None, args.batch_size, args.device,
          window=args.window or suite.window)
    return 0


def run_world_model(args) -> int:
    from ..errors import UsageError
    from .common import check_dataset, check_output

    if min(args.horizons) < 1:
        raise UsageError(f"--horizons: rollout horizons are >= 1 step, got {args.horizons}")
    for name in ("batch_size", "windows_per_sample"):
        if getattr(args, name) < 1 or (name == "batch_size" and args.batch_size < 2):
            raise UsageError(f"--{name.replace('_', '-')}: must be >= {2 if name == 'batch_size' else 1} "
                             "(shuffling actions needs two windows per batch)")
    if not Path(args.model).exists():
        raise UsageError(f"world model {args.model} does not exist")
    check_dataset("shards", args.data, "--data")  # data that cannot be read at all: one line, exit 2
    out = args.out or Path("eval_results") / "world_model" / Path(args.model).resolve().name
    check_output(out, "--out", folder=True, create=True)
    from ..eval.world_model_report import validate_world_model

    validate_world_model(args.model, args.data, out, args.horizons, args.batch_size, args.windows_per_sample,
                         args.device, args.seed)
    return 0


def run(args) -> int:
    from ..config.recipes import not_found, resolve_recipe
    from ..errors import UsageError
    from ..eval.suite import load_suite
    from .common import check_dataset, check_output

    if args.suite is None or args.encoder is None:
        raise UsageError("vjepa eval needs --suite and --encoder (or `vjepa eval world-model RUN --data SHARDS`)")
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
