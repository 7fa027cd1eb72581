"""Push: a disc agent pushes a square block to a goal position on a table (Gymnasium API, rendered
frames).

The table is the unit square [0, 1]^2 with no walls inside. The agent is a disc of radius 0.04, the
block an axis-aligned square of side 0.12 (it never rotates). The goal is a block position.

Dynamics (kinematic, quasi-static, deterministic): the action is the intended displacement of the
agent (dx, dy), clipped to [-0.1, 0.1]^2 and split into sub-steps of at most 0.01. The agent's
centre clips to [0, 1]. When a sub-step would make the agent overlap the block, the block is pushed
along the sub-step's direction by the least distance that removes the overlap (a head-on push
moves it with the agent, a grazing touch barely moves it); the block's centre clips to
[0.06, 0.94] so it stays on the table, and if the clipped block still overlaps the agent, neither
moves in that sub-step (the agent cannot push the block through the border).

State: (agent x, agent y, block x, block y). Success: the block's centre within ``success_radius``
(0.1) of the goal; reward: minus that distance.

Goal image (:meth:`PushEnv.goal_observation`): the block at the goal and the agent touching the
block's back, on the straight line from the block's start (at reset) to the goal: where a straight
push would leave it. Pictures: column = x * size, row = y * size; light table, blue block, red agent.
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
from .two_rooms import AGENT_COLOUR

AGENT_RADIUS = 0.04
BLOCK_HALF = 0.06
MAX_ACTION = 0.1
SUB_STEP = 0.01
GOAL_GAP = 0.005  # the goal image's agent keeps this gap to the block
_EPS = 1e-9

Point = tuple[float, float]

TABLE_COLOUR = (232, 228, 214)
BLOCK_COLOUR = (52, 92, 200)


# ----------------------------------------------------------------------------- geometry and dynamics

def square_distance(px: float, py: float, cx: float, cy: float, half: float = BLOCK_HALF) -> float:
    """Distance from the point (px, py) to the square of half-side ``half`` centred at (cx, cy)
    (0 inside)."""
    return math.hypot(max(abs(px - cx) - half, 0.0), max(abs(py - cy) - half, 0.0))


def overlaps(ax: float, ay: float, bx: float, by: float) -> bool:
    """Whether the agent disc at (ax, ay) overlaps the block at (bx, by)."""
    return square_distance(ax, ay, bx, by) < AGENT_RADIUS - _EPS


def _clip(v: float, lo: float, hi: float) -> float:
    return min(max(v, lo), hi)


def push_move(ax: float, ay: float, bx: float, by: float, dx: float, dy: float
              ) -> tuple[float, float, float, float]:
    """(agent x, y, block x, y) after the agent tries the displacement (dx, dy) (module docstring)."""
    n = max(1, math.ceil(max(abs(dx), abs(dy)) / SUB_STEP))
    sx, sy = dx / n, dy / n
    lo_b, hi_b = BLOCK_HALF, 1.0 - BLOCK_HALF
    for _ in range(n):
        nax, nay = _clip(ax + sx, 0.0, 1.0), _clip(ay + sy, 0.0, 1.0)
        mx, my = nax - ax, nay - ay
        length = math.hypot(mx, my)
        if length == 0.0:
            continue
        if not overlaps(nax, nay, bx, by):
            ax, ay = nax, nay
            continue
        ux, uy = mx / length, my / length
        # Least push s along u that clears the agent: s = length always does (the pair keeps its
        # earlier, non-overlapping offset), so bisect on [0, length].
        lo, hi = 0.0, length
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            if overlaps(nax, nay, bx + mid * ux, by + mid * uy):
                lo = mid
            else:
                hi = mid
        nbx, nby = _clip(bx + hi * ux, lo_b, hi_b), _clip(by + hi * uy, lo_b, hi_b)
        if not overlaps(nax, nay, nbx, nby):
            ax, ay, bx, by = nax, nay, nbx, nby
    return ax, ay, bx, by


def contact_distance(ux: float, uy: float, gap: float = GOAL_GAP) -> float:
    """Distance t from the block's centre along the unit direction (ux, uy) at which the agent's
    centre is ``gap`` away from touching the block."""
    lo, hi = 0.0, BLOCK_HALF * math.sqrt(2.0) + AGENT_RADIUS + gap
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if square_distance(mid * ux, mid * uy, 0.0, 0.0) < AGENT_RADIUS + gap:
            lo = mid
        else:
            hi = mid
    return hi


def _sample_goal(rng: np.random.Generator, bx: float, by: float) -> tuple[float, float]:
    while True:
        angle, dist = float(rng.uniform(0.0, 2 * math.pi)), float(rng.uniform(0.15, 0.35))
        gx, gy = bx + dist * math.cos(angle), by + dist * math.sin(angle)
        if 0.2 <= gx <= 0.8 and 0.2 <= gy <= 0.8:
            return gx, gy


def _sample_agent(rng: np.random.Generator, bx: float, by: float) -> tuple[float, float]:
    while True:
        ax, ay = (float(v) for v in rng.uniform(0.1, 0.9, 2))
        if square_distance(ax, ay, bx, by) >= AGENT_RADIUS + 0.05:
            return ax, ay


def sample_task(rng: np.random.Generator, block: Point | None = None) -> tuple[Point, Point, Point]:
    """(agent start, block start, block goal): the block in [0.25, 0.75]^2 (or ``block``), the goal
    0.15-0.35 away from it inside [0.2, 0.8]^2, the agent anywhere in [0.1, 0.9]^2 at least 0.05 clear
    of the block."""
    bx, by = block if block is not None else (float(v) for v in rng.uniform(0.25, 0.75, 2))
    goal = _sample_goal(rng, bx, by)
    return _sample_agent(rng, bx, by), (bx, by), goal


def fixed_pairs(n: int, seed: int = 0) -> list[tuple[Point, Point, Point]]:
    """``n`` deterministic (agent start, block start, block goal) triples for benchmarks (see
    :func:`sample_task`: every push is feasible, the agent fits behind the block at start and goal)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    return [sample_task(rng) for _ in range(n)]


# ----------------------------------------------------------------------------- the environment

class PushEnv(gymnasium.Env):
    """Push a block to a goal position (see the module docstring).

    Observation: ``{"pixels": uint8 (size, size, 3), "state": float32 (agent x, y, block x, y)}``;
    action: float32 (dx, dy) in [-0.1, 0.1]^2; reward: minus the block's distance to the goal;
    terminated: that distance below ``success_radius``; truncated: ``max_episode_steps`` steps.
    ``info`` holds ``distance``, ``success``, ``state`` and ``goal``.

    ``reset(seed=..., options={"agent": (x, y), "block": (x, y), "goal": (x, y)})`` (``"start"`` is
    an alias of ``"agent"``); what is not given is drawn as in :func:`sample_task` (around the given block).
    """

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 10}
    state_names = ("agent_x", "agent_y", "block_x", "block_y")
    agent_radius, block_half = AGENT_RADIUS, BLOCK_HALF

    def __init__(self, size: int = 64, max_steps: int = 100, success_radius: float = 0.1,
                 render_mode: str | None = None):
        check_env_args(size, max_steps, render_mode)
        self.size, self.max_episode_steps = int(size), int(max_steps)
        self.success_radius, self.render_mode = float(success_radius), render_mode
        self.observation_space = pixel_state_space(self.size, 4)
        self.action_space = spaces.Box(-MAX_ACTION, MAX_ACTION, (2,), np.float32)
        self._agent, self._block, self._goal = (0.2, 0.5), (0.5, 0.5), (0.75, 0.5)
        self._push_dir = (1.0, 0.0)
        self._steps = 0

    # -- helpers
    def draw(self, agent: tuple[float, float], block: tuple[float, float]) -> np.ndarray:
        """The scene with the agent and the block at the given centres, uint8 (size, size, 3)."""
        image = np.empty((self.size, self.size, 3), np.float64)
        image[:] = TABLE_COLOUR
        bx, by = block
        h = BLOCK_HALF
        paint(image, rect_coverage(self.size, bx - h, bx + h, by - h, by + h), BLOCK_COLOUR)
        paint(image, disc_coverage(self.size, agent[0], agent[1], AGENT_RADIUS), AGENT_COLOUR)
        return to_uint8(image)

    @property
    def state(self) -> np.ndarray:
        return np.array(self._agent + self._block, dtype=np.float64)

    @property
    def goal(self) -> np.ndarray:
        return np.array(self._goal, dtype=np.float64)

    def goal_agent(self) -> tuple[float, float]:
        """Where the goal image puts the agent: touching the block's back (gap 0.005) on the line from
        the block's start to the goal (the push direction; +x when they coincide), clipped to the table."""
        ux, uy = self._push_dir
        t = contact_distance(ux, uy)
        return _clip(self._goal[0] - t * ux, 0.0, 1.0), _clip(self._goal[1] - t * uy, 0.0, 1.0)

    def _obs(self) -> dict:
        return {"pixels": self.draw(self._agent, self._block),
                "state": np.array(self._agent + self._block, dtype=np.float32)}

    def _info(self) -> dict:
        return goal_info(self._block, self._goal, self.success_radius, self.state, self.goal)

    # -- Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - {"agent", "start", "block", "goal"})
        if unknown:
            raise ValueError(f"unknown reset option {unknown[0]!r} (known: agent, start, block, goal)")
        block = None
        if "block" in options:
            block = parse_point(options["block"], "block", BLOCK_HALF, 1 - BLOCK_HALF)
        agent, block, goal = sample_task(self.np_random, block)
        if "agent" in options or "start" in options:
            agent = parse_point(options.get("agent", options.get("start")), "agent")
        if "goal" in options:
            goal = parse_point(options["goal"], "goal", BLOCK_HALF, 1 - BLOCK_HALF)
        if overlaps(*agent, *block):
            raise ValueError(f"the agent at {agent} overlaps the block at {block}")
        dist = math.hypot(goal[0] - block[0], goal[1] - block[1])
        self._push_dir = (((goal[0] - block[0]) / dist, (goal[1] - block[1]) / dist) if dist > 1e-12
                          else (1.0, 0.0))
        self._agent, self._block, self._goal, self._steps = agent, block, goal, 0
        return self._obs(), self._info()

    def step(self, action):
        dx, dy = parse_action(action, MAX_ACTION)
        ax, ay, bx, by = push_move(*self._agent, *self._block, dx, dy)
        self._agent, self._block = (ax, ay), (bx, by)
        self._steps += 1
        info = self._info()
        truncated = self._steps >= self.max_episode_steps
        return self._obs(), -info["distance"], bool(info["success"]), truncated, info

    def render(self) -> np.ndarray:
        return self.draw(self._agent, self._block)

    def goal_observation(self) -> np.ndarray:
        """The goal image: the block at the goal, the agent at :meth:`goal_agent`, uint8 (size, size, 3)."""
        return self.draw(self.goal_agent(), self._goal)


__all__ = ["PushEnv", "contact_distance", "fixed_pairs", "overlaps", "push_move", "sample_task",
           "square_distance"]
