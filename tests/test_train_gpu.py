"""GPU-only trainer checks (run where CUDA is available; skipped elsewhere): Lightning's DeepSpeed
ZeRO-2 path in bf16 keeps an fp32 target that moves, and its checkpoint directory exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("strategy", ["ddp", "deepspeed_stage_2"])
def test_bf16_training_keeps_fp32_target_and_exports(tmp_path, strategy):
    from vjepa_pipeline.checkpoint.export import export, load_training_checkpoint
    from vjepa_pipeline.config import load_config
    from vjepa_pipeline.train.pretrain import pretrain

    cfg = load_config(ROOT / "configs/pretrain/debug.yaml",
                      [f"train.run_dir={tmp_path}", "train.max_steps=4", "train.checkpoint_every_steps=2",
                       "train.precision=bf16-mixed", f"train.strategy={strategy}", "train.accelerator=gpu"])
    pretrain(cfg, progress=False)
    run = tmp_path / "debug"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["loss"] is not None for r in rows)
    first = load_training_checkpoint(run / "checkpoints/step_0000000002")
    last = load_training_checkpoint(run)
    assert all(v.dtype == torch.float32 for v in last.target_sd.values())
    moved = max((last.target_sd[k] - first.target_sd[k]).abs().max().item() for k in last.target_sd)
    assert moved > 0  # bf16 rounding must not freeze the EMA target
    export(run, tmp_path / "enc.pt", what="target_encoder", fmt="native")
    assert (tmp_path / "enc.pt").exists()
