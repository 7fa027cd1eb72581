"""What a demo run does and where it writes: the plan, the demo recipe and suite, and the
pretraining config of one seed (shared by the pipeline and the report).

Working folder layout: ``data/`` (generated clips), ``shards/{train,val,pool}``,
``runs/pretrain_seed<seed>``, ``eval/seed<seed>/<encoder>``, ``report/``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import load_config
from ..config.recipes import recipe_dir

# The packaged configs/pretrain/demo.yaml and eval/demo.yaml (importlib.resources; see config/recipes.py).
RECIPE = recipe_dir("pretrain") / "demo.yaml"
SUITE = recipe_dir("eval") / "demo.yaml"


@dataclasses.dataclass
class DemoPlan:
    out: Path
    seeds: list[int]
    steps: int
    train_per_class: int = 40
    val_per_class: int = 25
    pool: int = 600
    workers: int = 2
    probe_epochs: int | None = None  # None: eval/demo.yaml's


def pretrain_config(plan: DemoPlan, seed: int):
    return load_config(RECIPE, [f"name=pretrain_seed{seed}", f"train.run_dir={plan.out / 'runs'}",
                                f"data.path={plan.out / 'shards' / 'pool'}", f"train.seed={seed}", f"data.seed={seed}",
                                f"train.max_steps={plan.steps}",
                                f"optim.warmup_steps={max(1, plan.steps // 10)}",
                                f"train.checkpoint_every_steps={max(1, plan.steps // 2)}"])
