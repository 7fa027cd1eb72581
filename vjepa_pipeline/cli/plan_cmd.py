"""``vjepa plan``: closed-loop planning with a world model in an embedded environment, with baselines."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

HELP = """\
Plan with a trained world model (V-JEPA 2-AC predictor on its encoder): at every step the
current frame and the goal image are encoded, CEM (or MPPI) searches action sequences whose latent
rollout ends nearest the goal's latents (mean L1, as V-JEPA 2-AC), the first action is executed and the
search starts again from the shifted plan. Runs the environment's fixed start / goal pairs, and the
same pairs with a random policy and a greedy controller that moves straight toward the goal using
the true position (two_rooms pairs are chosen so that the wall defeats it).

Writes summary.json (per method: success_rate with a 95 % Wilson interval, episodes,
mean_final_distance, seconds_per_action), episodes.jsonl and two pictures under --out: plots/paths.png
(executed paths per pair and method) and plots/energy_landscape.png (the world model's energy over the
first action from the first start; for two_rooms also the encoder's energy over agent positions, with
the share of positions from which going downhill in energy goes toward the goal).

examples:
  vjepa plan --world-model runs/two_rooms --env two_rooms --episodes 50
  vjepa plan --world-model runs/demo_world_model/runs/two_rooms --env two_rooms --horizon 10 --samples 100 \
      --iterations 3 --top-k 10 --distance l2 --intermediate     # the settings of `vjepa demo world-model`
  vjepa plan --world-model runs/two_rooms --env two_rooms --episodes 10 --horizon 4 --samples 200 --iterations 5
  vjepa plan --world-model wm.pt --env push --planner mppi --methods world_model random
"""


def register(sub) -> None:
    p = sub.add_parser("plan", help="plan toward goal images with a world model in an embedded environment",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world-model", required=True, help="world-model run directory, model.ckpt or native export")
    p.add_argument("--env", required=True, help="embedded environment: two_rooms or push")
    p.add_argument("--episodes", type=int, default=50, help="fixed start / goal pairs (default 50)")
    p.add_argument("--methods", nargs="+", default=["world_model", "random", "greedy"],
                   help="world_model, random, greedy (default: all three)")
    p.add_argument("--planner", choices=("cem", "mppi"), default="cem", help="latent planner (default cem)")
    p.add_argument("--horizon", type=int, default=4, help="planned steps (default 4)")
    p.add_argument("--samples", type=int, default=200, help="action sequences per iteration (default 200)")
    p.add_argument("--iterations", type=int, default=5, help="planner iterations per step (default 5)")
    p.add_argument("--top-k", type=int, default=20, help="CEM elites (default 20)")
    p.add_argument("--distance", choices=("l1", "l2"), default="l1",
                   help="energy: mean absolute (l1, V-JEPA 2-AC) or squared (l2) latent difference (default l1)")
    p.add_argument("--max-steps", type=int, help="steps per episode (default: the environment's)")
    p.add_argument("--replan-every", type=int, default=1, help="actions executed per plan (default 1)")
    p.add_argument("--intermediate", action="store_true",
                   help="score every predicted frame against the goal, not only the last: the first action is "
                        "then pinned down (with the last frame alone any plan reaching the goal scores the same, "
                        "which lets the agent wander near the goal when it replans every step)")
    p.add_argument("--out", type=Path, help="report folder (default: plan_results/<env>)")
    p.add_argument("--seed", type=int, default=0, help="pairs and planner seed (default 0)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--model", action="append", default=[], metavar="model.KEY=VALUE",
                   help="correct the stored description of the encoder (repeatable), e.g. for a world model whose "
                        "encoder came from another run or an official checkpoint")
    p.add_argument("--no-pictures", action="store_true",
                   help="skip plots/paths.png and plots/energy_landscape.png")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..envs import ENVS
    from ..errors import UsageError
    from ..planning.benchmark import METHODS
    from .common import check_output

    if args.env not in ENVS:
        raise UsageError(f"--env {args.env!r}: not an embedded environment (one of {', '.join(sorted(ENVS))})")
    bad = set(args.methods) - set(METHODS)
    if bad:
        raise UsageError(f"--methods {sorted(bad)}: choose from {', '.join(METHODS)}")
    for name in ("episodes", "horizon", "samples", "iterations", "top_k", "replan_every"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')}: must be >= 1")
    if args.top_k > args.samples:
        raise UsageError(f"--top-k {args.top_k} is more than --samples {args.samples}")
    if "world_model" in args.methods and not Path(args.world_model).exists():
        raise UsageError(f"--world-model {args.world_model} does not exist")
    out = args.out or Path("plan_results") / args.env
    check_output(out, "--out", folder=True, create=True)
    return _run(args, out)


def _run(args, out: Path) -> int:
    import torch

    from ..planning import CEMConfig, LatentWorldModel, MPPIConfig
    from ..planning.benchmark import run_task, summarize
    from ..utils.atomic import atomic_write_text, write_json

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = None
    if "world_model" in args.methods:
        from ..checkpoint.ac_checkpoint import load_world_model

        model = LatentWorldModel.from_loaded(load_world_model(args.world_model, device=device,
                                                                      model_overrides=args.model))
    from ..envs import make_env

    env = make_env(args.env)
    space = env.action_space
    if model is not None:  # a world model for another body: one line before any episode runs
        from ..errors import UsageError

        state_dim = env.observation_space["state"].shape[0]
        if (space.shape[0], state_dim) != (model.action_dim, model.state_dim):
            raise UsageError(f"--world-model {args.world_model} takes {model.action_dim}-D actions and "
                             f"{model.state_dim}-D states; {args.env} has {space.shape[0]}-D actions and "
                             f"{state_dim}-D states: train a world model on {args.env} episodes")
    common = dict(horizon=args.horizon, samples=args.samples, iterations=args.iterations,
                  action_low=tuple(float(x) for x in space.low), action_high=tuple(float(x) for x in space.high),
                  intermediate=args.intermediate, distance=args.distance, seed=args.seed)
    cfg = (CEMConfig(top_k=args.top_k, **common) if args.planner == "cem" else MPPIConfig(**common))
    rows, t0 = [], time.monotonic()

    def report(method: str, i: int, ep) -> None:
        rows.append({"method": method, "pair": i, "success": bool(ep.success), "steps": ep.steps,
                     "final_distance": ep.final_distance, "seconds_per_action": ep.seconds_per_action})
        done = sum(1 for r in rows if r["method"] == method)
        wins = sum(1 for r in rows if r["method"] == method and r["success"])
        print(f"\r{method}: {done}/{args.episodes} episodes, {wins} reached the goal", end="", flush=True)
        if done == args.episodes:
            print()

    results = run_task(args.env, model, args.episodes, args.methods, args.planner, cfg, args.max_steps, args.seed,
                       args.replan_every, on_episode=report)
    summary = summarize(args.env, results, {"world_model": args.world_model, "planner": args.planner,
                                            "planner_config": {k: v for k, v in vars(cfg).items()},
                                            "device": device, "seconds": round(time.monotonic() - t0, 1)})
    write_json(out / "summary.json", summary, indent=1, default=str)
    atomic_write_text(out / "episodes.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    print(f"{'method':<13}{'success':>9}{'95% CI':>16}{'final dist':>12}{'s/action':>10}")
    for method, s in summary["tasks"][args.env].items():
        lo, hi = s["success_95ci"]
        ci = f"[{lo:.2f}, {hi:.2f}]" if not math.isnan(lo) else "-"
        print(f"{method:<13}{s['success_rate']:>9.2f}{ci:>16}{s['mean_final_distance']:>12.3f}"
              f"{s['seconds_per_action']:>10.3f}")
    if not args.no_pictures:
        for picture in _pictures(args, results, model, out):
            print(f"picture: {picture}")
    print(f"summary: {out / 'summary.json'}")
    return 0


def _pictures(args, results, model, out: Path) -> list[Path]:
    """plots/paths.png (the tracked object's path per pair and method) and, with a world model,
    plots/energy_landscape.png (one-step energy over first actions from the first pair's start; for
    two_rooms also the encoder's energy over agent positions)."""
    import numpy as np

    from ..envs import make_env
    from ..eval.planning_plots import plot_landscapes, plot_paths
    from ..planning.benchmark import pair_options
    from ..planning.landscape import action_landscape, guided_fraction, state_landscape

    options = pair_options(args.env, args.episodes, args.seed)
    track = slice(0, 2) if args.env == "two_rooms" else slice(2, 4)  # push: the block is what must arrive
    episodes = {method: [{"states": np.asarray(ep.states)[:, track], "goal": tuple(options[i]["goal"]),
                          "success": ep.success} for i, ep in enumerate(res.episodes)]
                for method, res in results.items()}
    env = make_env(args.env)
    obs, _ = env.reset(seed=args.seed, options=options[0])
    start_frame = np.asarray(obs["pixels"])
    # the map without the agent (and block): both drawn off the picture
    background = env.draw(-1.0, -1.0) if args.env == "two_rooms" else env.draw((-1.0, -1.0), (-1.0, -1.0))
    made = [plot_paths(out / "plots" / "paths.png", background, episodes,
                       title=f"{args.env}: executed paths (first pairs)")]
    if model is not None:
        space = env.action_space
        lands = [action_landscape(model, start_frame, obs["state"], env.goal_observation(), space.low, space.high)]
        titles = ["world model: energy after one step, over the first action"]
        if args.env == "two_rooms":
            grid = np.linspace(0.02, 0.98, 25)
            land = state_landscape(model, env.draw, tuple(options[0]["goal"]), grid, grid,
                                   start=tuple(options[0]["start"]))
            lands.append(land)
            titles.append(f"encoder: energy over agent positions (downhill = toward the goal from {guided_fraction(land):.0%} of positions)")
        made.append(plot_landscapes(out / "plots" / "energy_landscape.png", lands, titles, background))
    env.close()
    return made
