"""The objective interface: objectives are chosen by config, and a new one plugs into the same
trainer (Lightning module, step records, checkpoints of frozen state) without copying it."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn as nn

from vjepa_pipeline.config import ConfigError, load_config
from vjepa_pipeline.data.batch import ClipBatch
from vjepa_pipeline.models.inputs import normalize_clips
from vjepa_pipeline.objectives import OBJECTIVES, Objective, StepOutput, VJEPAObjective, build_objective
from vjepa_pipeline.train.data import TrainDataModule
from vjepa_pipeline.train.metrics import MetricsCallback
from vjepa_pipeline.train.module import ObjectiveModule
from vjepa_pipeline.utils.jsonl import read_jsonl

DEBUG = Path(__file__).resolve().parents[1] / "configs" / "pretrain" / "debug.yaml"


def cfg_for(tmp_path, *overrides):
    return load_config(DEBUG, [f"train.run_dir={tmp_path}", "logging.wandb_mode=disabled", *overrides])


class MeanFrameObjective(Objective):
    """A toy objective with a trainable and a frozen network: predict a frozen random projection
    of each clip's mean frame."""

    kind = "mean_frame"

    def __init__(self, cfg, total_steps=None):
        super().__init__(cfg)
        torch.manual_seed(0)
        self.head = nn.Linear(3, 4)
        self.teacher = nn.Linear(3, 4).requires_grad_(False)
        self.post_steps: list[int] = []

    def trainable_networks(self):
        return {"head": self.head}

    def frozen_networks(self):
        return {"teacher": self.teacher}

    def step(self, batch: ClipBatch) -> StepOutput:
        x = normalize_clips(batch.clips).mean(dim=(2, 3, 4))  # (B, C)
        loss = (self.head(x) - self.teacher(x)).abs().mean()
        return StepOutput(loss, terms={"toy_term": 0.5}, flops=10, tokens=batch.size,
                          features=self.head(x).detach().unsqueeze(1).repeat(1, 4, 1))

    def after_optimizer_step(self, step):
        self.post_steps.append(step)
        return {"toy_after": float(step)}


def test_the_config_picks_the_objective_and_refuses_unknown_kinds(tmp_path):
    assert isinstance(build_objective(cfg_for(tmp_path)), VJEPAObjective)
    assert set(OBJECTIVES) == {"vjepa", "action_conditioned"}
    with pytest.raises(ConfigError, match="objective.kind"):
        cfg_for(tmp_path, "objective.kind=pixels")
    with pytest.raises(ConfigError, match="model.predictor.kind"):
        cfg_for(tmp_path, "model.predictor.kind=ac")


def test_frozen_networks_may_not_shadow_checkpoint_keys(tmp_path):
    class Clashing(MeanFrameObjective):
        def frozen_networks(self):
            return {"callbacks": self.teacher}

    cfg = cfg_for(tmp_path)
    with pytest.raises(ValueError, match="callbacks"):
        ObjectiveModule(cfg, objective=Clashing(cfg))


def test_vjepa_objective_networks_and_checkpoint_names(tmp_path):
    obj = build_objective(cfg_for(tmp_path))
    assert list(obj.trainable_networks()) == ["encoder", "predictor"]
    assert list(obj.frozen_networks()) == ["target_encoder"]
    target = obj.frozen_networks()["target_encoder"]
    assert all(not p.requires_grad and p.dtype == torch.float32 for p in target.parameters())
    # Only the mask tokens of configured mask generators train (DDP needs no unused parameters).
    tokens = obj.trainable_networks()["predictor"].mask_tokens
    assert [t.requires_grad for t in tokens] == [i < 2 for i in range(len(tokens))]
    state = obj.frozen_state_dict()
    assert set(state) == {"target_encoder"} and all(v.device.type == "cpu" for v in state["target_encoder"].values())


def test_a_new_objective_plugs_into_the_same_trainer(tmp_path):
    cfg = cfg_for(tmp_path, "train.max_steps=3", "train.accumulate_grad_batches=2", "train.stats_every_steps=1")
    objective = MeanFrameObjective(cfg)
    module = ObjectiveModule(cfg, objective=objective)
    assert [n for n, _ in module.named_children()] == ["head"]  # the frozen teacher is not cast by strategies
    records = []

    class Recorder(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if pl_module.step_record and (not records or records[-1]["step"] != pl_module.step_record["step"]):
                records.append(dict(pl_module.step_record))

    metrics = MetricsCallback(tmp_path / "run", log_every_steps=1, wandb_cfg=None, interactive=True)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=3, accumulate_grad_batches=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False,
                        callbacks=[Recorder(), metrics])
    before = objective.head.weight.detach().clone()
    trainer.fit(module, datamodule=TrainDataModule(cfg))
    assert objective.post_steps == [1, 2, 3]  # once per optimizer step, not per micro-batch
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["toy_after"] == r["step"] and r["toy_term"] == pytest.approx(0.5) for r in records)
    assert all(r["clips"] == 2 * cfg.data.batch_size and r["flops"] == 20 for r in records)
    assert all("collapse" in r for r in records)
    lines = read_jsonl(tmp_path / "run" / "metrics.jsonl")  # the objective's own scalars are logged
    assert [(x["step"], x["toy_term"], x["toy_after"]) for x in lines] == [(1, 0.5, 1.0), (2, 0.5, 2.0), (3, 0.5, 3.0)]
    assert not torch.equal(before, objective.head.weight)
    ckpt = tmp_path / "toy.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=True)
    assert set(saved["state_dict"]) == {"head.weight", "head.bias"}
    assert torch.equal(saved["teacher"]["weight"], objective.teacher.weight)
    # Restoring puts the frozen state back, and a checkpoint without it is refused clearly.
    fresh = ObjectiveModule(cfg, objective=MeanFrameObjective(cfg))
    with torch.no_grad():
        fresh.objective.teacher.weight.zero_()
    fresh.on_load_checkpoint(saved)
    assert torch.equal(fresh.objective.teacher.weight, objective.teacher.weight)
    del saved["teacher"]
    with pytest.raises(RuntimeError, match="checkpoint has no teacher"):
        fresh.on_load_checkpoint(saved)
