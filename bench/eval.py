"""Evaluation benchmark: feature-extraction clips/s of a frozen encoder, probe-training speed, and
the speed-up of training the whole lr x wd grid in one pass (shared features, one backward) vs one
run per setting. Measured in the same run.

    python bench/eval.py [--size small] [--frames 16] [--crop 112] [--videos 256] [--grid 3x2]

Prints readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from vjepa_pipeline.eval.encoders import FrozenEncoder  # noqa: E402
from vjepa_pipeline.eval.grid import train_probe_grid, train_single  # noqa: E402
from vjepa_pipeline.eval.suite import ProbeConfig  # noqa: E402
from vjepa_pipeline.config.sizes import VIT_SIZES  # noqa: E402
from vjepa_pipeline.models.vit import VisionTransformer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="small", choices=sorted(VIT_SIZES))
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--crop", type=int, default=112)
    p.add_argument("--videos", type=int, default=256, help="videos in the probe's training set")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--grid", default="3x2", help="lrs x weight decays")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats (medians reported)")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    s = VIT_SIZES[args.size]
    enc = FrozenEncoder(VisionTransformer(s.embed_dim, s.depth, s.num_heads, s.mlp_ratio, num_frames=args.frames,
                                          img_size=args.crop).to(device))
    clips = torch.randn(8, 3, args.frames, args.crop, args.crop, device=device)
    enc(clips)  # warm-up
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 5.0:
        tokens = enc(clips)
        n += clips.shape[0]
    extract_rate = n / (time.perf_counter() - t0)

    # Probe training on cached features shaped like the extractor's output (M, S, V, N, D).
    g = torch.Generator().manual_seed(0)
    m, ntok, dim = args.videos, tokens.shape[1], tokens.shape[2]
    labels = torch.randint(0, args.classes, (m,), generator=g)
    proto = torch.randn(args.classes, dim, generator=g)
    feats = torch.randn(m, 1, 1, ntok, dim, generator=g) * 0.5 + proto[labels][:, None, None, None, :]
    n_lr, n_wd = (int(x) for x in args.grid.split("x"))
    lrs, wds = [1e-4 * 3**i for i in range(n_lr)], [0.01 * 4**i for i in range(n_wd)]
    cfg = ProbeConfig(kind="attentive", num_heads=max(1, dim // 64), epochs=args.epochs, batch_size=32,
                      lrs=lrs, weight_decays=wds)
    def one_pass():
        return train_probe_grid(feats, labels, feats[:64], labels[:64], args.classes, cfg, device=device)

    def per_setting():
        for lr in lrs:
            for wd in wds:
                train_single(feats, labels, feats[:64], labels[:64], args.classes, cfg, lr, wd, device=device)

    # Warm up once (thread pools, allocator), then interleave the two ways and take medians.
    train_single(feats[:32], labels[:32], feats[:8], labels[:8], args.classes,
                 dataclasses.replace(cfg, epochs=1), lrs[0], wds[0], device=device)
    grid_times, single_times = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        grid = one_pass()
        grid_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        per_setting()
        single_times.append(time.perf_counter() - t0)
    grid_s, single_s = statistics.median(grid_times), statistics.median(single_times)
    heads = n_lr * n_wd
    probe_rate = heads * args.epochs * m / grid_s
    print(f"device {device}; ViT-{args.size} frozen encoder, {args.frames}x{args.crop}px clips ({ntok} tokens)")
    print(f"feature extraction: {extract_rate:.1f} clips/s")
    print(f"probe grid ({heads} attentive heads, {args.epochs} epochs, {m} videos): one pass {grid_s:.1f} s vs "
          f"one run per setting {single_s:.1f} s -> x{single_s / grid_s:.2f}; {probe_rate:.0f} head-samples/s; "
          f"chosen {grid.chosen}")
    print(json.dumps({"bench": "eval", "extract_clips_per_s": round(extract_rate, 2), "grid_heads": heads,
                      "grid_one_pass_s": round(grid_s, 2), "one_run_per_setting_s": round(single_s, 2),
                      "vs_baseline": round(single_s / grid_s, 3), "probe_head_samples_per_s": round(probe_rate, 1),
                      "device": device if device == "cpu" else torch.cuda.get_device_name()}))


if __name__ == "__main__":
    main()
