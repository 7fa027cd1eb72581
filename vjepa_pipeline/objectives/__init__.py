"""Training objectives (pure PyTorch), chosen by ``objective.kind`` in the config.

Each objective implements :class:`~vjepa_pipeline.objectives.base.Objective`; the Lightning
trainer (``vjepa pretrain``) and the plain loop (``vjepa objective``) drive any of them the same
way. To add one: subclass ``Objective``, give it a ``kind``, list it in ``OBJECTIVES`` and in the
config's ``ObjectiveKind``.

``ActionConditionedObjective`` (V-JEPA 2-AC) is built from modules and consumes trajectory batches;
it is not in ``OBJECTIVES`` (no config section or trajectory loader selects it yet).
"""

from __future__ import annotations

from .action_conditioned import ActionConditionedObjective
from .base import Objective, StepOutput
from .vjepa import VJEPAObjective

OBJECTIVES: dict[str, type[Objective]] = {cls.kind: cls for cls in (VJEPAObjective,)}


def build_objective(cfg, total_steps: int | None = None) -> Objective:
    """The objective named by ``cfg.objective.kind``, with its networks built from ``cfg``.
    ``total_steps`` (default ``train.max_steps``) is the horizon of its schedules."""
    kind = cfg.objective.kind
    if kind not in OBJECTIVES:
        raise ValueError(f"objective.kind={kind!r} is not one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[kind](cfg, total_steps=total_steps)


__all__ = ["OBJECTIVES", "ActionConditionedObjective", "Objective", "StepOutput", "VJEPAObjective", "build_objective"]
