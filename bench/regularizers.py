"""Collapse-prevention lab: the demo task under the V-JEPA objective alone, + SIGReg, + VICReg-style
variance / covariance, and SIGReg without an EMA target (LeJEPA), per seed.

Built on the demo's own pieces (vjepa_pipeline/demo/pipeline.py): the demo dataset and its shards,
the demo recipe's per-seed pretraining config run by the real trainer (`vjepa pretrain`), and the
demo eval suite's frozen probe. Per variant it reports the probe top-1, the collapse statistics
the trainer logs (pooled-embedding RankMe and target feature std, mean of the last 3 measurements)
and the median training step time; random init is probed as the floor.

    python bench/regularizers.py [--seeds 0,1,2] [--steps 800] [--threads 2] \
        [--variants vjepa,sigreg,vicreg,sigreg_no_ema] [--sigreg-weight 0.05] \
        [--vicreg-variance-weight 1.0] [--vicreg-covariance-weight 0.04] [--regularize context] \
        [--out runs/bench_regularizers] [--fresh] [--quick] [key=value ...]  # overrides of demo.yaml

Overrides reach every variant, e.g. ``objective.regularize_unit=token`` regularises every token
instead of one pooled embedding per clip.

``--quick`` is a smoke run (small dataset, 20 steps, seed 0, 5 probe epochs): it proves the
script works end to end, its numbers mean nothing. Finished runs and probes in ``--out`` are
reused (``--fresh`` starts over). Prints readable lines, then one JSON object as the last line
(``vs_baseline``: each variant's mean top-1 / the V-JEPA-alone mean top-1).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from vjepa_pipeline.config import apply_overrides, load_config  # noqa: E402
from vjepa_pipeline.demo.pipeline import build_shards, demo_suite, generate_data, random_encoder  # noqa: E402
from vjepa_pipeline.demo.plan import RECIPE, DemoPlan, pretrain_config  # noqa: E402
from vjepa_pipeline.eval.encoders import load_encoder  # noqa: E402
from vjepa_pipeline.eval.runner import run_suite  # noqa: E402
from vjepa_pipeline.train.pretrain import pretrain  # noqa: E402
from vjepa_pipeline.utils.jsonl import read_jsonl  # noqa: E402

VARIANTS = ("vjepa", "sigreg", "vicreg", "sigreg_no_ema")


def variant_overrides(name: str, a: argparse.Namespace) -> list[str]:
    """The config changes that make a variant (on top of the demo recipe)."""
    where = f"objective.regularize={a.regularize}"
    sigreg = [f"objective.sigreg_weight={a.sigreg_weight}", where]
    table = {
        "vjepa": [],
        "sigreg": sigreg,
        "vicreg": [f"objective.vicreg_variance_weight={a.vicreg_variance_weight}",
                   f"objective.vicreg_covariance_weight={a.vicreg_covariance_weight}", where],
        "sigreg_no_ema": [*sigreg, "optim.ema_schedule=none"],
    }
    return table[name]


def probe_top1(plan: DemoPlan, encoder, out: Path) -> float:
    """The demo suite's probe on a frozen encoder (cached in ``out`` by the encoder's fingerprint)."""
    done = out / "results.json"
    cached = json.loads(done.read_text()) if done.exists() else None
    if cached and cached.get("encoder", {}).get("fingerprint") == encoder.fingerprint:
        res = cached
    else:
        res = run_suite(demo_suite(plan), encoder.source, out, encoder=encoder, device="cpu", log=lambda *a: None)
    return 100.0 * res["datasets"]["demo"]["top1"]


def run_stats(run: Path) -> dict:
    """Median step time and the last collapse statistics from the run's metrics.jsonl."""
    rows = read_jsonl(run / "metrics.jsonl")
    times = [r["step_time_s"] for r in rows if r.get("step", 0) > 1 and "step_time_s" in r]
    measured = [r for r in rows if "collapse/pooled_rankme" in r][-3:]
    mean = lambda key: statistics.mean(r[key] for r in measured) if measured else float("nan")  # noqa: E731
    return {"step_time_s": statistics.median(times) if times else float("nan"),
            "pooled_rankme": mean("collapse/pooled_rankme"), "target_std": mean("collapse/target_std_mean"),
            "loss_pred": rows[-1].get("loss_pred", rows[-1].get("loss")) if rows else float("nan")}


def summarize(runs: list[dict]) -> dict:
    """Mean +- std of top-1 over seeds; mean RankMe / std and median step time (None: not trained)."""
    top1 = [r["top1"] for r in runs]
    trained = "step_time_s" in runs[0]
    return {"top1_mean": round(statistics.mean(top1), 1),
            "top1_std": round(statistics.stdev(top1), 1) if len(top1) > 1 else 0.0,
            "top1": [round(v, 1) for v in top1],
            "pooled_rankme": round(statistics.mean(r["pooled_rankme"] for r in runs), 2) if trained else None,
            "target_std": round(statistics.mean(r["target_std"] for r in runs), 4) if trained else None,
            "step_time_s": round(statistics.median(r["step_time_s"] for r in runs), 4) if trained else None}


def cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default=None, help="comma-separated seeds (pretraining and data order); default 0,1,2 "
                                                 "(--quick: 0)")
    p.add_argument("--steps", type=int, default=None, help="pretraining steps (default: the demo recipe's)")
    p.add_argument("--threads", type=int, default=2, help="intra-op CPU threads (train.num_threads and the probe)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--sigreg-weight", type=float, default=0.05, help="objective.sigreg_weight of the SIGReg variants")
    p.add_argument("--vicreg-variance-weight", type=float, default=1.0, help="objective.vicreg_variance_weight")
    p.add_argument("--vicreg-covariance-weight", type=float, default=0.04,
                   help="objective.vicreg_covariance_weight; the default keeps VICReg's 25 : 25 : 1 (invariance : variance : covariance) ratio, with the prediction "
                        "loss in the invariance term's place")
    p.add_argument("--regularize", default="context", choices=("context", "predictor", "both"),
                   help="objective.regularize: which outputs the regularisers see")
    p.add_argument("--out", default=None, help="working folder (default runs/bench_regularizers[_quick])")
    p.add_argument("--fresh", action="store_true", help="delete the working folder first")
    p.add_argument("--quick", action="store_true", help="a tiny smoke run (numbers mean nothing)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of configs/pretrain/demo.yaml, for every variant")
    a = p.parse_args(argv)
    variants = [v for v in a.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    seeds = [int(s) for s in (a.seeds or ("0" if a.quick else "0,1,2")).split(",") if s]
    out = Path(a.out or ("runs/bench_regularizers_quick" if a.quick else "runs/bench_regularizers"))
    if a.fresh and out.exists():
        shutil.rmtree(out)
    torch.set_num_threads(a.threads)
    plan = DemoPlan(out=out, seeds=seeds, steps=a.steps or load_config(RECIPE).train.max_steps)
    if a.quick:
        plan.steps = a.steps or 20
        plan.train_per_class, plan.val_per_class, plan.pool, plan.probe_epochs = 6, 3, 48, 5
    t0 = time.perf_counter()
    if not (out / "shards" / "val").exists():
        info = generate_data(plan)
        print(f"demo dataset: {len(info['classes'])} classes ({time.perf_counter() - t0:.0f} s)", flush=True)
        build_shards(plan)
    common = [f"train.num_threads={a.threads}", f"train.stats_every_steps={max(1, plan.steps // 10)}", *a.overrides]

    rows: dict[str, list[dict]] = {v: [] for v in ["random init", *variants]}
    for seed in seeds:
        top1 = probe_top1(plan, random_encoder(plan, seed), out / "eval" / f"seed{seed}" / "random_init")
        rows["random init"].append({"top1": top1})
        print(f"seed {seed}  random init      top-1 {top1:5.1f}%", flush=True)
        for variant in variants:
            cfg = apply_overrides(pretrain_config(plan, seed),
                                  [f"name={variant}_seed{seed}", *variant_overrides(variant, a), *common])
            t = time.perf_counter()
            summary = pretrain(cfg, progress=False)
            run = Path(summary["run_dir"])
            stats = run_stats(run)
            top1 = probe_top1(plan, load_encoder(run), out / "eval" / f"seed{seed}" / variant)
            rows[variant].append({"top1": top1, **stats})
            print(f"seed {seed}  {variant:<15}  top-1 {top1:5.1f}%  pooled RankMe {stats['pooled_rankme']:5.2f}  "
                  f"target std {stats['target_std']:.4f}  {stats['step_time_s']:.3f} s/step  "
                  f"[{time.perf_counter() - t:.0f} s]", flush=True)

    table = {v: summarize(r) for v, r in rows.items()}
    print("\nvariant          top-1 mean +- std   runs                 pooled RankMe  target std  s/step")
    for v, s in table.items():
        runs = " / ".join(f"{x:.1f}" for x in s["top1"])
        print(f"{v:<16} {s['top1_mean']:6.1f}% +- {s['top1_std']:4.1f}   {runs:<20} {cell(s['pooled_rankme'], '13.2f')}  "
              f"{cell(s['target_std'], '10.4f')}  {cell(s['step_time_s'], '.3f')}")
    base = table.get("vjepa", {}).get("top1_mean")
    result = {"bench": "regularizers", "quick": a.quick, "seeds": seeds, "steps": plan.steps, "threads": a.threads,
              "weights": {"sigreg": a.sigreg_weight, "vicreg_variance": a.vicreg_variance_weight,
                          "vicreg_covariance": a.vicreg_covariance_weight, "regularize": a.regularize},
              "variants": table,
              "vs_baseline": {v: round(s["top1_mean"] / base, 3) for v, s in table.items()} if base else None,
              "seconds": round(time.perf_counter() - t0, 1), "device": "cpu"}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
