"""Training objectives (pure PyTorch), chosen by ``objective.kind`` in the config.

Each objective implements :class:`~vjepa_pipeline.objectives.base.Objective`; the Lightning
trainer (``vjepa pretrain``) and the plain loop (``vjepa objective``) drive any of them the same
way. To add one: subclass ``Objective``, give it a ``kind``, list it in ``OBJECTIVES`` and in the
config's ``ObjectiveKind``.

``ActionConditionedObjective`` (V-JEPA 2-AC, ``objective.kind: action_conditioned``) consumes trajectory
batches; its frozen encoder is loaded by the caller (``train`` reads ``world_model.encoder``) and passed
to :func:`build_objective`.
"""

from __future__ import annotations

from .action_conditioned import ActionConditionedObjective
from .base import Objective, StepOutput
from .vjepa import VJEPAObjective

OBJECTIVES: dict[str, type[Objective]] = {cls.kind: cls for cls in (VJEPAObjective, ActionConditionedObjective)}


def build_objective(cfg, total_steps: int | None = None, encoder=None) -> Objective:
    """The objective named by ``cfg.objective.kind``, with its networks built from ``cfg``.
    ``total_steps`` (default ``train.max_steps``) is the horizon of its schedules. ``encoder``: the
    frozen encoder of the action-conditioned objective (None: built from ``model.*``, random)."""
    kind = cfg.objective.kind
    if kind not in OBJECTIVES:
        raise ValueError(f"objective.kind={kind!r} is not one of {sorted(OBJECTIVES)}")
    if kind == ActionConditionedObjective.kind:
        return ActionConditionedObjective.from_config(cfg, encoder)
    return OBJECTIVES[kind](cfg, total_steps=total_steps)


__all__ = ["OBJECTIVES", "ActionConditionedObjective", "Objective", "StepOutput", "VJEPAObjective", "build_objective"]
