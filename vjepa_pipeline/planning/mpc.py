"""Closed-loop model-predictive control with a latent world model, and two baselines.

:func:`run_episode` drives any Gymnasium environment with pixel observations (a user's simulator or
robot wrapper plugs in the same way as the embedded ones): observe -> encode -> plan toward the goal
image's latents (CEM or MPPI, warm-started from the previous plan shifted by the executed steps) ->
execute the first ``replan_every`` action(s) -> observe ... until ``terminated`` / ``truncated`` /
``max_steps``. The official V-JEPA 2-AC loop is ``replan_every=1`` with ``warm_start=False`` (it restarts
its CEM from a zero mean at every step).

Observations: a dict with ``pixels`` (uint8 (H, W, 3)) and ``state`` (float (S,)) (other key names via
``pixels_key`` / ``state_key``), or the pixels alone (then the predictor gets a zero state). ``info``
may hold ``success`` and ``distance`` (reported; NaN / False when absent) and, for
:func:`greedy_episode`, ``goal``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .cem import CEMConfig, PlanResult, cem_plan
from .mppi import MPPIConfig, mppi_plan

PLANNERS = {"cem": (cem_plan, CEMConfig), "mppi": (mppi_plan, MPPIConfig)}
DEFAULT_MAX_STEPS = 1000  # when neither max_steps nor the environment says


@dataclass
class EpisodeResult:
    """One episode: ``actions`` (T, A) executed, ``states`` (T+1, S) observed, ``energies`` (T,): the
    energy of the plan each action came from (empty for the baselines), ``seconds_per_action``: encoding +
    planning time per executed action (0 for the baselines), ``frames``: T+1 observed images when
    recorded, ``plans``: the planner's results when kept."""

    success: bool
    steps: int
    final_distance: float
    actions: np.ndarray
    states: np.ndarray
    energies: list[float]
    seconds_per_action: float
    frames: list[np.ndarray] | None = None
    plans: list[PlanResult] | None = None


def split_observation(obs, pixels_key: str = "pixels", state_key: str = "state"):
    """(pixels, state or None) of an observation dict, or (obs, None) for a pixels-only observation."""
    if isinstance(obs, dict):
        if pixels_key not in obs:
            raise ValueError(f"the observation has no {pixels_key!r} entry (keys: {sorted(obs)})")
        state = obs.get(state_key)
        state = None if state is None else np.asarray(state, np.float32).reshape(-1)
        return np.asarray(obs[pixels_key]), state
    return np.asarray(obs), None


def _action_dim(env) -> int:
    shape = getattr(env.action_space, "shape", None)
    if not shape or len(shape) != 1:
        raise ValueError(f"the environment's action space must be a 1-D Box, got {env.action_space}")
    return int(shape[0])


def _clip_to_space(env, action: np.ndarray) -> np.ndarray:
    low, high = getattr(env.action_space, "low", None), getattr(env.action_space, "high", None)
    action = np.asarray(action, np.float32).reshape(-1)
    return action if low is None or high is None else np.clip(action, low, high).astype(np.float32)


def _limit(env, max_steps: int | None) -> int:
    if max_steps is not None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        return int(max_steps)
    own = getattr(env, "max_episode_steps", None)
    own = own or getattr(getattr(env, "spec", None), "max_episode_steps", None)
    return int(own or DEFAULT_MAX_STEPS)


def check_episode_inputs(env, model, pixels: np.ndarray, state: np.ndarray | None, goal: np.ndarray) -> None:
    """One-line ``ValueError`` for an environment or goal image that does not fit the world model."""
    n = _action_dim(env)
    a_dim, s_dim = getattr(model, "action_dim", None), getattr(model, "state_dim", None)
    if a_dim is not None and n != a_dim:
        raise ValueError(f"the environment's actions have {n} dims but the world model's predictor takes "
                         f"{a_dim}: use a world model trained on this environment's actions")
    if state is not None and s_dim is not None and state.size != s_dim:
        raise ValueError(f"the environment's state has {state.size} dims but the world model's predictor "
                         f"takes {s_dim}")
    if goal.shape != pixels.shape or goal.dtype != np.uint8:
        raise ValueError(f"the goal image is {goal.dtype} {tuple(goal.shape)}, the environment's "
                         f"observations are {pixels.dtype} {tuple(pixels.shape)}: give a goal image of the "
                         "same size")


def shift_plan(actions: torch.Tensor, executed: int, pad: str = "repeat") -> torch.Tensor:
    """The previous plan (H, A) without its first ``executed`` steps, padded at the end with its last
    step repeated (``pad="repeat"``) or zeros (``"zero"``) back to H steps."""
    h = actions.shape[0]
    rest = actions[executed:]
    missing = h - rest.shape[0]
    if pad == "repeat":
        fill = actions[-1:].expand(missing, -1)
    else:
        fill = actions.new_zeros(missing, actions.shape[1])
    return torch.cat([rest, fill], dim=0)


def _reset(env, seed: int, options: dict | None, obs, info):
    if obs is None:
        obs, info = env.reset(seed=seed, options=options)
    return obs, dict(info or {})


def _episode(actions, states, info, frames, energies=(), seconds=0.0, plans=None) -> EpisodeResult:
    a = np.asarray(actions, np.float32).reshape(len(actions), -1) if actions else np.zeros((0, 0), np.float32)
    return EpisodeResult(success=bool(info.get("success", False)), steps=len(actions),
                         final_distance=float(info.get("distance", math.nan)), actions=a,
                         states=np.stack(states).astype(np.float32), energies=list(energies),
                         seconds_per_action=seconds / max(1, len(actions)), frames=frames, plans=plans)


def run_episode(env, model, goal_pixels=None, planner: str = "cem", cfg=None, max_steps: int | None = None,
                replan_every: int = 1, seed: int = 0, warm_start: bool = True, warm_pad: str = "repeat",
                options: dict | None = None, record_frames: bool = False, keep_plans: bool = False,
                obs=None, info: dict | None = None, pixels_key: str = "pixels",
                state_key: str = "state") -> EpisodeResult:
    """Plan and act in ``env`` until it terminates / truncates or ``max_steps`` (default: the
    environment's ``max_episode_steps``, else 1000) actions are taken.

    ``model``: a :class:`~.world_model.LatentWorldModel` (``encode``, ``rollout``, ``action_dim``,
    ``state_dim``). ``goal_pixels``: uint8 (H, W, 3) like the observations (None: ``env.goal_observation()``).
    ``planner``: ``"cem"`` / ``"mppi"`` with ``cfg`` a :class:`~.cem.CEMConfig` / :class:`~.mppi.MPPIConfig`
    (None: its defaults). The environment is reset with ``seed`` and ``options`` unless ``obs`` (and
    ``info``) of an already reset environment are given. Planning randomness: a CPU generator seeded from
    ``cfg.seed`` and ``seed``.
    """
    if planner not in PLANNERS:
        raise ValueError(f"planner must be one of {sorted(PLANNERS)}, got {planner!r}")
    if warm_pad not in ("repeat", "zero"):
        raise ValueError(f"warm_pad must be 'repeat' or 'zero', got {warm_pad!r}")
    plan_fn, cfg_cls = PLANNERS[planner]
    cfg = cfg if cfg is not None else cfg_cls()
    if not 1 <= replan_every <= cfg.horizon:
        raise ValueError(f"replan_every must be in [1, horizon={cfg.horizon}], got {replan_every}")
    limit = _limit(env, max_steps)
    obs, info = _reset(env, seed, options, obs, info)
    if goal_pixels is None:
        if not hasattr(env, "goal_observation"):
            raise ValueError("no goal image: pass goal_pixels (the environment has no goal_observation())")
        goal_pixels = env.goal_observation()
    goal = np.asarray(goal_pixels)
    pixels, state = split_observation(obs, pixels_key, state_key)
    check_episode_inputs(env, model, pixels, state, goal)
    zero_state = np.zeros(getattr(model, "state_dim", None) or 0, np.float32)
    state = zero_state if state is None else state

    t0 = time.perf_counter()
    z_goal = model.encode(goal)[0]
    seconds = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + int(seed))
    actions, states, energies, plans = [], [state], [], []
    frames = [pixels] if record_frames else None
    queue: list[torch.Tensor] = []
    previous, energy = None, math.nan
    while len(actions) < limit:
        if not queue:
            t0 = time.perf_counter()
            z = model.encode(pixels)[0]
            ws = shift_plan(previous, replan_every, warm_pad) if warm_start and previous is not None else None
            plan = plan_fn(model, z, torch.from_numpy(state), z_goal, cfg, warm_start=ws, generator=gen)
            seconds += time.perf_counter() - t0
            if plan.actions.numel() == 0 or bool(torch.isnan(plan.actions).any()):
                raise ValueError(f"the {planner} planner returned an empty or NaN plan "
                                 f"{tuple(plan.actions.shape)}")
            previous, energy = plan.actions, plan.plan_energy
            queue = list(plan.actions[:replan_every])
            if keep_plans:
                plans.append(plan)
        action = _clip_to_space(env, queue.pop(0).numpy())
        obs, _, terminated, truncated, info = env.step(action)
        pixels, new_state = split_observation(obs, pixels_key, state_key)
        state = zero_state if new_state is None else new_state
        actions.append(action)
        states.append(state)
        energies.append(energy)
        if record_frames:
            frames.append(pixels)
        if terminated or truncated:
            break
    return _episode(actions, states, info, frames, energies, seconds, plans if keep_plans else None)


def _baseline(env, policy: Callable, seed: int, max_steps: int | None, options, record_frames: bool,
              pixels_key: str, state_key: str) -> EpisodeResult:
    limit = _limit(env, max_steps)
    obs, info = _reset(env, seed, options, None, None)
    pixels, state = split_observation(obs, pixels_key, state_key)
    zero_state = np.zeros(0, np.float32)
    actions, states = [], [zero_state if state is None else state]
    frames = [pixels] if record_frames else None
    while len(actions) < limit:
        action = _clip_to_space(env, policy(obs, info))
        obs, _, terminated, truncated, info = env.step(action)
        pixels, state = split_observation(obs, pixels_key, state_key)
        actions.append(action)
        states.append(zero_state if state is None else state)
        if record_frames:
            frames.append(pixels)
        if terminated or truncated:
            break
    return _episode(actions, states, dict(info), frames)


def random_policy_episode(env, seed: int = 0, max_steps: int | None = None, options: dict | None = None,
                          record_frames: bool = False, pixels_key: str = "pixels",
                          state_key: str = "state") -> EpisodeResult:
    """Uniformly random actions from ``env.action_space`` (seeded with ``seed``)."""
    env.action_space.seed(seed)
    return _baseline(env, lambda obs, info: env.action_space.sample(), seed, max_steps, options,
                     record_frames, pixels_key, state_key)


def greedy_episode(env, max_steps: int | None = None, seed: int = 0, options: dict | None = None,
                   position: Callable | None = None, target: Callable | None = None,
                   record_frames: bool = False, pixels_key: str = "pixels",
                   state_key: str = "state") -> EpisodeResult:
    """Move straight toward the goal using the true state: action = clip(target - position) to the action
    space. Defaults assume agent-goal semantics with displacement actions: ``position(obs, info)`` = the
    first A dims of the state (the agent), ``target(obs, info)`` = the first A dims of ``info["goal"]``.
    An upper bound in open space that fails at a wall; for a pushing task (goal = the block's target) it
    just walks the agent there (pass ``position`` / ``target`` for anything smarter)."""
    n = _action_dim(env)

    def default_position(obs, info):
        _, state = split_observation(obs, pixels_key, state_key)
        if state is None:
            state = info.get("state")
        if state is None:
            raise ValueError("greedy_episode needs the agent's position: a 'state' observation or "
                             "info['state']")
        return np.asarray(state, np.float64).reshape(-1)[:n]

    def default_target(obs, info):
        if "goal" not in info:
            raise ValueError("greedy_episode needs info['goal'] (the goal position) or a target= callable")
        return np.asarray(info["goal"], np.float64).reshape(-1)[:n]

    pos_fn, tgt_fn = position or default_position, target or default_target
    return _baseline(env, lambda obs, info: tgt_fn(obs, info) - pos_fn(obs, info), seed, max_steps, options,
                     record_frames, pixels_key, state_key)
