"""Collapse-preventing regularisers on embeddings, as pure functions (plain PyTorch).

A JEPA can lower its prediction loss by collapsing: mapping every clip to (nearly) the same
features makes the targets easy to predict. V-JEPA guards against this with an EMA target and a
stop-gradient only; these terms fight collapse directly, on a batch of embeddings ``z`` (N, D):

- **SIGReg** (LeJEPA, Balestriero & LeCun 2025, arXiv 2511.08544): sketched isotropic Gaussian
  regularisation. Project ``z`` onto M random unit directions; for each direction compare the
  empirical characteristic function (ECF) of the N projections with the N(0, 1) one,
  ``phi(t) = exp(-t^2 / 2)``, by the Epps-Pulley statistic
  ``N * integral |ECF(t) - phi(t)|^2 phi(t) dt``; average over directions. The integral is a
  trapezoid rule on ``[0, t_max]`` with doubled weights (the integrand is even), as in the
  authors' code (t_max 3, 17 knots). Cost is linear in N (and in M). Directions are drawn afresh
  for every step from a seed (deterministic, identical on every rank and device).
  For N(0, I) samples the statistic's expectation is :func:`sigreg_null_expectation` (about 1.05,
  independent of N); a collapsed or low-rank batch scores far higher, and more so as N grows.
  Under data parallelism (``distributed=True`` with an initialised process group) the ECF is
  summed over all ranks before the statistic, so it is the global batch's, as in the authors'
  code; its gradient flows back to every rank's samples (an autograd all-reduce).
- **VICReg** variance and covariance (Bardes, Ponce & LeCun 2022): a hinge on each dimension's
  standard deviation across the batch (``mean_d relu(gamma - std_d)``, gamma 1) and the sum of
  squared off-diagonal covariances divided by D. Under data parallelism (``distributed=True``) the
  mean, the variances and the covariance matrix are those of all ranks' rows together, as the
  official VICReg measures the gathered embeddings: two autograd all-reduces (the column sums,
  then the centred second moments, D x D for the covariance), so the values equal one process
  holding the whole batch.

:func:`regularization` combines them with their weights over several views (one embedding batch
per mask generator, say) and returns the named values for logging.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: LeJEPA's quadrature: t in [0, 3] on 17 knots; 256 directions per step in its minimal example.
SIGREG_T_MAX = 3.0
SIGREG_KNOTS = 17
SIGREG_SLICES = 256
VICREG_GAMMA = 1.0  # target std of each dimension
VICREG_EPS = 1e-4  # inside the square root of the variance (VICReg's value)


def _check_batch(z: torch.Tensor, what: str, min_rows: int = 1) -> None:
    if z.ndim != 2:
        raise ValueError(f"{what} expects (N, D) embeddings, got shape {tuple(z.shape)}")
    if z.shape[0] < min_rows:
        raise ValueError(f"{what} needs at least {min_rows} embeddings in the batch, got {z.shape[0]}")


def random_directions(dim: int, num: int, seed: int, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(dim, num) matrix of unit-norm columns drawn from an isotropic Gaussian with ``seed``.

    Drawn on the CPU and then moved, so the same seed gives the same directions on any device."""
    gen = torch.Generator().manual_seed(int(seed))
    a = torch.randn(dim, num, generator=gen, dtype=torch.float64)
    a = a / a.norm(dim=0, keepdim=True)
    return a.to(device=device, dtype=dtype)


def _quadrature(t_max: float, knots: int, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Knots t, N(0, 1) characteristic function phi(t), and the integration weights: trapezoid on
    [0, t_max] doubled for the mirrored half, times the Gaussian weight phi(t)."""
    if knots < 2 or not t_max > 0:
        raise ValueError(f"SIGReg quadrature needs >= 2 knots and t_max > 0, got {knots} and {t_max}")
    t = torch.linspace(0.0, t_max, knots, dtype=torch.float32, device=device)
    dt = t_max / (knots - 1)
    w = torch.full((knots,), 2 * dt, dtype=torch.float32, device=device)
    w[0] = w[-1] = dt
    phi = torch.exp(-0.5 * t.square())
    return t, phi, w * phi


def _data_parallel() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def epps_pulley(x: torch.Tensor, t_max: float = SIGREG_T_MAX, knots: int = SIGREG_KNOTS,
                distributed: bool = False) -> torch.Tensor:
    """Epps-Pulley normality statistic of each column of ``x`` (N, M) against N(0, 1): (M,).

    ``N * sum_k w_k |ECF(t_k) - phi(t_k)|^2`` with ``ECF(t) = mean_n exp(i t x_n)`` and the
    Gaussian-weighted trapezoid weights of :func:`_quadrature`. Standard-normal columns score
    about :func:`sigreg_null_expectation` whatever N; a column far from N(0, 1) scores O(N).
    ``distributed``: with an initialised process group of several ranks, N and the ECF are those
    of all ranks' rows together (every rank gets the same value)."""
    _check_batch(x, "epps_pulley")
    t, phi, weights = _quadrature(t_max, knots, x.device)
    xt = x.float().unsqueeze(-1) * t  # (N, M, K)
    sums = torch.stack([xt.cos().sum(0), xt.sin().sum(0)])  # (2, M, K)
    n: float | torch.Tensor = float(x.shape[0])
    if distributed and _data_parallel():
        import torch.distributed as dist
        from torch.distributed.nn.functional import all_reduce  # differentiable: gradients reach every rank

        sums = all_reduce(sums)
        n = torch.tensor(n, dtype=torch.float32, device=x.device)
        dist.all_reduce(n)  # rows of all ranks; kept on the device (no host sync in the step)
    err = (sums[0] / n - phi).square() + (sums[1] / n).square()  # (M, K)
    return (err @ weights) * n


def sigreg(z: torch.Tensor, seed: int, num_slices: int = SIGREG_SLICES, t_max: float = SIGREG_T_MAX,
           knots: int = SIGREG_KNOTS, directions: torch.Tensor | None = None,
           distributed: bool = False) -> torch.Tensor:
    """SIGReg of embeddings ``z`` (N, D): the mean Epps-Pulley statistic of ``z`` projected on
    ``num_slices`` random unit directions drawn from ``seed`` (a scalar; differentiable in z), or on
    the given ``directions`` (D, M). No standardisation: the target distribution is N(0, I) itself,
    scale included. ``distributed``: the statistic of all ranks' rows (see :func:`epps_pulley`);
    the seed gives every rank the same directions."""
    _check_batch(z, "sigreg")
    if directions is None:
        directions = random_directions(z.shape[1], num_slices, seed, z.device)
    return epps_pulley(z.float() @ directions, t_max, knots, distributed=distributed).mean()


def sigreg_null_expectation(t_max: float = SIGREG_T_MAX, knots: int = SIGREG_KNOTS) -> float:
    """Expected SIGReg value for N(0, I) embeddings, for any N: per knot,
    ``N * E|ECF(t) - phi(t)|^2 = 1 - phi(t)^2`` (the variances of cos(tX) and sin(tX) sum to
    1 - exp(-t^2)), so the expectation is ``sum_k w_k (1 - exp(-t_k^2))``."""
    t, phi, weights = _quadrature(t_max, knots)
    return float((weights * (1 - phi.square())).sum())


def _global_centred(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(this rank's rows centred on the mean of all ranks' rows, the global row count - 1) under
    data parallelism; differentiable (autograd all-reduce of the column sums)."""
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_reduce

    x = z.float()
    n = torch.tensor(float(x.shape[0]), device=x.device)
    dist.all_reduce(n)  # kept on the device: no host sync in the step
    return x - all_reduce(x.sum(0)) / n, n - 1


def vicreg_variance(z: torch.Tensor, gamma: float = VICREG_GAMMA, eps: float = VICREG_EPS,
                    distributed: bool = False) -> torch.Tensor:
    """VICReg variance term of ``z`` (N, D): ``mean_d relu(gamma - sqrt(var_d + eps))`` with the
    unbiased variance across the batch. Zero once every dimension's std reaches ``gamma``.
    ``distributed``: the variance of all ranks' rows (every rank gets the same value)."""
    _check_batch(z, "vicreg_variance", min_rows=1 if distributed and _data_parallel() else 2)
    if distributed and _data_parallel():
        from torch.distributed.nn.functional import all_reduce

        x, dof = _global_centred(z)
        var = all_reduce(x.square().sum(0)) / dof
    else:
        var = z.float().var(dim=0)
    return F.relu(gamma - torch.sqrt(var + eps)).mean()


def vicreg_covariance(z: torch.Tensor, distributed: bool = False) -> torch.Tensor:
    """VICReg covariance term of ``z`` (N, D): the sum of squared off-diagonal entries of the
    (unbiased) covariance matrix, divided by D. Zero for decorrelated dimensions.
    ``distributed``: the covariance of all ranks' rows (a D x D all-reduce)."""
    _check_batch(z, "vicreg_covariance", min_rows=1 if distributed and _data_parallel() else 2)
    if distributed and _data_parallel():
        from torch.distributed.nn.functional import all_reduce

        x, dof = _global_centred(z)
        cov = all_reduce(x.T @ x) / dof
    else:
        x = z.float() - z.float().mean(dim=0)
        cov = x.T @ x / (z.shape[0] - 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return off.square().sum() / z.shape[1]


@dataclass(frozen=True)
class RegularizerWeights:
    """The trade-off weights of the terms (0 = off) and SIGReg's number of directions."""

    sigreg: float = 0.0
    vicreg_variance: float = 0.0
    vicreg_covariance: float = 0.0
    sigreg_slices: int = SIGREG_SLICES

    @property
    def active(self) -> bool:
        return any(w > 0 for w in (self.sigreg, self.vicreg_variance, self.vicreg_covariance))


def regularization(views: Sequence[torch.Tensor], weights: RegularizerWeights,
                   seed: int, distributed: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted sum of the active terms, each averaged over ``views`` (a list of (N, D)
    embedding batches), and the unweighted averages by name (``loss_sigreg``,
    ``loss_vicreg_var``, ``loss_vicreg_cov``) for logging. All views share the step's SIGReg
    directions (drawn from ``seed``), as LeJEPA shares them across its views. ``distributed``:
    every term measures the global batch when a process group of several ranks is up (every rank
    must then call this with the same views, in the same order, as DDP training does)."""
    if not views:
        raise ValueError("regularization needs at least one batch of embeddings")
    terms: dict[str, torch.Tensor] = {}
    if weights.sigreg > 0:  # one draw of directions per step, shared by the views
        directions = random_directions(views[0].shape[1], weights.sigreg_slices, seed, views[0].device)
        terms["loss_sigreg"] = torch.stack([sigreg(v, seed, directions=directions, distributed=distributed)
                                            for v in views]).mean()
    if weights.vicreg_variance > 0:
        terms["loss_vicreg_var"] = torch.stack([vicreg_variance(v, distributed=distributed) for v in views]).mean()
    if weights.vicreg_covariance > 0:
        terms["loss_vicreg_cov"] = torch.stack([vicreg_covariance(v, distributed=distributed)
                                                for v in views]).mean()
    scale = {"loss_sigreg": weights.sigreg, "loss_vicreg_var": weights.vicreg_variance,
             "loss_vicreg_cov": weights.vicreg_covariance}
    total = sum((scale[k] * v for k, v in terms.items()), start=views[0].new_zeros((), dtype=torch.float32))
    # A non-finite value flows into the loss, where the trainer's train.nan_policy handles it.
    return total, {k: float(v.detach()) for k, v in terms.items()}
