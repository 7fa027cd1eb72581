"""Planning cost: seconds per CEM plan (one executed action) against horizon and samples, on a world
model of the embedded two_rooms environment's size (64 px frames, a frozen ViT encoder, the V-JEPA
2-AC predictor), randomly initialised: the cost does not depend on the weights. The baseline is the
smallest setting, measured in the same run; ratio = cost / baseline cost. Each setting is timed with the
predictor's key / value cache (the planner's default) and without it (the official rollout, which
re-feeds the whole prefix at every step); speedup = uncached / cached, in the same run.

    python bench/planning.py [--horizons 1 2 4 8] [--samples 50 200 400] [--iterations 5] [--patch 16]

Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from vjepa_pipeline.config import load_config  # noqa: E402
from vjepa_pipeline.envs import make_env  # noqa: E402
from vjepa_pipeline.models.build import build_ac_predictor, build_encoder  # noqa: E402
from vjepa_pipeline.planning import CEMConfig, LatentWorldModel, cem_plan  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "world_model" / "moving_square_cpu.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--horizons", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--samples", type=int, nargs="+", default=[50, 200, 400])
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--patch", type=int, default=16, help="patch size: 64 px frames -> (64 / patch)^2 tokens")
    ap.add_argument("--repeats", type=int, default=2, help="plans timed per setting (the best is kept)")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = load_config(RECIPE, [f"model.patch_size={args.patch}"])
    encoder = build_encoder(cfg.model, cfg.model.tubelet_size, cfg.data.crop_size).eval()
    predictor = build_ac_predictor(cfg, encoder.embed_dim).eval()
    model = LatentWorldModel(encoder, predictor, cfg.data.crop_size)
    env = make_env("two_rooms")
    obs, _ = env.reset(seed=0)
    z0, z_goal = model.encode(obs["pixels"]), model.encode(env.goal_observation())
    s0 = torch.as_tensor(obs["state"])
    rows = []
    for horizon in args.horizons:
        for samples in args.samples:
            plan_cfg = CEMConfig(horizon=horizon, samples=samples, top_k=min(10, samples), iterations=args.iterations,
                                 action_low=-0.1, action_high=0.1)
            timed = {}
            for cached in (True, False):
                model.use_cache = cached
                best = float("inf")
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    cem_plan(model, z0, s0, z_goal, plan_cfg)
                    best = min(best, time.perf_counter() - t0)
                timed[cached] = best
            rows.append({"horizon": horizon, "samples": samples, "seconds": round(timed[True], 4),
                         "seconds_uncached": round(timed[False], 4),
                         "cache_speedup": round(timed[False] / timed[True], 2)})
    base = rows[0]["seconds"]
    tokens = (cfg.data.crop_size // args.patch) ** 2
    print(f"CEM plan cost, {args.iterations} iterations, {tokens} patch tokens per frame, torch threads "
          f"{torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    print(f"{'horizon':>8}{'samples':>9}{'s/plan':>10}{'ratio':>8}{'uncached':>10}{'speedup':>9}")
    for r in rows:
        r["ratio"] = round(r["seconds"] / base, 2)
        print(f"{r['horizon']:>8}{r['samples']:>9}{r['seconds']:>10.4f}{r['ratio']:>8.2f}"
              f"{r['seconds_uncached']:>10.4f}{r['cache_speedup']:>9.2f}")
    print(json.dumps({"iterations": args.iterations, "tokens_per_frame": tokens, "baseline_seconds": base,
                      "rows": rows}))


if __name__ == "__main__":
    main()
