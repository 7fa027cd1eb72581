"""`vjepa demo`: raw footage to evaluated encoder on one CPU.

Stages (each reused when its output already exists; ``--fresh`` starts over):
1. generate the motion-defined demo dataset (real mp4 files, folder per class + unlabelled pool);
2. build shards with the shard builder (train / val / pool);
3. pretrain the `demo` recipe on the unlabelled pool with the real trainer and loader, per seed;
4. evaluate frozen encoders with the eval suite: the pretrained target encoder, the same
   architecture randomly initialised, and a single-frame control (the pretrained encoder fed one
   frame repeated), per seed;
5. write a report folder: results table, loss and collapse curves, per-class accuracy, a PCA map
   of patch features, and the contact sheet of the shards.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

import torch

from ..config import config_to_dict, load_config
from ..utils.atomic import atomic_write_text
from .plan import RECIPE, SUITE, DemoPlan, pretrain_config


class Stage:
    """Prints a banner with elapsed time for each stage."""

    def __init__(self, name: str, index: int, total: int):
        self.name, self.index, self.total = name, index, total

    def __enter__(self):
        self.t0 = time.perf_counter()
        print(f"\n[{self.index}/{self.total}] {self.name}", flush=True)
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            print(f"[{self.index}/{self.total}] {self.name}: done in {time.perf_counter() - self.t0:.0f} s", flush=True)


def generate_data(plan: DemoPlan) -> dict:
    from .dataset import generate_demo_dataset

    info = generate_demo_dataset(plan.out / "data", train_per_class=plan.train_per_class,
                                 val_per_class=plan.val_per_class, unlabelled=plan.pool, workers=plan.workers)
    atomic_write_text(plan.out / "data" / "labels.txt", "\n".join(info["classes"]) + "\n")
    return info


def build_shards(plan: DemoPlan) -> None:
    from ..config.schema import ShardsConfig
    from ..shards.build import ShardBuilder

    labels = plan.out / "data" / "labels.txt"
    for split, labelled in (("train", True), ("val", True), ("unlabelled", False)):
        dest = plan.out / "shards" / ("pool" if split == "unlabelled" else split)
        opts = ShardsConfig(short_side=None, samples_per_shard=25, workers=plan.workers, labelled=labelled,
                            labels=str(labels) if labelled else None)
        index = ShardBuilder(plan.out / "data" / split, dest, opts, log=lambda *a: None).run(progress=False)
        print(f"  {split}: {index['totals']['samples']} clips in {len(index['shards'])} shards -> {dest}")


def demo_suite(plan: DemoPlan, single_frame: bool = False):
    from ..eval.suite import load_suite

    suite = load_suite(SUITE)
    ds = suite.datasets[0]
    ds.train, ds.val = str(plan.out / "shards" / "train"), str(plan.out / "shards" / "val")
    ds.single_frame = single_frame
    ds.probe.epochs = plan.probe_epochs or ds.probe.epochs
    suite.num_workers = min(suite.num_workers, plan.workers)
    return suite


def random_encoder(plan: DemoPlan, seed: int):
    """The same architecture as the pretrained encoder, randomly initialised with the run's seed."""
    from ..eval.encoders import LoadedEncoder, fingerprint
    from ..models.build import build_encoder

    cfg = pretrain_config(plan, seed)
    torch.manual_seed(seed)
    enc = build_encoder(cfg.model, cfg.data.num_frames, cfg.data.crop_size).eval().requires_grad_(False)
    return LoadedEncoder(enc, "random-init", f"random init (seed {seed})", fingerprint(enc), cfg.data.num_frames,
                         cfg.data.crop_size)


def evaluate(plan: DemoPlan) -> dict:
    from ..eval.encoders import load_encoder
    from ..eval.runner import run_suite

    rows: dict[str, list[dict]] = {"pretrained": [], "random init": [], "single-frame control": []}
    for seed in plan.seeds:
        run = plan.out / "runs" / f"pretrain_seed{seed}"
        cases = [("pretrained", load_encoder(run), False), ("random init", random_encoder(plan, seed), False),
                 ("single-frame control", load_encoder(run), True)]
        for label, enc, single in cases:
            out = plan.out / "eval" / f"seed{seed}" / label.replace(" ", "_")
            done = out / "results.json"
            cached = json.loads(done.read_text()) if done.exists() else None
            if cached and cached.get("encoder", {}).get("fingerprint") == enc.fingerprint:
                res = cached
                print(f"  reusing {done}")
            else:
                res = run_suite(demo_suite(plan, single), enc.source, out, encoder=enc, device="cpu",
                                log=lambda *a: None)
            ds = res["datasets"]["demo"]
            rows[label].append({"seed": seed, "top1": ds["top1"], "mean_class_acc": ds["mean_class_acc"],
                                "per_class": ds["per_class"], "class_names": ds["class_names"], "report": str(out)})
            print(f"  seed {seed} {label:<22} top-1 {100 * ds['top1']:5.1f}%", flush=True)
    return rows


def summarize(rows: dict) -> list[dict]:
    table = []
    for label, runs in rows.items():
        vals = [r["top1"] for r in runs]
        table.append({"label": label, "dataset": "demo", "top1": statistics.mean(vals),
                      "top1_std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "runs": vals})
    return table


def run_demo(out: str | Path = "runs/demo", minutes: float | None = None, fresh: bool = False,
             seeds: list[int] | None = None, steps: int | None = None, quick: bool = False) -> dict:
    """The whole demo; returns the summary written to <out>/report/summary.json."""
    from ..train.pretrain import pretrain
    from .report import write_demo_report

    out = Path(out)
    if fresh and out.exists():
        shutil.rmtree(out)
    plan = DemoPlan(out=out, seeds=seeds or ([0] if quick else [0, 1, 2]), steps=steps or (40 if quick else load_config(RECIPE).train.max_steps))
    if quick:
        plan.train_per_class, plan.val_per_class, plan.pool, plan.probe_epochs = 8, 4, 64, 5
    if minutes is not None and steps is None:  # a rough budget: ~0.1 s per step on 2 cores, 3 seeds
        plan.steps = max(50, int(minutes * 60 * 0.6 / (0.1 * len(plan.seeds))))
    t0 = time.perf_counter()
    total = 5
    with Stage("generate the demo dataset", 1, total):
        info = generate_data(plan)
        print(f"  {len(info['classes'])} motion classes: {', '.join(info['classes'])}")
    with Stage("build shards (train / val / unlabelled pool)", 2, total):
        build_shards(plan)
    with Stage(f"pretrain the demo recipe ({plan.steps} steps x {len(plan.seeds)} seeds)", 3, total):
        for seed in plan.seeds:
            summary = pretrain(pretrain_config(plan, seed), progress=False)
            print(f"  seed {seed}: step {summary['global_step']} -> {summary['run_dir']}")
    with Stage("frozen evaluation (pretrained vs random init vs single-frame control)", 4, total):
        rows = evaluate(plan)
    with Stage("report", 5, total):
        table = summarize(rows)
        result = {"classes": info["classes"], "seeds": plan.seeds, "steps": plan.steps, "comparisons": table,
                  "runs": rows, "seconds": round(time.perf_counter() - t0, 1),
                  "pretrain_config": config_to_dict(pretrain_config(plan, plan.seeds[0]))}
        paths = write_demo_report(plan, result)
    print("\n" + format_table(table))
    print(f"report: {paths['report']}  ({result['seconds']:.0f} s in total)")
    return result


def format_table(table: list[dict]) -> str:
    lines = ["encoder                  top-1 (mean +- std over seeds)   runs"]
    for row in table:
        runs = " ".join(f"{100 * v:.1f}" for v in row["runs"])
        lines.append(f"{row['label']:<24} {100 * row['top1']:6.1f}% +- {100 * row['top1_std']:4.1f}          {runs}")
    return "\n".join(lines)
