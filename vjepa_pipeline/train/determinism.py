"""Reproducible training: pin what can be pinned (``train.deterministic``, ``train.num_threads``).

Our own randomness is already a pure function of the config: model init (``train.seed``), masks
(seed, rank, step), SIGReg directions (seed, step) and every loader worker's stream (seed, rank,
worker role, epoch, sample; data/stream.py uses explicit ``random.Random`` objects only). What
is left to the libraries is pinned here:

- ``torch.use_deterministic_algorithms(True, warn_only=True)``: kernels with a deterministic
  variant use it; an op without one warns instead of stopping a long run (on the CPU nearly all
  ops are deterministic already; the GPU scatter / index-add / some backward kernels are not);
- cuDNN deterministic, benchmark (autotuning, which may pick other kernels per run) off;
- ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` when CUDA is present (needed for deterministic cuBLAS;
  a value the user set is kept);
- the global seeds (python, numpy, torch) and, through Lightning, a seed for every DataLoader
  worker's global RNGs (``PL_SEED_WORKERS``), for code that does use them (custom transforms);
- ``train.num_threads``: the intra-op thread count. It changes the order of float reductions in
  BLAS / oneDNN kernels, so it is part of what a bit-exact rerun needs.

Same CPU machine + same config + deterministic, single process -> bit-identical weights (tested). On
GPUs, ``warn_only`` lets non-deterministic kernels run, NCCL's reduction order is not pinned, and the
cuBLAS setting works only before CUDA is initialised. Another CPU (another ISA,
other BLAS / oneDNN kernels) or another thread count still drifts in the last bits and the runs
then diverge slowly: docs/reproducibility.md says how much.

:func:`pinned` applies the settings for the duration of a run and restores the previous process
settings afterwards (tests and the demo run several trainings in one process); the global RNGs stay
seeded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

CUBLAS_WORKSPACE = ":4096:8"
_ENV_KEYS = ("CUBLAS_WORKSPACE_CONFIG", "PL_SEED_WORKERS", "PL_GLOBAL_SEED")


@dataclass(frozen=True)
class TorchSettings:
    """The process-wide settings this module touches (to report them, and to restore them)."""

    deterministic_algorithms: bool
    warn_only: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool
    num_threads: int

    @classmethod
    def current(cls) -> TorchSettings:
        return cls(torch.are_deterministic_algorithms_enabled(),
                   torch.is_deterministic_algorithms_warn_only_enabled(),
                   bool(torch.backends.cudnn.deterministic), bool(torch.backends.cudnn.benchmark),
                   torch.get_num_threads())

    def apply(self) -> None:
        torch.use_deterministic_algorithms(self.deterministic_algorithms, warn_only=self.warn_only)
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        if torch.get_num_threads() != self.num_threads:
            torch.set_num_threads(self.num_threads)


def pin(deterministic: bool, num_threads: int | None, seed: int) -> TorchSettings:
    """Apply the settings (see the module docstring); returns the settings now in force.
    ``num_threads`` applies with or without ``deterministic`` (None: leave it as it is)."""
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    if deterministic:
        if torch.cuda.is_available():
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        from lightning.fabric.utilities.seed import seed_everything

        seed_everything(seed, workers=True, verbose=False)
    return TorchSettings.current()


@contextmanager
def pinned(train_cfg) -> Iterator[TorchSettings]:
    """``pin`` with ``train.deterministic`` / ``train.num_threads`` / ``train.seed`` for the
    duration of the block; the previous settings and environment come back afterwards."""
    before = TorchSettings.current()
    env = {k: os.environ.get(k) for k in _ENV_KEYS}
    try:
        yield pin(train_cfg.deterministic, train_cfg.num_threads, train_cfg.seed)
    finally:
        before.apply()
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
