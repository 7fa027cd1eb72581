"""Embedded environments for world-model demos and planning benchmarks: small, deterministic by
seed, Gymnasium API, observations with rendered pixels and the true state.

- ``two_rooms`` (:class:`TwoRoomsEnv`): a point agent, a wall with a door, goals in the other room.
- ``push`` (:class:`PushEnv`): a disc agent pushes a square block to a goal position.

Both have ``max_episode_steps``, ``state_names``, ``goal_observation()`` (the goal image) and a
module-level ``fixed_pairs(n, seed)`` of benchmark tasks. Like a user's robot, this package imports
nothing of ours but utilities (tests/test_architecture.py).
"""

from __future__ import annotations

import gymnasium

from .push import PushEnv
from .two_rooms import TwoRoomsEnv

ENVS: dict[str, type] = {"two_rooms": TwoRoomsEnv, "push": PushEnv}


def make_env(name: str, **kwargs) -> gymnasium.Env:
    """A new environment by name (``ENVS``); keywords go to its constructor (``size``,
    ``max_steps``, ``success_radius``, ``render_mode``)."""
    try:
        cls = ENVS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown environment {name!r} (known: {', '.join(sorted(ENVS))})") from None
    return cls(**kwargs)


__all__ = ["ENVS", "PushEnv", "TwoRoomsEnv", "make_env"]
