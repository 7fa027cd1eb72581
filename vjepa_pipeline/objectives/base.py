"""The objective interface: what a trainer needs from a training objective (pure PyTorch).

An objective owns its networks and the state around them (an EMA target, masks, a frozen
encoder) and turns a :class:`~vjepa_pipeline.data.batch.ClipBatch` into a loss:

    out = objective.step(batch)              # forward: loss + named scalars, no optimizer work
    out.loss.backward(); optimizer.step()    # the trainer's business (Lightning, or a plain loop)
    objective.after_optimizer_step(step)     # once per optimizer step: EMA moves, schedules ...

The trainer registers ``trainable_networks()`` under their names (the checkpoint keys, e.g.
``encoder.*`` / ``predictor.*``) and builds the optimizer over them; ``frozen_networks()`` are
kept fp32 outside any strategy's casts, moved to the device by the trainer and stored in
checkpoints under their names (e.g. ``target_encoder``). Adding an objective means writing one
class and naming it in :mod:`vjepa_pipeline.objectives` — never copying the trainer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..data.batch import ClipBatch


@dataclass
class StepOutput:
    """One forward pass of an objective.

    ``loss`` is what the trainer back-propagates. ``terms`` are named float scalars logged per
    step (e.g. ``loss_mask_0``); ``flops`` / ``tokens`` feed throughput and MFU; ``features``
    (B, N, D), detached, are the representation the collapse statistics watch (None: not tracked).
    """

    loss: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)
    flops: int = 0
    tokens: int = 0
    features: torch.Tensor | None = field(default=None, repr=False)


class Objective(ABC):
    """Base class of every training objective; see the module docstring for the contract."""

    #: the ``objective.kind`` config value that selects this class
    kind: str = ""

    def __init__(self, cfg):
        self.cfg = cfg
        self.rank = 0

    # ---- networks --------------------------------------------------------------------------
    @abstractmethod
    def trainable_networks(self) -> dict[str, nn.Module]:
        """Networks the optimizer updates, by checkpoint name (insertion order = group order)."""

    def frozen_networks(self) -> dict[str, nn.Module]:
        """Networks that never receive gradients but belong to the training state (kept fp32)."""
        return {}

    def replace_network(self, name: str, module: nn.Module) -> None:
        """Swap a trainable network for a wrapped version of itself (e.g. ``torch.compile``);
        subclasses store it where they keep the original."""
        if name not in self.trainable_networks():
            raise KeyError(f"{type(self).__name__} has no trainable network {name!r}")

    def setup(self, device: torch.device | str, rank: int = 0) -> None:
        """Called once before training: move frozen state to ``device``; ``rank`` seeds per-rank
        randomness (e.g. masks)."""
        self.rank = rank
        for net in self.frozen_networks().values():
            net.to(device)

    # ---- the step --------------------------------------------------------------------------
    @abstractmethod
    def step(self, batch: ClipBatch) -> StepOutput:
        """Forward pass on one (micro-)batch, on the networks' device."""

    def after_optimizer_step(self, step: int) -> dict[str, float]:
        """Once per optimizer step, after the update (``step`` counts from 1). Returns named
        scalars for the step record (e.g. the EMA momentum used)."""
        return {}

    # ---- checkpoints -----------------------------------------------------------------------
    def frozen_state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {name: {k: v.detach().to("cpu", torch.float32) for k, v in net.state_dict().items()}
                for name, net in self.frozen_networks().items()}

    def load_frozen_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        for name, net in self.frozen_networks().items():
            if name not in state:
                raise KeyError(name)
            net.load_state_dict(state[name])
