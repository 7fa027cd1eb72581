"""Cross-entropy-method planning in latent space, as V-JEPA 2-AC plans (official
``notebooks/utils/mpc_utils.py``, ``cem``; settings from ``world_model_wrapper.py``'s ``mpc_args``).

Per iteration: draw ``samples`` action sequences of ``horizon`` steps from N(mean, std) (per step and
dim), clip them to the action bounds (unsampled dims are 0: the official planner samples xyz and
gripper and sets the rotation deltas to 0), roll the world model out for all of them in one batched
call chain, score them with :func:`~.energy.goal_energy`, keep the ``top_k`` lowest and refit with
momentum exactly as the official update does::

    mean = (1 - momentum) * elites.mean(0) + momentum * mean
    std  = (1 - momentum_std) * elites.std(0) + momentum_std * std      # unbiased std, as torch.std

(official defaults in ``cem()`` are 0.25 / 0.95 for xyz, but the wrapper's ``mpc_args`` passes 0.15 /
0.15, and the gripper's are 0.15 / 0.15: the preset uses 0.15 for both). The executed plan is the final
mean (official: ``new_action`` = mean, gripper elements with |x| < 0.25 rounded to 0, rotations 0).

Randomness comes only from a ``torch.Generator`` on the CPU (samples are drawn there and moved to the
model's device), so a seed gives the same plan on any device up to the model's own arithmetic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .energy import DISTANCES, check_energies, goal_energy

PerDim = float | Sequence[float]


@dataclass
class PlanResult:
    """A plan: ``actions`` (H, A) to execute (the final mean), per-iteration best and mean energies of
    the sampled candidates, the last iteration's elite (top-k / weighted) energy, the energy of
    ``actions`` itself and its predicted latents ``predicted`` (H, N, D) (CPU tensors, for reports)."""

    actions: torch.Tensor
    best_energies: list[float]
    mean_energies: list[float]
    elite_energy: float
    plan_energy: float
    predicted: torch.Tensor
    seconds: float = 0.0

    @property
    def first_action(self) -> torch.Tensor:
        return self.actions[0]


@dataclass
class SearchConfig:
    """What CEM and MPPI share. ``action_low`` / ``action_high`` / ``init_std`` / ``round_small``: a scalar
    for every action dim or one value per dim; ``init_std`` None: half the bound range (MPPI: its noise
    std). ``sample_dims``: which action dims are sampled (None: all); the others are 0 in every candidate
    and in the plan. ``round_small``: final-plan elements with |x| below it become 0 (official: the gripper
    at 0.25). ``distance`` / ``intermediate``: see :func:`~.energy.goal_energy`."""

    horizon: int = 2
    samples: int = 400
    iterations: int = 10
    action_low: PerDim = -1.0
    action_high: PerDim = 1.0
    init_std: PerDim | None = None
    sample_dims: Sequence[bool] | None = None
    distance: str = "l1"
    intermediate: bool = False
    round_small: PerDim | None = None
    seed: int = 0

    def check(self) -> None:
        if self.horizon < 1 or self.samples < 1 or self.iterations < 1:
            raise ValueError(f"an empty plan: horizon ({self.horizon}), samples ({self.samples}) and "
                             f"iterations ({self.iterations}) must all be >= 1")
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {list(DISTANCES)}, got {self.distance!r}")


@dataclass
class CEMConfig(SearchConfig):
    """CEM settings (see :class:`SearchConfig` for the shared ones): ``top_k`` elites refit the mean and
    std each iteration, blended with the previous ones by ``momentum`` (``momentum_std`` None: the same)."""

    top_k: int = 10
    momentum: float = 0.15
    momentum_std: float | None = None

    @classmethod
    def vjepa2_ac(cls, **overrides) -> CEMConfig:
        """The official V-JEPA 2-AC planner for 7-D DROID actions (xyz, Euler delta, gripper): horizon 2,
        400 samples, top 10, 10 iterations, momentum 0.15; xyz within +-0.05 (initial std 0.05),
        rotations not sampled (0), gripper within +-0.75 (initial std 1, final |x| < 0.25 -> 0)."""
        values = dict(horizon=2, samples=400, top_k=10, iterations=10, momentum=0.15, momentum_std=0.15,
                      action_low=(-0.05, -0.05, -0.05, 0.0, 0.0, 0.0, -0.75),
                      action_high=(0.05, 0.05, 0.05, 0.0, 0.0, 0.0, 0.75),
                      init_std=(0.05, 0.05, 0.05, 0.0, 0.0, 0.0, 1.0),
                      sample_dims=(True, True, True, False, False, False, True),
                      round_small=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.25), distance="l1")
        values.update(overrides)
        return cls(**values)

    def check(self) -> None:
        super().check()
        if not 1 <= self.top_k <= self.samples:
            raise ValueError(f"top_k must be in [1, samples={self.samples}], got {self.top_k}")
        for name in ("momentum", "momentum_std"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v}")


# ---- shared with mppi.py ----------------------------------------------------------------------
@dataclass
class Bounds:
    """Per-dim tensors (A,) on the CPU: bounds, initial std, sampled-dims mask (float 0 / 1)."""

    low: torch.Tensor
    high: torch.Tensor
    std: torch.Tensor
    mask: torch.Tensor
    round_small: torch.Tensor | None = field(default=None)

    @property
    def action_dim(self) -> int:
        return self.low.numel()


def _per_dim(value, dim: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).flatten()
    if t.numel() == 1:
        return t.expand(dim).clone()
    if t.numel() != dim:
        raise ValueError(f"{name} has {t.numel()} values, the actions have {dim} dims")
    return t.clone()


def _given_dim(cfg, model, warm_start) -> int:
    if getattr(model, "action_dim", None) is not None:
        return int(model.action_dim)
    for name in ("action_low", "action_high", "init_std", "sample_dims"):
        v = getattr(cfg, name, None)
        if v is not None and not isinstance(v, (int, float)):
            return len(v)
    if warm_start is not None:
        return int(warm_start.shape[-1])
    raise ValueError("cannot tell the action dimension: the model has no action_dim and every setting is "
                     "a scalar")


def resolve_bounds(cfg, model, warm_start=None) -> Bounds:
    """The config's per-dim settings for the model's action dimension."""
    dim = _given_dim(cfg, model, warm_start)
    low, high = _per_dim(cfg.action_low, dim, "action_low"), _per_dim(cfg.action_high, dim, "action_high")
    if bool((low > high).any()):
        raise ValueError(f"action_low {low.tolist()} exceeds action_high {high.tolist()}")
    std = (high - low) / 2 if cfg.init_std is None else _per_dim(cfg.init_std, dim, "init_std")
    mask = torch.ones(dim) if cfg.sample_dims is None else _per_dim([float(bool(m)) for m in cfg.sample_dims],
                                                                      dim, "sample_dims")
    rs = getattr(cfg, "round_small", None)
    return Bounds(low, high, std, mask, None if rs is None else _per_dim(rs, dim, "round_small"))


def prepare_inputs(model, z0: torch.Tensor, s0, z_goal: torch.Tensor):
    """(z0 (1, N, D), s0 (1, S), goal (N, D)) on the model's device, shapes checked."""
    dev = getattr(model, "device", None) or z0.device
    z0 = torch.as_tensor(z0).to(dev)
    z_goal = torch.as_tensor(z_goal).to(dev)
    z0 = z0.unsqueeze(0) if z0.ndim == 2 else z0
    z_goal = z_goal[0] if z_goal.ndim == 3 and z_goal.shape[0] == 1 else z_goal
    if z0.ndim != 3 or z0.shape[0] != 1:
        raise ValueError(f"current latents must be (N, D) or (1, N, D), got shape {tuple(z0.shape)}")
    if tuple(z_goal.shape) != tuple(z0.shape[1:]):
        raise ValueError(f"goal latents {tuple(z_goal.shape)} do not match the current latents "
                         f"{tuple(z0.shape[1:])}")
    s0 = torch.as_tensor(s0, dtype=torch.float32).to(dev).reshape(1, -1)
    return z0, s0, z_goal


def initial_mean(bounds: Bounds, horizon: int, warm_start) -> torch.Tensor:
    """(H, A) CPU: zeros, or the warm start clipped to the bounds; unsampled dims 0."""
    if warm_start is None:
        return torch.zeros(horizon, bounds.action_dim)
    w = torch.as_tensor(warm_start, dtype=torch.float32).detach().cpu()
    if tuple(w.shape) != (horizon, bounds.action_dim):
        raise ValueError(f"warm_start must be (horizon={horizon}, A={bounds.action_dim}), "
                         f"got {tuple(w.shape)}")
    if bool(torch.isnan(w).any()):
        raise ValueError("warm_start holds NaN actions")
    return torch.maximum(torch.minimum(w, bounds.high), bounds.low) * bounds.mask


def sample_candidates(mean: torch.Tensor, std: torch.Tensor, bounds: Bounds, samples: int,
                      generator: torch.Generator) -> torch.Tensor:
    """(samples, H, A) CPU: N(mean, std) per step and dim, clipped to the bounds, unsampled dims 0."""
    noise = torch.randn((samples, *mean.shape), generator=generator, device="cpu")
    cand = mean + std * noise
    return torch.maximum(torch.minimum(cand, bounds.high), bounds.low) * bounds.mask


def score(model, z0, s0, goal, cand: torch.Tensor, distance: str, intermediate: bool, where: str):
    """Energies (samples,) on the CPU of the candidates, from one batched rollout."""
    dev = z0.device
    pred = model.rollout(z0, s0, cand.to(dev))
    energies = goal_energy(pred, goal, distance, intermediate).float().cpu()
    check_energies(energies, where)
    return energies


def finish_plan(model, z0, s0, goal, mean: torch.Tensor, bounds: Bounds, cfg, best: list, means: list,
                elite: float, start: float) -> PlanResult:
    """Round, roll the final plan out once (its predicted latents and energy) and pack the result."""
    plan = mean.clone()
    if bounds.round_small is not None:
        plan = torch.where(plan.abs() < bounds.round_small, torch.zeros_like(plan), plan)
    plan = plan * bounds.mask
    if bool(torch.isnan(plan).any()) or plan.numel() == 0:
        raise ValueError(f"the planner produced an empty or NaN plan of shape {tuple(plan.shape)}")
    pred = model.rollout(z0, s0, plan.unsqueeze(0).to(z0.device))
    energy = goal_energy(pred, goal, cfg.distance, cfg.intermediate).float().cpu()
    check_energies(energy, "the final plan")
    return PlanResult(actions=plan, best_energies=best, mean_energies=means, elite_energy=elite,
                      plan_energy=float(energy[0]), predicted=pred[0].detach().float().cpu(),
                      seconds=time.perf_counter() - start)


def start_search(cfg: SearchConfig, model, z0, s0, z_goal, warm_start, generator):
    """What every search starts from: (start time, bounds, (z0, s0, goal) on the model's device, the CPU
    generator (seeded with ``cfg.seed`` unless given), the initial mean (H, A) and std (H, A))."""
    cfg.check()
    start = time.perf_counter()
    bounds = resolve_bounds(cfg, model, warm_start)
    inputs = prepare_inputs(model, z0, s0, z_goal)
    gen = generator if generator is not None else torch.Generator().manual_seed(cfg.seed)
    mean = initial_mean(bounds, cfg.horizon, warm_start)
    std = bounds.std.expand(cfg.horizon, -1).clone() * bounds.mask
    return start, bounds, inputs, gen, mean, std


# ---- CEM --------------------------------------------------------------------------------------
def cem_plan(model, z0: torch.Tensor, s0, z_goal: torch.Tensor, cfg: CEMConfig | None = None,
             warm_start: torch.Tensor | None = None, generator: torch.Generator | None = None) -> PlanResult:
    """Plan ``cfg.horizon`` actions from the current latents ``z0`` (N, D) / (1, N, D) and state ``s0``
    (S,) toward the goal latents ``z_goal`` (N, D). ``model``: anything with
    ``rollout(z0 (B, N, D), s0 (B, S), actions (B, H, A)) -> (B, H, N, D)`` (and optionally
    ``action_dim`` and ``device``), e.g. :class:`~.world_model.LatentWorldModel`. ``warm_start`` (H, A):
    the initial mean (default zeros, as the official planner). ``generator``: a CPU ``torch.Generator``
    (default: seeded with ``cfg.seed``). Costs ``iterations + 1`` batched rollouts."""
    cfg = cfg or CEMConfig()
    start, bounds, (z0, s0, goal), gen, mean, std = start_search(cfg, model, z0, s0, z_goal, warm_start, generator)
    m_mean = cfg.momentum
    m_std = cfg.momentum if cfg.momentum_std is None else cfg.momentum_std
    best, means, elite = [], [], float("nan")
    for _ in range(cfg.iterations):
        cand = sample_candidates(mean, std, bounds, cfg.samples, gen)
        energies = score(model, z0, s0, goal, cand, cfg.distance, cfg.intermediate, "CEM")
        top = energies.topk(cfg.top_k, largest=False).indices
        elites = cand[top]
        # the official update; torch.std is unbiased (NaN for one elite: use 0 spread then)
        elite_std = elites.std(0) if cfg.top_k > 1 else torch.zeros_like(mean)
        mean = (1.0 - m_mean) * elites.mean(0) + m_mean * mean
        std = (1.0 - m_std) * elite_std + m_std * std
        best.append(float(energies.min()))
        means.append(float(energies.mean()))
        elite = float(energies[top].mean())
    return finish_plan(model, z0, s0, goal, mean, bounds, cfg, best, means, elite, start)
