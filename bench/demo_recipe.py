"""Demo-recipe lab: does a recipe make the frozen encoder better than random init on the demo task?

A fast loop for tuning configs/pretrain/demo.yaml (minutes, not the full `vjepa demo`): demo clips
are rendered in memory (no mp4 / shards / loader), the JEPA step is the trainer's own objective
(``VJEPAObjective``: model, masks, collapse regularisers, EMA or ``ema_schedule: none``) in a plain
PyTorch loop with the trainer's schedules, and the probe is the eval package's one-pass grid with the demo suite's
settings. It probes the target encoder at random init and after each ``--eval-at`` step, and
prints collapse statistics (RankMe of target tokens) next to each accuracy.

    python bench/demo_recipe.py [--steps 800] [--eval-at 0,400,800] [--frame-step 2] \
        [--probe-epochs 80] [--probe-seeds 0,1,2] [--layer-sets="-1;-2,-1"] \
        [--supervised-ceiling 600] [key=value ...]   # overrides of demo.yaml

``--probe-seeds`` trains the probe once per seed on the same features and reports the mean (the
probe alone moves by +-3-4 points between seeds on this 320-clip set); ``--layer-sets`` probes
other blocks' outputs (concatenated, as the eval suite's ``layers``).

``--supervised-ceiling N`` also trains the same encoder end to end WITH the labels for N steps
(mean-pooled tokens + linear head) and probes it: what this encoder can reach on this labelled
set. If the random-init probe already matches it, no pretraining can show a clear gain there.

Prints readable lines, then one JSON object as the last line (``vs_baseline`` = pretrained top-1
at the last step / random-init top-1; chance is 1 / the number of classes).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vjepa_pipeline.config import load_config  # noqa: E402
from vjepa_pipeline.demo import dataset as dd  # noqa: E402
from vjepa_pipeline.data.augment import train_augment  # noqa: E402
from vjepa_pipeline.models.inputs import normalize_clips  # noqa: E402
from vjepa_pipeline.eval.grid import train_probe_grid  # noqa: E402
from vjepa_pipeline.eval.suite import load_suite  # noqa: E402
from vjepa_pipeline.models.collapse import rankme  # noqa: E402
from vjepa_pipeline.models.optim import apply_schedules, build_adamw  # noqa: E402
from vjepa_pipeline.models.build import build_jepa  # noqa: E402
from vjepa_pipeline.objectives import build_objective  # noqa: E402
from vjepa_pipeline.data.batch import ClipBatch, StreamPosition  # noqa: E402


def labelled(split: str, per_class: int, frame_step: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    clips, labels = [], []
    for ci, cls in enumerate(dd.CLASSES):
        for i in range(per_class):
            clips.append(dd.dataset_clip(seed, split, i, cls)[1][::frame_step])
            labels.append(ci)
    return np.stack(clips), np.array(labels)


def pool(n: int, frame_step: int, seed: int) -> np.ndarray:
    return np.stack([dd.dataset_clip(seed, "unlabelled", i)[1][::frame_step] for i in range(n)])


LAYER_SETS: tuple[tuple[int, ...], ...] = ((-1,),)


@torch.no_grad()
def features(encoder, clips: np.ndarray, batch: int = 32, layers: tuple[int, ...] = (-1,)) -> torch.Tensor:
    """Frozen tokens of ``layers`` (block indices, concatenated along the feature axis, as the eval
    package's ``layers``)."""
    encoder.eval()

    def run(x):
        return encoder(x) if layers == (-1,) else torch.cat(encoder(x, return_layers=list(layers)), dim=-1)

    out = [run(normalize_clips(torch.from_numpy(clips[i:i + batch]))) for i in range(0, len(clips), batch)]
    return torch.cat(out)[:, None, None]  # (M, segments, views, N, D)


PROBE_SEEDS = (0,)


def probe(encoder, data: dict, probe_cfg, label: str) -> dict:
    rows = [probe_layers(encoder, data, probe_cfg, label + ("" if ls == (-1,) else f" layers {ls}"), ls)
            for ls in LAYER_SETS]
    return rows[0] if len(rows) == 1 else {**rows[0], "layer_sets": {str(ls): r for ls, r in zip(LAYER_SETS, rows)}}


def probe_layers(encoder, data: dict, probe_cfg, label: str, layers: tuple[int, ...]) -> dict:
    t0 = time.perf_counter()
    ftr, fva = features(encoder, data["train"][0], layers=layers), features(encoder, data["val"][0], layers=layers)
    runs = [train_probe_grid(ftr, torch.from_numpy(data["train"][1]), fva, torch.from_numpy(data["val"][1]),
                             len(dd.CLASSES), probe_cfg, seed=s) for s in PROBE_SEEDS]
    tokens = F.layer_norm(ftr[:, 0, 0].float(), (ftr.shape[-1],)).flatten(0, 1)
    top1s = [r.top1 for r in runs]
    row = {"top1": round(float(np.mean(top1s)), 1), "probe_seed_top1": [round(t, 1) for t in top1s],
           "best_on_val": round(max(g["val_top1"] for r in runs for g in r.grid), 1),
           "token_rankme": round(rankme(tokens[:4096]), 1)}
    seeds = f" probe seeds {'/'.join(f'{t:.1f}' for t in top1s)}" if len(top1s) > 1 else ""
    print(f"  {label:<22} probe top-1 {row['top1']:5.1f}% (best on val {row['best_on_val']:5.1f}%){seeds}  "
          f"token RankMe {row['token_rankme']:5.1f}  [{time.perf_counter() - t0:.0f} s]", flush=True)
    return row


def supervised_ceiling(cfg, data: dict, steps: int, probe_cfg) -> dict:
    """Train a fresh encoder end to end on the labelled train clips; probe its frozen features."""
    torch.manual_seed(cfg.train.seed)
    encoder = build_jepa(cfg).encoder
    head = torch.nn.Linear(encoder.embed_dim, len(dd.CLASSES))
    opt = torch.optim.AdamW(list(encoder.parameters()) + list(head.parameters()), lr=5e-4, weight_decay=0.05)
    clips, labels = torch.from_numpy(data["train"][0]), torch.from_numpy(data["train"][1])
    rng, d = random.Random(cfg.data.seed), cfg.data
    t0 = time.perf_counter()
    for step in range(steps):
        idx = [rng.randrange(len(clips)) for _ in range(16)]
        batch = torch.stack([train_augment(clips[i], 64, rng, d.crop_scale, d.crop_ratio, 0.0) for i in idx])
        encoder.train()
        loss = F.cross_entropy(head(encoder(normalize_clips(batch)).mean(1)), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    encoder.eval()
    with torch.no_grad():
        logits = head(features(encoder, data["val"][0])[:, 0, 0].mean(1))
    end_to_end = 100.0 * float((logits.argmax(1).numpy() == data["val"][1]).mean())
    seconds = time.perf_counter() - t0
    print(f"  supervised end to end ({steps} steps, {seconds:.0f} s): val top-1 {end_to_end:.1f}%",
          flush=True)
    row = probe(encoder, data, probe_cfg, "supervised (ceiling)")
    return {**row, "end_to_end_top1": round(end_to_end, 1), "steps": steps}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--eval-at", default="0,400,800", help="steps at which to probe (0 = random init)")
    p.add_argument("--frame-step", type=int, default=2, help="temporal subsampling of the 16-frame demo clips")
    p.add_argument("--pool", type=int, default=600, help="unlabelled clips (the demo default)")
    p.add_argument("--train-per-class", type=int, default=40)
    p.add_argument("--val-per-class", type=int, default=25)
    p.add_argument("--probe-epochs", type=int, default=None, help="default: eval/demo.yaml")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layer-sets", default="-1", help="semicolon-separated block lists to probe, given with '=': --layer-sets='-1;-2,-1'")
    p.add_argument("--probe-seeds", default="0", help="comma-separated probe seeds; the top-1 is their mean")
    p.add_argument("--supervised-ceiling", type=int, default=0, metavar="STEPS",
                   help="also train the encoder end to end with the labels for STEPS steps and probe it")
    p.add_argument("overrides", nargs="*", help="key=value overrides of configs/pretrain/demo.yaml")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    global PROBE_SEEDS, LAYER_SETS
    LAYER_SETS = tuple(tuple(int(x) for x in ls.split(",")) for ls in a.layer_sets.split(";") if ls)
    PROBE_SEEDS = tuple(int(x) for x in a.probe_seeds.split(",") if x)
    frames = len(range(0, 16, a.frame_step))
    cfg = load_config(ROOT / "configs/pretrain/demo.yaml",
                      [f"data.num_frames={frames}", "data.crop_size=64", f"train.max_steps={max(1, a.steps)}",
                       f"optim.warmup_steps={max(1, a.steps // 10)}", *a.overrides])
    suite = load_suite(ROOT / "eval/demo.yaml")
    probe_cfg = suite.datasets[0].probe
    probe_cfg.epochs = a.probe_epochs or probe_cfg.epochs

    t0 = time.perf_counter()
    seed = cfg.data.seed
    data = {"train": labelled("train", a.train_per_class, a.frame_step, seed),
            "val": labelled("val", a.val_per_class, a.frame_step, seed)}
    unlabelled = torch.from_numpy(pool(a.pool, a.frame_step, seed))
    print(f"demo clips in memory: {len(data['train'][0])} train / {len(data['val'][0])} val / {a.pool} pool, "
          f"{frames} frames ({time.perf_counter() - t0:.0f} s)", flush=True)

    # The trainer's own objective (masks, regularisers, EMA or none), fed in-memory batches
    objective = build_objective(cfg, total_steps=a.steps)
    objective.setup("cpu")
    model = objective.model
    opt = build_adamw(list(objective.trainable_networks().values()), cfg.optim)  # as the trainer
    rng = random.Random(cfg.data.seed)
    d, o = cfg.data, cfg.optim
    eval_at = sorted({int(s) for s in a.eval_at.split(",") if s})
    results: dict[int, dict] = {}
    if 0 in eval_at:
        results[0] = probe(model.target_encoder, data, probe_cfg, "random init")
    ceiling = supervised_ceiling(cfg, data, a.supervised_ceiling, probe_cfg) if a.supervised_ceiling else None
    losses, terms, t_train = [], {}, time.perf_counter()
    for step in range(a.steps):
        apply_schedules(opt, o, step, a.steps)
        idx = [rng.randrange(len(unlabelled)) for _ in range(d.batch_size)]
        clips = torch.stack([train_augment(unlabelled[i], 64, rng, d.crop_scale, d.crop_ratio,
                                           0.5 if d.hflip else 0.0) for i in idx])
        model.train()
        out = objective.step(ClipBatch(clips, torch.full((len(idx),), -1), [str(i) for i in idx],
                                       StreamPosition(step=step)))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        if o.clip_grad:
            torch.nn.utils.clip_grad_norm_(list(model.trainable_parameters()), o.clip_grad)
        opt.step()
        objective.after_optimizer_step(step + 1)
        losses.append(out.loss.item())
        for k, v in out.terms.items():
            terms.setdefault(k, []).append(v)
        done = step + 1
        if done % 50 == 0 or done == a.steps:
            extra = "".join(f"  {k} {np.mean(v[-50:]):.4f}" for k, v in terms.items() if not k.startswith("loss_mask"))
            print(f"step {done}/{a.steps}  loss {np.mean(losses[-50:]):.4f}{extra}  "
                  f"{(time.perf_counter() - t_train) / done:.2f} s/step", flush=True)
        if done in eval_at:
            results[done] = probe(model.target_encoder, data, probe_cfg, f"target after {done} steps")

    last = max(results, default=None)
    base = results.get(0, {}).get("top1")
    summary = {"bench": "demo_recipe", "steps": a.steps, "frames": frames,
               "random_init_top1": base, "pretrained_top1": results[last]["top1"] if last else None,
               "vs_baseline": round(results[last]["top1"] / base, 3) if base and last else None,
               "chance_top1": round(100 / len(dd.CLASSES), 1), "supervised_ceiling": ceiling,
               "curve": {str(k): v for k, v in results.items()},
               "loss_first": round(float(np.mean(losses[:10])), 4) if losses else None,
               "loss_last": round(float(np.mean(losses[-10:])), 4) if losses else None,
               "loss_sum": float(np.sum(losses)),
               "overrides": a.overrides, "device": "cpu"}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
