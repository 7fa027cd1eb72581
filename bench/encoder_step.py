"""Encoder speed: our ViT (fused qkv, RoPE tables computed once per forward) against the Hugging
Face VJEPA2 encoder (the peer implementation, per-layer RoPE recompute) with identical weights,
measured side by side in the same process.

    python bench/encoder_step.py [--size small] [--frames 16] [--crop 128] [--batch 2] [--repeats 5]

Prints readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vjepa_pipeline.checkpoint.layouts import native_to_hf  # noqa: E402
from vjepa_pipeline.config.sizes import VIT_SIZES  # noqa: E402
from vjepa_pipeline.models.vit import VisionTransformer  # noqa: E402


def timed_interleaved(fns: dict, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function, alternating between them every repeat so that
    machine noise (other processes, frequency changes) hits all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="small", choices=sorted(VIT_SIZES))
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    from transformers import VJEPA2Config, VJEPA2Model

    s = VIT_SIZES[args.size]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ours = VisionTransformer(s.embed_dim, s.depth, s.num_heads, s.mlp_ratio, num_frames=args.frames,
                             img_size=args.crop).to(device)
    hf_cfg = VJEPA2Config(crop_size=args.crop, frames_per_clip=args.frames, hidden_size=s.embed_dim,
                          num_attention_heads=s.num_heads, num_hidden_layers=s.depth, mlp_ratio=s.mlp_ratio,
                          pred_num_hidden_layers=1, attn_implementation="sdpa")
    peer = VJEPA2Model(hf_cfg).to(device)
    state = native_to_hf(ours.state_dict())
    peer.load_state_dict({**peer.state_dict(), **state})
    x = torch.randn(args.batch, 3, args.frames, args.crop, args.crop, device=device)
    x_hf = x.permute(0, 2, 1, 3, 4).contiguous()

    with torch.no_grad():
        diff = (ours(x) - peer.encoder(x_hf).last_hidden_state).abs().max().item()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def fwd(model_call):
        def run():
            with torch.no_grad():
                model_call()
            sync()
        return run

    def fwd_bwd(model_call):
        def run():
            model_call().float().mean().backward()
            sync()
        return run

    calls = {"ours": lambda: ours(x), "hf": lambda: peer.encoder(x_hf).last_hidden_state}
    forward = timed_interleaved({n: fwd(c) for n, c in calls.items()}, args.repeats)
    train = timed_interleaved({n: fwd_bwd(c) for n, c in calls.items()}, args.repeats)
    results = {n: {"forward_s": forward[n], "train_s": train[n]} for n in calls}
    tokens = (args.frames // 2) * (args.crop // 16) ** 2
    print(f"device {device}, ViT-{args.size} ({s.embed_dim}/{s.depth}/{s.num_heads}), batch {args.batch} x "
          f"{args.frames}x{args.crop}x{args.crop} ({tokens} tokens), threads {torch.get_num_threads()}")
    print(f"outputs agree to {diff:.2e} (max abs)")
    for name, r in results.items():
        print(f"{name:>5}: forward {r['forward_s'] * 1e3:8.1f} ms   forward+backward {r['train_s'] * 1e3:8.1f} ms")
    fwd_ratio = results["hf"]["forward_s"] / results["ours"]["forward_s"]
    train_ratio = results["hf"]["train_s"] / results["ours"]["train_s"]
    print(f"speed-up vs HF VJEPA2 encoder: forward x{fwd_ratio:.2f}, forward+backward x{train_ratio:.2f}")
    print(json.dumps({"bench": "encoder_step", "size": args.size, "tokens": tokens, "batch": args.batch,
                      "ours_forward_ms": round(results["ours"]["forward_s"] * 1e3, 2),
                      "ours_train_ms": round(results["ours"]["train_s"] * 1e3, 2),
                      "vs_baseline_forward": round(fwd_ratio, 3), "vs_baseline_train": round(train_ratio, 3),
                      "max_abs_diff": diff, "device": device if device == "cpu" else torch.cuda.get_device_name()}))


if __name__ == "__main__":
    main()
