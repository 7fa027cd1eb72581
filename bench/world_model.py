"""The world model through the real pipeline, on the CPU recipe: generated trajectories ->
`vjepa shards build` -> `vjepa pretrain` (configs/world_model/moving_square_cpu.yaml) -> `vjepa eval
world-model`. The predictor's k-step latent error with the true actions is compared with the two
baselines measured in the same run on the same windows (the last frame stays; actions shuffled
across the batch): ratio = predictor error / baseline error (below 1: better than the baseline).

    python bench/world_model.py [--episodes 256] [--steps 300] [--horizons 1 2 3] [--repeat 2]

--repeat 2 trains twice from scratch and reports whether the two runs agree exactly (same seed,
same machine, same thread count). Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "world_model" / "moving_square_cpu.yaml"


def vjepa(*args: str, cwd: Path) -> float:
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "vjepa_pipeline", *args], cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    if run.returncode != 0:
        sys.exit(f"vjepa {' '.join(args)} failed:\n{run.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=256)
    ap.add_argument("--val-episodes", type=int, default=32)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--horizons", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--repeat", type=int, default=1, help="train this many times (2: check reproducibility)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_wm_") as tmp:
        work = Path(tmp)
        seconds = {"generate": vjepa("data", "generate-trajectories", "--out", "data", "--episodes",
                                     str(args.episodes), "--val-episodes", str(args.val_episodes), cwd=work)}
        seconds["shards"] = vjepa("shards", "build", "data/train", "shards/train", "--samples-per-shard", "32",
                                  "--workers", "2", "--no-progress", cwd=work)
        seconds["shards"] += vjepa("shards", "build", "data/val", "shards/val", "--samples-per-shard", "16",
                                   "--no-progress", cwd=work)
        results = []
        for i in range(args.repeat):
            name = f"wm{i}"
            seconds[f"train_{i}"] = vjepa("pretrain", "--config", str(RECIPE), f"name={name}", "data.path=shards/train",
                                          f"train.max_steps={args.steps}", cwd=work)
            seconds[f"eval_{i}"] = vjepa("eval", "world-model", f"runs/{name}", "--data", "shards/val", "--out",
                                         f"report_{i}", "--horizons", *map(str, args.horizons), cwd=work)
            results.append(json.loads((work / f"report_{i}" / "results.json").read_text()))
    res = results[0]
    e = res["errors"]
    print(f"world model, CPU recipe: {args.episodes} train / {args.val_episodes} held-out episodes, "
          f"{args.steps} steps, {res['trajectories']} held-out windows; torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    print(f"{'k':>3} {'true actions':>13} {'last frame':>11} {'shuffled':>9} {'vs last':>8} {'vs shuffled':>12}")
    summary = {}
    for k in map(str, args.horizons):
        t, last, shuf = e["true_actions"][k], e["last_frame"][k], e["shuffled_actions"][k]
        summary[k] = {"true_actions": round(t, 4), "last_frame": round(last, 4), "shuffled_actions": round(shuf, 4),
                      "ratio_vs_last_frame": round(t / last, 3), "ratio_vs_shuffled": round(t / shuf, 3)}
        print(f"{k:>3} {t:>13.4f} {last:>11.4f} {shuf:>9.4f} {t / last:>8.3f} {t / shuf:>12.3f}")
    same = all(r["errors"] == res["errors"] for r in results[1:]) if args.repeat > 1 else None
    if same is not None:
        print(f"{args.repeat} runs from scratch agree exactly: {same}")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    print(json.dumps({"horizons": summary, "reproducible": same, "seconds": {k: round(v, 1) for k, v in seconds.items()},
                      "episodes": args.episodes, "steps": args.steps, "windows": res["trajectories"]}))


if __name__ == "__main__":
    main()
