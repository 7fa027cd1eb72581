"""Training-step benchmark: the Lightning trainer (`vjepa pretrain` path: ObjectiveModule, data module,
checkpoint and metrics callbacks) against a plain-PyTorch reference step with the same model,
masks, optimizer, EMA and generated batches, measured in the same run. The ratio is the framework
overhead (target <= 1.05). On a GPU it also prints MFU and peak memory.

    python bench/train_step.py [--config configs/pretrain/tiny_cpu.yaml] [--steps 30] [key=value ...]

Prints readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
import torch  # noqa: E402

from vjepa_pipeline.config import load_config  # noqa: E402
from vjepa_pipeline.data.synthetic import SyntheticClips  # noqa: E402
from vjepa_pipeline.models.inputs import normalize_clips  # noqa: E402
from vjepa_pipeline.models.build import build_jepa  # noqa: E402
from vjepa_pipeline.models.flops import config_step_flops  # noqa: E402
from vjepa_pipeline.models.jepa import ema_momentum  # noqa: E402
from vjepa_pipeline.models.masks import MaskCollator, grid_for, specs_from_config  # noqa: E402
from vjepa_pipeline.models.optim import apply_schedules, param_groups  # noqa: E402


def plain_steps(cfg, steps: int, device: str) -> list[float]:
    """The reference: a hand-written loop doing exactly what one optimizer step must do."""
    torch.manual_seed(cfg.train.seed)
    model = build_jepa(cfg).to(device)
    grid = grid_for(cfg.data.num_frames, cfg.data.crop_size, cfg.model.patch_size, cfg.model.tubelet_size)
    masks = MaskCollator(specs_from_config(cfg.masks), grid, seed=cfg.train.seed)
    data = SyntheticClips(cfg.data.num_frames, cfg.data.crop_size, seed=cfg.data.seed)
    opt = torch.optim.AdamW(param_groups([model.encoder, model.predictor], cfg.optim.weight_decay), lr=cfg.optim.lr)
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        apply_schedules(opt, cfg.optim, step, cfg.train.max_steps)
        clips = normalize_clips(data.batch(step, cfg.data.batch_size).to(device))
        pairs = [(c.to(device), t.to(device)) for c, t in masks.sample(cfg.data.batch_size, step)]
        with torch.autocast(device, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16-mixed"):
            out = model(clips, pairs)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        if cfg.optim.clip_grad:
            torch.nn.utils.clip_grad_norm_(list(model.trainable_parameters()), cfg.optim.clip_grad)
        opt.step()
        o = cfg.optim
        model.update_target(0.0 if o.ema_schedule == "none"  # no EMA (LeJEPA): the target copies the encoder
                            else ema_momentum(step + 1, cfg.train.max_steps, *o.ema_momentum, o.ema_schedule))
        float(out.loss)  # the trainer logs the loss every step: same sync here
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


class StepTimer(L.Callback):
    def __init__(self):
        self.times, self._t = [], None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        if self._t is not None:
            self.times.append(now - self._t)
        self._t = now


def lightning_steps(cfg) -> list[float]:
    from vjepa_pipeline.train.pretrain import pretrain

    timer = StepTimer()
    pretrain(cfg, extra_callbacks=[timer], progress=False)
    return timer.times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/pretrain/tiny_cpu.yaml")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    warm = max(3, args.steps // 5)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [*args.overrides, "data.source=synthetic", f"train.max_steps={args.steps}",
                                        f"train.run_dir={tmp}", "train.checkpoint_every_steps=1000000",
                                        "logging.wandb_mode=disabled", "logging.log_every_steps=1000000"])
        ob = cfg.objective
        if ob.sigreg_weight or ob.vicreg_variance_weight or ob.vicreg_covariance_weight:
            p.error("the reference loop times the V-JEPA step without collapse regularisers; their cost is "
                    "measured by bench/regularizers.py (s/step per variant)")
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        ours = statistics.median(lightning_steps(cfg)[warm:])
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
        ref = statistics.median(plain_steps(cfg, args.steps, device)[warm:])
    flops = config_step_flops(cfg)["total"]
    clips = cfg.data.batch_size
    print(f"recipe {args.config} ({cfg.model.size}, {cfg.data.num_frames}x{cfg.data.crop_size}px, batch {clips}, "
          f"{cfg.train.precision}) on {device}, median of steps {warm}..{args.steps}")
    print(f"plain PyTorch step {ref * 1e3:8.1f} ms  ({clips / ref:7.1f} clips/s)")
    print(f"Lightning step     {ours * 1e3:8.1f} ms  ({clips / ours:7.1f} clips/s)")
    print(f"framework overhead: x{ours / ref:.3f} (target <= 1.05); {flops / ours / 1e12:.3f} TFLOP/s")
    result = {"bench": "train_step", "recipe": args.config, "step_ms": round(ours * 1e3, 2),
              "reference_step_ms": round(ref * 1e3, 2), "vs_baseline": round(ours / ref, 3),
              "clips_per_s": round(clips / ours, 2), "tflops": round(flops / ours / 1e12, 4), "device": device}
    if device == "cuda":
        from vjepa_pipeline.train.devices import current_peak_flops

        peak_flops = current_peak_flops(cfg.train.precision)
        result.update({"device": torch.cuda.get_device_name(), "peak_mem_gib": round(peak, 2),
                       "mfu": round(flops / ours / peak_flops, 4) if peak_flops else None})
        print(f"peak memory {peak:.1f} GiB, MFU {result['mfu']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
