"""Small helpers shared by several test modules (imported as ``from helpers import ...``)."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn as nn


@torch.no_grad()
def perturb_(module: nn.Module, seed: int, scale: float = 0.05) -> nn.Module:
    """Move every parameter (norms, biases, mask tokens included) so that a swapped or missed tensor
    shows in a comparison."""
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=gen) * scale)
    return module


class StopAt(L.Callback):
    """Simulates a job killed right after the checkpoint of step ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            trainer.should_stop = True
