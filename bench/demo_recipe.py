"""Demo-recipe lab: does a recipe make the frozen encoder better than random init on the demo task?

A fast loop for tuning configs/pretrain/demo.yaml (minutes, not the full `vjepa demo`): demo clips
are rendered in memory (no mp4 / shards / loader), the JEPA step is plain PyTorch with the
trainer's model, masks, schedules and EMA (bench/train_step.py checks that this matches the
Lightning step), and the probe is the eval package's one-pass grid with the demo suite's
settings. It probes the target encoder at random init and after each ``--eval-at`` step, and
prints collapse statistics (RankMe of target tokens) next to each accuracy.

    python bench/demo_recipe.py [--steps 800] [--eval-at 0,400,800] [--frame-step 2] \
        [--probe-epochs 80] [--supervised-ceiling 600] [key=value ...]   # overrides of demo.yaml

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
from vjepa_pipeline.models.build import build_jepa  # noqa: E402
from vjepa_pipeline.models.collapse import rankme  # noqa: E402
from vjepa_pipeline.models.jepa import ema_momentum  # noqa: E402
from vjepa_pipeline.models.masks import MaskCollator, grid_for, specs_from_config  # noqa: E402
from vjepa_pipeline.models.optim import apply_schedules, param_groups  # noqa: E402


def labelled(split: str, per_class: int, frame_step: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    clips, labels = [], []
    for ci, cls in enumerate(dd.CLASSES):
        for i in range(per_class):
            clips.append(dd.dataset_clip(seed, split, i, cls)[1][::frame_step])
            labels.append(ci)
    return np.stack(clips), np.array(labels)


def pool(n: int, frame_step: int, seed: int) -> np.ndarray:
    return np.stack([dd.dataset_clip(seed, "unlabelled", i)[1][::frame_step] for i in range(n)])


@torch.no_grad()
def features(encoder, clips: np.ndarray, batch: int = 32) -> torch.Tensor:
    encoder.eval()
    out = [encoder(normalize_clips(torch.from_numpy(clips[i:i + batch]))) for i in range(0, len(clips), batch)]
    return torch.cat(out)[:, None, None]  # (M, segments, views, N, D)


def probe(encoder, data: dict, probe_cfg, label: str) -> dict:
    t0 = time.perf_counter()
    ftr, fva = features(encoder, data["train"][0]), features(encoder, data["val"][0])
    res = train_probe_grid(ftr, torch.from_numpy(data["train"][1]), fva, torch.from_numpy(data["val"][1]),
                           len(dd.CLASSES), probe_cfg, seed=0)
    tokens = F.layer_norm(ftr[:, 0, 0].float(), (ftr.shape[-1],)).flatten(0, 1)
    row = {"top1": round(res.top1, 1), "best_on_val": round(max(g["val_top1"] for g in res.grid), 1),
           "token_rankme": round(rankme(tokens[:4096]), 1)}
    print(f"  {label:<22} probe top-1 {row['top1']:5.1f}% (best on val {row['best_on_val']:5.1f}%)  "
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
    p.add_argument("--supervised-ceiling", type=int, default=0, metavar="STEPS",
                   help="also train the encoder end to end with the labels for STEPS steps and probe it")
    p.add_argument("overrides", nargs="*", help="key=value overrides of configs/pretrain/demo.yaml")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
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

    torch.manual_seed(cfg.train.seed)
    model = build_jepa(cfg)
    grid = grid_for(frames, 64, cfg.model.patch_size, cfg.model.tubelet_size)
    masks = MaskCollator(specs_from_config(cfg.masks), grid, seed=cfg.train.seed)
    opt = torch.optim.AdamW(param_groups([model.encoder, model.predictor], cfg.optim.weight_decay), lr=cfg.optim.lr)
    rng = random.Random(cfg.data.seed)
    d, o = cfg.data, cfg.optim
    eval_at = sorted({int(s) for s in a.eval_at.split(",") if s})
    results: dict[int, dict] = {}
    if 0 in eval_at:
        results[0] = probe(model.target_encoder, data, probe_cfg, "random init")
    ceiling = supervised_ceiling(cfg, data, a.supervised_ceiling, probe_cfg) if a.supervised_ceiling else None
    losses, t_train = [], time.perf_counter()
    for step in range(a.steps):
        apply_schedules(opt, o, step, a.steps)
        idx = [rng.randrange(len(unlabelled)) for _ in range(d.batch_size)]
        clips = torch.stack([train_augment(unlabelled[i], 64, rng, d.crop_scale, d.crop_ratio,
                                           0.5 if d.hflip else 0.0) for i in idx])
        model.train()
        out = model(normalize_clips(clips), masks.sample(d.batch_size, step))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        if o.clip_grad:
            torch.nn.utils.clip_grad_norm_(list(model.trainable_parameters()), o.clip_grad)
        opt.step()
        model.update_target(ema_momentum(step + 1, a.steps, *o.ema_momentum, o.ema_schedule))
        losses.append(out.loss.item())
        done = step + 1
        if done % 50 == 0 or done == a.steps:
            print(f"step {done}/{a.steps}  loss {np.mean(losses[-50:]):.4f}  "
                  f"{(time.perf_counter() - t_train) / done:.2f} s/step", flush=True)
        if done in eval_at:
            results[done] = probe(model.target_encoder, data, probe_cfg, f"target after {done} steps")

    last = max(results)
    base = results.get(0, {}).get("top1")
    summary = {"bench": "demo_recipe", "steps": a.steps, "frames": frames,
               "random_init_top1": base, "pretrained_top1": results[last]["top1"] if last else None,
               "vs_baseline": round(results[last]["top1"] / base, 3) if base and last else None,
               "chance_top1": round(100 / len(dd.CLASSES), 1), "supervised_ceiling": ceiling,
               "curve": {str(k): v for k, v in results.items()},
               "loss_first": round(float(np.mean(losses[:10])), 4) if losses else None,
               "loss_last": round(float(np.mean(losses[-10:])), 4) if losses else None,
               "overrides": a.overrides, "device": "cpu"}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
