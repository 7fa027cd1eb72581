"""`vjepa demo world-model`: a world model that acts, on one CPU in minutes (the two_rooms task).

Stages (each reused when its output exists; ``--fresh`` starts over):
1. collect episodes in the embedded two_rooms environment (random and noisy goal-reaching policies),
   written as real videos + actions + states in the generic trajectory layout, like a robot's logs;
2. build trajectory shards with the shard builder (train, and held-out episodes for validation);
3. train the world model with the real trainer and loader (``configs/world_model/two_rooms_cpu.yaml``:
   a conv encoder trained with the action-conditioned predictor, see the recipe's header);
4. train the same predictor on the same encoder architecture left at its random initialisation (the
   "random-init encoder" control: the planner is the same, only the latents differ; a third of the
   steps, since a frozen encoder's latents do not move - its held-out prediction error is reported);
5. closed-loop planning on fixed start / goal pairs across the wall: the world model + CEM, the
   random-init-encoder world model + the same CEM, a random policy and a greedy controller that moves
   straight toward the goal with the true position (the wall defeats it on these pairs);
6. a report folder: ``summary.json`` (per method ``success_rate`` with a 95 % interval, ``episodes``,
   ``mean_final_distance``, ``seconds_per_action``), ``summary.md``, pictures of the executed paths, of
   the energy landscapes (the encoders' energy over agent positions, the world model's over first
   actions) and of the latent prediction error over the horizon on held-out episodes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

from ..config import config_to_dict, load_config
from ..config.recipes import recipe_dir
from ..utils.atomic import atomic_write_text, write_json
from .pipeline import Stage

TASK = "two_rooms"
RECIPE = recipe_dir("world_model") / "two_rooms_cpu.yaml"
TRAINED, RANDOM_ENCODER = "world_model", "world_model_random_encoder"
LABELS = {TRAINED: "world model + CEM", RANDOM_ENCODER: "random-init encoder + CEM", "random": "random policy",
          "greedy": "greedy (true position)"}


@dataclasses.dataclass
class WorldModelDemoPlan:
    """What one demo run does. The planner settings are those measured in docs/benchmarks.md: CEM over 10
    steps, 100 samples, 3 iterations, top 10, squared-L2 energy summed over every predicted frame."""

    out: Path
    episodes: int = 300  # training episodes (random / noisy goal-reaching, half each)
    val_episodes: int = 30  # held-out episodes for the prediction-error picture
    episode_steps: int = 40  # actions per collected episode
    train_steps: int | None = None  # None: the recipe's train.max_steps
    pairs: int = 50  # fixed start / goal pairs across the wall
    max_steps: int = 40  # actions per planning episode (the world model needs about 8)
    horizon: int = 10
    samples: int = 100
    iterations: int = 3
    top_k: int = 10
    workers: int = 2
    seed: int = 0

    @classmethod
    def quick(cls, out: Path) -> WorldModelDemoPlan:
        """A smoke run (CI): a small dataset, a short training, a few pairs."""
        return cls(out=out, episodes=100, val_episodes=6, train_steps=400, pairs=6, max_steps=30)


def world_model_config(plan: WorldModelDemoPlan, random_encoder: bool = False):
    """The recipe for this plan; ``random_encoder``: the control (the encoder stays at its random
    initialisation, frozen; only the predictor trains, without the encoder-shaping terms)."""
    name = "two_rooms_random_encoder" if random_encoder else "two_rooms"
    overrides = [f"name={name}", f"train.run_dir={plan.out / 'runs'}", f"data.path={plan.out / 'shards' / 'train'}",
                 f"train.seed={plan.seed}", f"data.seed={plan.seed}", f"data.num_workers={min(2, plan.workers)}"]
    steps = plan.train_steps or load_config(RECIPE).train.max_steps
    if random_encoder:  # a frozen encoder's latents do not move: the predictor needs far fewer steps
        steps = max(20, steps // 3)
    overrides += [f"train.max_steps={steps}", f"optim.cooldown_steps={max(1, min(150, steps // 5))}",
                  f"train.checkpoint_every_steps={steps}", f"train.stats_every_steps={max(1, steps // 4)}"]
    if random_encoder:
        overrides += ["world_model.train_encoder=false", "objective.vicreg_variance_weight=0",
                      "objective.vicreg_covariance_weight=0", "world_model.temporal_weight=0",
                      "world_model.inverse_dynamics_weight=0"]
    return load_config(RECIPE, overrides)


def collect_and_shard(plan: WorldModelDemoPlan) -> dict:
    from ..config.schema import ShardsConfig
    from ..planning.collect import collect_episodes
    from ..shards.build import ShardBuilder

    info = {}
    for split, episodes, seed in (("train", plan.episodes, plan.seed), ("val", plan.val_episodes, plan.seed + 1)):
        data = plan.out / "data" / split
        summary = collect_episodes(TASK, data, episodes=episodes, steps=plan.episode_steps, seed=seed)
        opts = ShardsConfig(short_side=None, samples_per_shard=25 if split == "train" else 10, workers=plan.workers)
        index = ShardBuilder(data, plan.out / "shards" / split, opts, log=lambda *a: None).run(progress=False)
        info[split] = {"episodes": episodes, "frames": summary["frames"],
                       "episodes_crossing_the_door": summary.get("episodes_crossing"),
                       "samples": index["totals"]["samples"]}
        print(f"  {split}: {episodes} episodes ({summary['frames']} frames, {summary.get('episodes_crossing')} "
              f"through the door) -> {index['totals']['samples']} samples in {len(index['shards'])} shards")
    return info


def train(plan: WorldModelDemoPlan) -> dict[str, Path]:
    from ..train.pretrain import pretrain

    runs = {}
    for method, random_encoder in ((TRAINED, False), (RANDOM_ENCODER, True)):
        cfg = world_model_config(plan, random_encoder)
        summary = pretrain(cfg, progress=False)
        runs[method] = Path(summary["run_dir"])
        print(f"  {LABELS[method]}: step {summary['global_step']} -> {summary['run_dir']}", flush=True)
    return runs


def planner_config(plan: WorldModelDemoPlan):
    from ..envs import make_env
    from ..planning import CEMConfig

    space = make_env(TASK).action_space
    return CEMConfig(horizon=plan.horizon, samples=plan.samples, iterations=plan.iterations, top_k=plan.top_k,
                     momentum=0.0, action_low=tuple(float(x) for x in space.low),
                     action_high=tuple(float(x) for x in space.high), distance="l2", intermediate=True,
                     seed=plan.seed)


def plan_episodes(plan: WorldModelDemoPlan, models: dict) -> dict:
    """Every method on the same fixed pairs; prints progress per episode."""
    from ..planning.benchmark import run_task

    cfg = planner_config(plan)
    results = {}
    for method in (TRAINED, RANDOM_ENCODER, "random", "greedy"):
        wins = 0

        def report(_m, i, ep, method=method):
            nonlocal wins
            wins += bool(ep.success)
            end = "\n" if i + 1 == plan.pairs else ""
            print(f"\r  {LABELS[method]:<27} {i + 1}/{plan.pairs} episodes, {wins} reached the goal", end=end,
                  flush=True)

        kind = "world_model" if method in models else method
        res = run_task(TASK, models.get(method), plan.pairs, [kind], "cem", cfg, plan.max_steps, plan.seed,
                       on_episode=report)
        res[kind].method = method
        results[method] = res[kind]
    return results


def pictures(plan: WorldModelDemoPlan, results: dict, models: dict, runs: dict[str, Path]) -> dict[str, str]:
    import numpy as np

    from ..envs import make_env
    from ..eval.planning_plots import plot_landscapes, plot_paths
    from ..eval.world_model_report import validate_world_model
    from ..planning.benchmark import pair_options
    from ..planning.landscape import action_landscape, guided_fraction, state_landscape

    plots = plan.out / "report" / "plots"
    options = pair_options(TASK, plan.pairs, plan.seed)
    episodes = {m: [{"states": np.asarray(ep.states)[:, :2], "goal": tuple(options[i]["goal"]),
                     "success": ep.success} for i, ep in enumerate(r.episodes)] for m, r in results.items()}
    env = make_env(TASK)
    made = {"paths": str(plot_paths(plots / "paths.png", env.draw(-1.0, -1.0), episodes,
                                    title="two_rooms: executed paths (first pairs)"))}
    obs, _ = env.reset(seed=plan.seed, options=options[0])
    grid = np.linspace(0.02, 0.98, 25)
    lands, titles, guided = [], [], {}
    for method in (TRAINED, RANDOM_ENCODER):
        land = state_landscape(models[method], env.draw, tuple(options[0]["goal"]), grid, grid, distance="l2",
                               start=tuple(options[0]["start"]))
        guided[method] = guided_fraction(land)
        lands.append(land)
        titles.append(f"{LABELS[method].split(' +')[0]}: energy over agent positions "
                      f"(downhill = toward the goal from {guided[method]:.0%})")
    lands.append(action_landscape(models[TRAINED], obs["pixels"], obs["state"], env.goal_observation(),
                                  env.action_space.low, env.action_space.high, distance="l2"))
    titles.append("world model: energy after one step, over the first action")
    made["energy_landscape"] = str(plot_landscapes(plots / "energy_landscape.png", lands, titles,
                                                   env.draw(-1.0, -1.0)))
    env.close()
    horizons = list(range(1, 9))
    validation = {}
    for method in (TRAINED, RANDOM_ENCODER):
        res = validate_world_model(str(runs[method]), str(plan.out / "shards" / "val"),
                                   plan.out / "report" / "prediction" / method, horizons=horizons, device="cpu",
                                   log=lambda *a: None)
        validation[method] = res["errors"]
        made[f"prediction_{method}"] = str(plan.out / "report" / "prediction" / method / "report.md")
    return {"pictures": made, "guided_fraction": guided, "prediction_errors": validation}


def summary_markdown(summary: dict) -> str:
    rows = summary["tasks"][TASK]
    lines = [f"# `vjepa demo world-model`: planning toward goal images in {TASK}", "",
             f"{summary['pairs']} fixed start / goal pairs across the wall (the greedy controller fails on every "
             f"one), at most {summary['max_steps']} actions each; success = within 0.1 of the goal.", "",
             "| method | success | 95 % interval | mean final distance | s / action |", "|---|---|---|---|---|"]
    for method, s in rows.items():
        lo, hi = s["success_95ci"]
        ci = f"[{100 * lo:.0f}, {100 * hi:.0f}] %" if not math.isnan(lo) else "-"
        lines.append(f"| {LABELS.get(method, method)} | {100 * s['success_rate']:.0f} % | {ci} | "
                     f"{s['mean_final_distance']:.3f} | {s['seconds_per_action']:.3f} |")
    g = summary["guided_fraction"]
    lines += ["", "Share of agent positions from which going downhill in the encoder's energy moves toward the goal: "
              f"trained {g[TRAINED]:.0%}, random init {g[RANDOM_ENCODER]:.0%} (chance about 40 %).", "",
              "Pictures: plots/paths.png, plots/energy_landscape.png; prediction error over the horizon on held-out "
              "episodes: prediction/*/report.md.", "", f"{summary['seconds']:.0f} s in total."]
    return "\n".join(lines) + "\n"


def run_world_model_demo(out: str | Path = "runs/demo_world_model", quick: bool = False, fresh: bool = False,
                         pairs: int | None = None, steps: int | None = None) -> dict:
    """The whole demo; returns the summary written to <out>/report/summary.json."""
    import torch

    from ..checkpoint.ac_checkpoint import load_world_model
    from ..planning import LatentWorldModel
    from ..planning.benchmark import summarize

    out = Path(out)
    if fresh and out.exists():
        shutil.rmtree(out)
    plan = WorldModelDemoPlan.quick(out) if quick else WorldModelDemoPlan(out=out)
    if pairs is not None:
        plan.pairs = pairs
    if steps is not None:
        plan.train_steps = steps
    t0 = time.perf_counter()
    total = 5
    with Stage(f"collect {TASK} episodes and build trajectory shards", 1, total):
        data = collect_and_shard(plan)
    with Stage("train the world model and the random-init-encoder control", 2, total):
        runs = train(plan)
    models = {m: LatentWorldModel.from_loaded(load_world_model(runs[m])) for m in (TRAINED, RANDOM_ENCODER)}
    with Stage(f"closed-loop planning on {plan.pairs} start / goal pairs", 3, total):
        results = plan_episodes(plan, models)
    with Stage("pictures and held-out prediction error", 4, total):
        extra = pictures(plan, results, models, runs)
    with Stage("report", 5, total):
        summary = summarize(TASK, results, {
            "pairs": plan.pairs, "max_steps": plan.max_steps, "planner": "cem",
            "planner_config": dataclasses.asdict(planner_config(plan)), "data": data,
            "runs": {m: str(p) for m, p in runs.items()}, "threads": torch.get_num_threads(),
            "config": config_to_dict(world_model_config(plan)), **extra,
            "seconds": round(time.perf_counter() - t0, 1)})
        report = out / "report"
        write_json(report / "summary.json", summary, indent=1, default=str)
        atomic_write_text(report / "summary.md", summary_markdown(summary))
    print("\n" + summary_markdown(summary).split("\n\n", 2)[2].split("\n\n")[0])
    print(f"report: {report / 'summary.md'}  ({summary['seconds']:.0f} s in total)")
    return json.loads((report / "summary.json").read_text())
