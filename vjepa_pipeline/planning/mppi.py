"""Model-predictive path integral (MPPI) planning in latent space, with the conventions of :mod:`.cem`
(bounds, sampled dims, energies, CPU generator, :class:`~.cem.PlanResult`).

Per iteration: candidates = clip(mean + std * noise) (unsampled dims 0), one batched rollout, energies
E; weights w = softmax(-E' / temperature) where E' = E - min(E) (textbook MPPI; the shift only
stabilises the exponentials) or, with ``normalize_energy`` (default), (E - min E) / (max E - min E) so
that ``temperature`` does not depend on the encoder's latent scale; then the new mean is the weighted
mean of the candidates, blended with the old one by ``momentum``. The noise ``std`` is fixed (textbook)
or shrinks by ``std_decay`` per iteration. The plan is the final mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cem import PlanResult, SearchConfig, finish_plan, sample_candidates, score, start_search


@dataclass
class MPPIConfig(SearchConfig):
    """MPPI settings (see :class:`~.cem.SearchConfig` for the shared ones): candidates are weighted by
    softmax(-energy / ``temperature``) (energies scaled to [0, 1] first with ``normalize_energy``), the mean
    moves to the weighted mean (blended by ``momentum``) and the noise std shrinks by ``std_decay`` per
    iteration."""

    temperature: float = 0.05
    normalize_energy: bool = True
    momentum: float = 0.0
    std_decay: float = 1.0

    def check(self) -> None:
        super().check()
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0.0 < self.std_decay <= 1.0:
            raise ValueError(f"std_decay must be in (0, 1], got {self.std_decay}")


def mppi_weights(energies: torch.Tensor, temperature: float, normalize: bool) -> torch.Tensor:
    """softmax(-(E - min E) / temperature), E optionally scaled to [0, 1] first."""
    e = energies - energies.min()
    if normalize:
        e = e / e.max().clamp_min(1e-12)
    return torch.softmax(-e / temperature, dim=0)


def mppi_plan(model, z0: torch.Tensor, s0, z_goal: torch.Tensor, cfg: MPPIConfig | None = None,
              warm_start: torch.Tensor | None = None, generator: torch.Generator | None = None) -> PlanResult:
    """MPPI with the arguments and result of :func:`~.cem.cem_plan`; ``elite_energy`` is the
    weight-averaged energy of the last iteration's candidates."""
    cfg = cfg or MPPIConfig()
    start, bounds, (z0, s0, goal), gen, mean, std = start_search(cfg, model, z0, s0, z_goal, warm_start, generator)
    best, means, elite = [], [], float("nan")
    for _ in range(cfg.iterations):
        cand = sample_candidates(mean, std, bounds, cfg.samples, gen)
        energies = score(model, z0, s0, goal, cand, cfg.distance, cfg.intermediate, "MPPI")
        w = mppi_weights(energies, cfg.temperature, cfg.normalize_energy)
        mean = (1.0 - cfg.momentum) * torch.einsum("s,sha->ha", w, cand) + cfg.momentum * mean
        std = std * cfg.std_decay
        best.append(float(energies.min()))
        means.append(float(energies.mean()))
        elite = float((w * energies).sum())
    return finish_plan(model, z0, s0, goal, mean, bounds, cfg, best, means, elite, start)
