"""Two rooms: a point agent, a wall with a door, continuous 2-D moves (Gymnasium API, rendered frames).

The world is the unit square [0, 1]^2. A vertical wall of thickness ``2 * WALL_HALF`` (0.04) stands
at x = 0.5; a door (a gap of height ``2 * DOOR_HALF`` = 0.2) is centred at y = 0.5. Goals sit in the
other room, so a straight line to the goal usually meets the wall and a controller has to find the
door (the Two Rooms task of PLDM and EB-JEPA).

Dynamics (deterministic): the action is the intended displacement (dx, dy), clipped to
[-0.1, 0.1]^2. The move is split into sub-steps of at most 0.005; a sub-step that would put the agent
inside the wall is replaced by its x-only or y-only part when that one is free (the agent slides
along the wall), otherwise the agent stays put for that sub-step. The agent is a *point* for
collisions (drawn as a disc of radius 0.04); borders clip to [0, 1].

Pictures: ``size`` x ``size`` RGB, column = x * size, row = y * size (y grows downward); light
background, dark wall, the agent an anti-aliased red disc (so sub-pixel positions show). The goal is
not drawn: a goal is an image (:meth:`TwoRoomsEnv.goal_observation`).

Also home to the small rasterising helpers that :mod:`.push` shares.
"""

from __future__ import annotations

import math
from typing import ClassVar

import gymnasium
import numpy as np
from gymnasium import spaces

from .base import (check_env_args, disc_coverage, goal_info, paint, parse_action, parse_point,
                   pixel_state_space,
                   rect_coverage, to_uint8)

WALL_X, WALL_HALF = 0.5, 0.02
DOOR_Y, DOOR_HALF = 0.5, 0.1
AGENT_RADIUS = 0.04
MAX_ACTION = 0.1
SUB_STEP = 0.005
MARGIN = 0.1  # random / fixed starts and goals keep this far from walls and borders

BACKGROUND = (236, 234, 226)
WALL_COLOUR = (46, 48, 60)
AGENT_COLOUR = (214, 40, 40)


# ----------------------------------------------------------------------------- dynamics

def blocked(x: float, y: float) -> bool:
    """Whether the point (x, y) is inside the wall (the door is free)."""
    return abs(x - WALL_X) < WALL_HALF and abs(y - DOOR_Y) > DOOR_HALF


def move(x: float, y: float, dx: float, dy: float) -> tuple[float, float]:
    """The agent's position after trying the displacement (dx, dy) from (x, y) (see the module
    docstring: sub-steps, sliding along the wall, borders clip)."""
    n = max(1, math.ceil(max(abs(dx), abs(dy)) / SUB_STEP))
    sx, sy = dx / n, dy / n
    for _ in range(n):
        nx, ny = min(max(x + sx, 0.0), 1.0), min(max(y + sy, 0.0), 1.0)
        if not blocked(nx, ny):
            x, y = nx, ny
        elif not blocked(nx, y):
            x = nx
        elif not blocked(x, ny):
            y = ny
    return x, y


def room_of(x: float) -> int:
    """0 for the left room (x < 0.5), 1 for the right one."""
    return 0 if x < WALL_X else 1


def _sample_in_room(rng: np.random.Generator, room: int) -> tuple[float, float]:
    lo, hi = (MARGIN, WALL_X - WALL_HALF - MARGIN) if room == 0 else (WALL_X + WALL_HALF + MARGIN, 1 - MARGIN)
    return float(rng.uniform(lo, hi)), float(rng.uniform(MARGIN, 1 - MARGIN))


def _greedy_reaches(start, goal, steps: int = 100, radius: float = 0.1) -> bool:
    """Whether the controller "move straight toward the goal" (clipped) gets within ``radius``."""
    x, y = start
    for _ in range(steps):
        if math.hypot(goal[0] - x, goal[1] - y) < radius:
            return True
        dx = min(max(goal[0] - x, -MAX_ACTION), MAX_ACTION)
        dy = min(max(goal[1] - y, -MAX_ACTION), MAX_ACTION)
        x, y = move(x, y, dx, dy)
    return math.hypot(goal[0] - x, goal[1] - y) < radius


def fixed_pairs(n: int, seed: int = 0, *, greedy_fails: bool = False
                ) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """``n`` deterministic (start, goal) pairs for benchmarks: start and goal in different rooms (the
    start's room alternates), both at least 0.1 from the wall and the borders. With
    ``greedy_fails`` only pairs where moving straight toward the goal (sliding along the wall) does
    not succeed within 100 steps are kept: the door must be found."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < n:
        room = len(pairs) % 2
        start, goal = _sample_in_room(rng, room), _sample_in_room(rng, 1 - room)
        if greedy_fails and _greedy_reaches(start, goal):
            continue
        pairs.append((start, goal))
    return pairs


# ----------------------------------------------------------------------------- the environment

class TwoRoomsEnv(gymnasium.Env):
    """Point-agent navigation between two rooms joined by a door (see the module docstring).

    Observation: ``{"pixels": uint8 (size, size, 3), "state": float32 (x, y)}``; action: float32
    (dx, dy) in [-0.1, 0.1]^2; reward: minus the distance to the goal; terminated: within
    ``success_radius`` of the goal; truncated: ``max_episode_steps`` steps taken. ``info`` holds
    ``distance``, ``success``, ``state`` and ``goal``.

    ``reset(seed=..., options={"start": (x, y), "goal": (x, y)})``; without options the start is
    drawn in a random room and the goal in the other one, both 0.1 away from walls and borders.
    """

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 10}
    state_names = ("x", "y")
    wall_x, wall_half, door_y, door_half = WALL_X, WALL_HALF, DOOR_Y, DOOR_HALF
    agent_radius = AGENT_RADIUS

    def __init__(self, size: int = 64, max_steps: int = 100, success_radius: float = 0.1,
                 render_mode: str | None = None):
        check_env_args(size, max_steps, render_mode)
        self.size, self.max_episode_steps = int(size), int(max_steps)
        self.success_radius, self.render_mode = float(success_radius), render_mode
        self.observation_space = pixel_state_space(self.size, 2)
        self.action_space = spaces.Box(-MAX_ACTION, MAX_ACTION, (2,), np.float32)
        background = np.empty((self.size, self.size, 3), np.float64)
        background[:] = BACKGROUND
        wall = rect_coverage(self.size, WALL_X - WALL_HALF, WALL_X + WALL_HALF, 0.0, DOOR_Y - DOOR_HALF)
        wall += rect_coverage(self.size, WALL_X - WALL_HALF, WALL_X + WALL_HALF, DOOR_Y + DOOR_HALF, 1.0)
        paint(background, wall, WALL_COLOUR)
        self._background = background
        self._pos = (0.25, 0.5)
        self._goal = (0.75, 0.5)
        self._steps = 0

    # -- helpers
    def draw(self, x: float, y: float) -> np.ndarray:
        """The scene with the agent at (x, y), uint8 (size, size, 3)."""
        image = self._background.copy()
        paint(image, disc_coverage(self.size, x, y, AGENT_RADIUS), AGENT_COLOUR)
        return to_uint8(image)

    @property
    def state(self) -> np.ndarray:
        return np.array(self._pos, dtype=np.float64)

    @property
    def goal(self) -> np.ndarray:
        return np.array(self._goal, dtype=np.float64)

    def _obs(self) -> dict:
        return {"pixels": self.draw(*self._pos), "state": np.array(self._pos, dtype=np.float32)}

    def _info(self) -> dict:
        return goal_info(self._pos, self._goal, self.success_radius, self.state, self.goal)

    # -- Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - {"start", "goal"})
        if unknown:
            raise ValueError(f"unknown reset option {unknown[0]!r} (known: start, goal)")
        room = int(self.np_random.integers(2))
        start = _sample_in_room(self.np_random, room)
        goal = _sample_in_room(self.np_random, 1 - room)
        if "start" in options:
            start = parse_point(options["start"], "start")
            if blocked(*start):
                raise ValueError(f"start {start} is inside the wall")
        if "goal" in options:
            goal = parse_point(options["goal"], "goal")
            if blocked(*goal):
                raise ValueError(f"goal {goal} is inside the wall")
        self._pos, self._goal, self._steps = start, goal, 0
        return self._obs(), self._info()

    def step(self, action):
        dx, dy = parse_action(action, MAX_ACTION)
        self._pos = move(self._pos[0], self._pos[1], dx, dy)
        self._steps += 1
        info = self._info()
        truncated = self._steps >= self.max_episode_steps
        return self._obs(), -info["distance"], bool(info["success"]), truncated, info

    def render(self) -> np.ndarray:
        return self.draw(*self._pos)

    def goal_observation(self) -> np.ndarray:
        """The goal image: the scene with the agent at the goal, uint8 (size, size, 3)."""
        return self.draw(*self._goal)


__all__ = ["TwoRoomsEnv", "blocked", "fixed_pairs", "move", "room_of"]
