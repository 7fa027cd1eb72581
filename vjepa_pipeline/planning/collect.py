"""Data collection in the embedded environments: scripted policies write episodes as real video files
plus actions and states in the generic trajectory layout (docs/world_model.md), so a world-model demo
goes through the shard builder and loader like a user's robot data.

    summary = collect_episodes("two_rooms", Path("data/two_rooms/train"), episodes=200, steps=50)

Layout: ``out/ep_00000/{video.mp4, actions.npy (T-1, 2), states.npy (T, S)}`` with T = steps + 1
frames; ``actions[t]`` is the (clipped) commanded displacement leading from frame t to t + 1. The
run's arguments and summary go to ``out/collect.json``.

Policies are callables ``policy(obs, rng) -> action`` with ``reset(env, rng)`` per episode:

- :class:`RandomPolicy`: a random direction and speed held for 3-10 steps, plus small noise, so
  episodes wander instead of jittering in place;
- :class:`NoisyGoalPolicy`: heads for random waypoints with noise. In two rooms a waypoint in the
  other room is reached through the door; in push the agent walks around the block to its back and
  pushes it toward a random target. Together they give door crossings and contact pushes.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from ..envs import ENVS, PushEnv, TwoRoomsEnv, make_env
from ..shards.media import write_video
from ..utils.atomic import write_json
from ..utils.seeds import mix_seed

FORMAT_VERSION = 1


def _unit(v: np.ndarray) -> tuple[np.ndarray, float]:
    n = float(np.linalg.norm(v))
    return (v / n if n > 1e-12 else np.zeros_like(v)), n


# ----------------------------------------------------------------------------- policies

class RandomPolicy:
    """Temporally correlated random moves: a random direction and a speed in [0.3, 1] x the action
    bound, held for ``hold`` (3-10) steps, plus Gaussian noise of ``noise`` x the bound per step."""

    name = "random"

    def __init__(self, hold: tuple[int, int] = (3, 10), noise: float = 0.1):
        self.hold, self.noise = hold, noise
        self._left, self._move, self._high = 0, None, None

    def reset(self, env, rng: np.random.Generator) -> None:
        self._high = np.asarray(env.action_space.high, dtype=np.float64)
        self._left, self._move = 0, None

    def __call__(self, obs, rng: np.random.Generator) -> np.ndarray:
        if self._left <= 0:
            direction, _ = _unit(rng.normal(size=self._high.shape))
            self._move = direction * rng.uniform(0.3, 1.0) * self._high
            self._left = int(rng.integers(self.hold[0], self.hold[1] + 1))
        self._left -= 1
        action = self._move + rng.normal(0.0, self.noise, self._high.shape) * self._high
        return np.clip(action, -self._high, self._high)


class NoisyGoalPolicy:
    """Goal reaching with noise (the environment's kind picks the behaviour, see the module docstring).

    Two rooms: a waypoint (in the other room with probability ``cross``) is reached through the
    door: first a point in front of the door, then one behind it, then the waypoint. Push: a random
    target for the block (0.15-0.35 away); the agent goes around the block to its back (sideways,
    then backwards, never through it), then pushes toward the target while correcting sideways drift.
    A waypoint or target not reached within ``patience`` steps is replaced.
    """

    name = "noisy_goal"

    def __init__(self, noise: float = 0.15, cross: float = 0.7, patience: int = 40):
        self.noise, self.cross, self.patience = noise, cross, patience
        self._env, self._high = None, 0.1
        self._route: list[np.ndarray] = []
        self._target: np.ndarray | None = None
        self._speed, self._age = 1.0, 0

    def reset(self, env, rng: np.random.Generator) -> None:
        self._env = env.unwrapped
        if not isinstance(self._env, (TwoRoomsEnv, PushEnv)):
            raise TypeError(f"NoisyGoalPolicy knows two_rooms and push, not {type(self._env).__name__}")
        self._high = float(np.max(env.action_space.high))
        self._route, self._target, self._age = [], None, 0

    def __call__(self, obs, rng: np.random.Generator) -> np.ndarray:
        state = np.asarray(obs["state"], dtype=np.float64)
        if isinstance(self._env, TwoRoomsEnv):
            move = self._two_rooms(state, rng)
        else:
            move = self._push(state, rng)
        action = move + rng.normal(0.0, self.noise * self._high, 2)
        return np.clip(action, -self._high, self._high)

    def _toward(self, pos: np.ndarray, target: np.ndarray) -> np.ndarray:
        direction, dist = _unit(target - pos)
        return direction * min(self._speed * self._high, dist)

    # -- two rooms
    def _two_rooms(self, pos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        env = self._env
        self._age += 1
        if self._route and self._age > self.patience:
            self._route = []
        while self._route and np.linalg.norm(self._route[0] - pos) < 0.03:
            self._route.pop(0)
            self._age = 0
        if not self._route:
            side = 0 if pos[0] < env.wall_x else 1
            room = 1 - side if rng.random() < self.cross else side
            lo, hi = ((0.05, env.wall_x - env.wall_half - 0.05) if room == 0
                      else (env.wall_x + env.wall_half + 0.05, 0.95))
            waypoint = np.array([rng.uniform(lo, hi), rng.uniform(0.05, 0.95)])
            if room != side:
                sign = 1.0 if side == 0 else -1.0
                y = env.door_y + rng.uniform(-0.5, 0.5) * env.door_half
                self._route = [np.array([env.wall_x - sign * 0.08, y]),
                               np.array([env.wall_x + sign * 0.08, y])]
            self._route.append(waypoint)
            self._speed, self._age = float(rng.uniform(0.5, 1.0)), 0
        return self._toward(pos, self._route[0])

    # -- push
    def _new_target(self, block: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        env = self._env
        reach = env.block_half + env.agent_radius + 0.04
        for _ in range(50):
            angle, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0.15, 0.35)
            u = np.array([math.cos(angle), math.sin(angle)])
            target, behind = block + dist * u, block - reach * u
            if np.all((target >= 0.15) & (target <= 0.85)) and np.all((behind >= 0.02) & (behind <= 0.98)):
                return target
        return np.full(2, 0.5)

    def _push(self, state: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        env = self._env
        agent, block = state[:2], state[2:]
        self._age += 1
        if self._target is None or np.linalg.norm(self._target - block) < 0.04 or self._age > self.patience:
            self._target = self._new_target(block, rng)
            self._speed, self._age = float(rng.uniform(0.5, 1.0)), 0
        u, _ = _unit(self._target - block)
        perp = np.array([-u[1], u[0]])
        rel = agent - block
        along, across = float(rel @ u), float(rel @ perp)
        contact = env.block_half + env.agent_radius
        clear = contact + 0.05
        if -contact - 0.06 < along < -contact + 0.02 and abs(across) < 0.03:
            # behind the block and aligned: push toward the target, steering the contact line back
            # through the block's centre
            return self._toward(agent, agent + u - 4.0 * across * perp)
        side = 1.0 if across >= 0 else -1.0
        if along > -contact and abs(across) < clear:      # in front of or beside the block: step aside
            waypoint = block + along * u + side * (clear + 0.02) * perp
        elif along > -contact:                             # clear to the side: go back past the block
            waypoint = block - (contact + 0.03) * u + side * (clear + 0.02) * perp
        else:                                              # behind: line up on the push axis
            waypoint = block - (contact + 0.03) * u
        return self._toward(agent, waypoint)


POLICIES: dict[str, type] = {"random": RandomPolicy, "noisy_goal": NoisyGoalPolicy}


# ----------------------------------------------------------------------------- statistics

def door_crossings(states: np.ndarray, wall_x: float = TwoRoomsEnv.wall_x) -> int:
    """How often the agent changed rooms (two rooms states (T, 2))."""
    side = np.asarray(states)[:, 0] >= wall_x
    return int(np.count_nonzero(side[1:] != side[:-1]))


def push_steps(states: np.ndarray) -> int:
    """How many steps moved the block (push states (T, 4))."""
    moved = np.abs(np.diff(np.asarray(states)[:, 2:4], axis=0)).max(axis=1) > 1e-9
    return int(np.count_nonzero(moved))


def policy_kind(i: int, policy_mix: float) -> str:
    """The policy of episode i: spread evenly, so that any first n episodes hold ceil(n * policy_mix)
    noisy-goal ones (episode 0 is noisy-goal unless the mix is 0)."""
    def noisy(k: int) -> int:
        return math.ceil(round(k * policy_mix, 9))
    return "noisy_goal" if noisy(i + 1) > noisy(i) else "random"


# ----------------------------------------------------------------------------- collection

def record_episode(env, policy, steps: int, seed: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames uint8 (steps + 1, H, W, 3), actions float64 (steps, A), states float64 (steps + 1, S))
    of one episode; termination is ignored (the episode runs its ``steps``)."""
    obs, info = env.reset(seed=seed)
    policy.reset(env, rng)
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    frames, states, actions = [obs["pixels"]], [info["state"]], []
    for _ in range(steps):
        action = np.clip(np.asarray(policy(obs, rng), dtype=np.float64), low, high)
        obs, _, _, _, info = env.step(action)
        actions.append(action)
        frames.append(obs["pixels"])
        states.append(info["state"])
    return np.stack(frames), np.array(actions, dtype=np.float64), np.array(states, dtype=np.float64)


def _check_args(record: dict, path: Path) -> None:
    """Refuse to mix episodes of different settings in one folder (the episode count may grow)."""
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8")).get("arguments", {})
    except (OSError, ValueError, AttributeError):
        raise ValueError(f"{path} is unreadable: remove it or collect into a new folder") from None
    differ = [k for k in record if k != "episodes" and old.get(k) != record[k]]
    if differ:
        k = differ[0]
        raise ValueError(f"{path.parent} was collected with {k}={old.get(k)!r}, not {record[k]!r}: "
                         "use a new folder or the same arguments")


def collect_episodes(env_name: str, out: str | Path, episodes: int, steps: int, seed: int = 0,
                     policy_mix: float = 0.5, fps: float = 10, *, env_kwargs: Mapping | None = None,
                     progress: Callable[[int, int], None] | None = None) -> dict:
    """Write ``episodes`` episodes of ``steps`` actions (``steps + 1`` frames) to ``out/ep_%05d`` (see
    the module docstring) and return a summary: ``episodes``, ``written``, ``skipped`` (already
    complete), ``frames``, ``policies`` (episodes per policy) and ``door_crossings`` /
    ``episodes_crossing`` (two rooms) or ``push_steps`` / ``episodes_pushing`` (push).

    Episode i uses the seeds ``mix_seed(seed, i, 0)`` (environment) and ``mix_seed(seed, i, 1)``
    (policy), so it does not depend on the others; a ``policy_mix`` share of the episodes, spread
    evenly (:func:`policy_kind`), use the noisy-goal policy, the others the random one. Each episode is written to a hidden temporary folder and renamed when whole: a killed run
    leaves whole episodes only, and re-running the same call skips them.
    """
    if env_name not in ENVS:
        raise ValueError(f"unknown environment {env_name!r} (known: {', '.join(sorted(ENVS))})")
    if episodes < 0 or steps < 1 or not 0.0 <= policy_mix <= 1.0 or not fps > 0:
        raise ValueError(f"need episodes >= 0, steps >= 1, 0 <= policy_mix <= 1 and fps > 0, got "
                         f"{episodes=}, {steps=}, {policy_mix=}, {fps=}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env_kwargs = dict(env_kwargs or {})
    record = {"env": env_name, "episodes": episodes, "steps": steps, "seed": seed, "policy_mix": policy_mix,
              "fps": fps, "env_kwargs": env_kwargs, "format": FORMAT_VERSION}
    meta_path = out / "collect.json"
    _check_args(json.loads(json.dumps(record)), meta_path)
    write_json(meta_path, {"arguments": record}, indent=1)  # before any episode: a resumed run is checked
    for stale in out.glob(".ep_*.tmp"):  # left by a killed run; only this writer makes them
        shutil.rmtree(stale, ignore_errors=True)

    env = make_env(env_name, **{"max_steps": steps, **env_kwargs})
    policies = {name: cls() for name, cls in POLICIES.items()}
    counts = {name: 0 for name in POLICIES}
    written = skipped = frames = events = episodes_with = 0
    for i in range(episodes):
        folder = out / f"ep_{i:05d}"
        kind, rng = policy_kind(i, policy_mix), np.random.default_rng(mix_seed(seed, i, 1))
        counts[kind] += 1
        if folder.exists():
            names = ("video.mp4", "actions.npy", "states.npy")
            if not all((folder / n).is_file() for n in names):
                raise ValueError(f"{folder} exists but is not a whole episode ({', '.join(names)}): "
                                 "remove it")
            states = np.load(folder / "states.npy", allow_pickle=False)
            skipped += 1
        else:
            video, actions, states = record_episode(env, policies[kind], steps, mix_seed(seed, i, 0), rng)
            tmp = out / f".{folder.name}.tmp"
            tmp.mkdir()
            write_video(tmp / "video.mp4", video, fps=fps, crf=10, gop=4)
            np.save(tmp / "actions.npy", actions, allow_pickle=False)
            np.save(tmp / "states.npy", states, allow_pickle=False)
            tmp.rename(folder)
            written += 1
        frames += len(states)
        n = door_crossings(states) if env_name == "two_rooms" else push_steps(states)
        events += n
        episodes_with += n > 0
        if progress is not None:
            progress(i + 1, episodes)
    env.close()

    summary = {"env": env_name, "episodes": episodes, "written": written, "skipped": skipped,
               "frames": frames, "policies": counts}
    if env_name == "two_rooms":
        summary.update(door_crossings=events, episodes_crossing=episodes_with)
    else:
        summary.update(push_steps=events, episodes_pushing=episodes_with)
    write_json(meta_path, {"arguments": record, "summary": {k: v for k, v in summary.items()
                                                             if k not in ("written", "skipped")}}, indent=1)
    return summary


__all__ = ["POLICIES", "NoisyGoalPolicy", "RandomPolicy", "collect_episodes", "door_crossings",
           "policy_kind", "push_steps", "record_episode"]
