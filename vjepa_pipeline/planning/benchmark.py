"""Closed-loop planning on fixed start / goal pairs of an embedded environment, against baselines.

One task = one environment and its :func:`fixed_pairs` (deterministic by seed). Methods:

- ``world_model``: the world model's latent planner (CEM or MPPI) toward the goal image, through
  :func:`~.mpc.run_episode`;
- ``random``: a random policy (:func:`~.mpc.random_policy_episode`);
- ``greedy``: straight toward the goal position using the true state (:func:`~.mpc.greedy_episode`):
  the upper bound in open space, which the wall in two_rooms defeats.

Every method runs the same pairs. :func:`summarize` gives, per method, ``success_rate`` with a 95 %
Wilson interval, ``episodes``, ``mean_final_distance`` and ``seconds_per_action`` (the figures the
report's ``summary.json`` holds, so runs compare across machines and commits).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..envs import make_env
from .mpc import EpisodeResult, greedy_episode, random_policy_episode, run_episode

METHODS = ("world_model", "random", "greedy")


def pair_options(env_name: str, n: int, seed: int = 0) -> list[dict]:
    """``reset`` options of the environment's ``n`` fixed pairs (two_rooms: pairs whose straight line
    is blocked by the wall, so that the greedy baseline fails; push: agent, block and goal)."""
    if env_name == "two_rooms":
        from ..envs.two_rooms import fixed_pairs

        return [{"start": s, "goal": g} for s, g in fixed_pairs(n, seed, greedy_fails=True)]
    if env_name == "push":
        from ..envs.push import fixed_pairs as push_pairs

        return [{"agent": a, "block": b, "goal": g} for a, b, g in push_pairs(n, seed)]
    raise ValueError(f"no fixed pairs for environment {env_name!r} (two_rooms, push)")


@dataclass
class MethodResults:
    method: str
    episodes: list[EpisodeResult] = field(default_factory=list)

    def summary(self) -> dict:
        n = len(self.episodes)
        wins = sum(1 for e in self.episodes if e.success)
        lo, hi = wilson_interval(wins, n)
        dists = [e.final_distance for e in self.episodes if math.isfinite(e.final_distance)]
        timed = [e.seconds_per_action for e in self.episodes if e.seconds_per_action > 0]
        return {"success_rate": wins / n if n else float("nan"), "success_95ci": [lo, hi], "successes": wins,
                "episodes": n, "mean_final_distance": sum(dists) / len(dists) if dists else float("nan"),
                "mean_steps": sum(e.steps for e in self.episodes) / n if n else float("nan"),
                "seconds_per_action": sum(timed) / len(timed) if timed else 0.0}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate (well-behaved at 0 and n successes)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def run_task(env_name: str, model, episodes: int, methods: Sequence[str] = METHODS, planner: str = "cem",
             cfg=None, max_steps: int | None = None, seed: int = 0, replan_every: int = 1,
             record_frames: bool = False, on_episode: Callable[[str, int, EpisodeResult], None] | None = None,
             ) -> dict[str, MethodResults]:
    """Run ``methods`` on the first ``episodes`` fixed pairs of ``env_name``; ``model`` (a
    :class:`~.world_model.LatentWorldModel`) is needed only for ``world_model``."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}: choose from {', '.join(METHODS)}")
    options = pair_options(env_name, episodes, seed)
    out: dict[str, MethodResults] = {}
    for method in methods:
        results = MethodResults(method)
        for i, opts in enumerate(options):
            env = make_env(env_name)
            steps = max_steps or env.max_episode_steps
            if method == "world_model":
                if model is None:
                    raise ValueError("the world_model method needs a world model")
                ep = run_episode(env, model, planner=planner, cfg=cfg, max_steps=steps, seed=seed + i,
                                 options=opts, replan_every=replan_every, record_frames=record_frames)
            elif method == "random":
                ep = random_policy_episode(env, seed=seed + i, max_steps=steps, options=opts)
            else:
                ep = greedy_episode(env, max_steps=steps, seed=seed + i, options=opts)
            env.close()
            results.episodes.append(ep)
            if on_episode is not None:
                on_episode(method, i, ep)
        out[method] = results
    return out


def summarize(env_name: str, results: dict[str, MethodResults], extra: dict | None = None) -> dict:
    """The ``summary.json`` content: per task and method the comparable figures."""
    return {"tasks": {env_name: {m: r.summary() for m, r in results.items()}}, "time": time.time(),
            **(extra or {})}
