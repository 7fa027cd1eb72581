"""The Lightning trainer on CPU: debug recipe, exact resume, EMA per optimizer step, NaN policy,
2-process DDP on gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import StopAt
from vjepa_pipeline.config import load_config
from vjepa_pipeline.models import jepa as module_lib  # the objective calls jepa_forward / ema_update
from vjepa_pipeline.train.module import ObjectiveModule, TrainingStopped
from vjepa_pipeline.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]


def cfg_for(tmp_path, *overrides):
    return load_config(ROOT / "configs/pretrain/debug.yaml",
                       [f"train.run_dir={tmp_path}", "train.max_steps=6", "train.checkpoint_every_steps=3",
                        "logging.log_every_steps=1", *overrides])


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_debug_recipe_trains_and_writes_the_run_directory(tmp_path):
    cfg = cfg_for(tmp_path, "train.keep_last=1")
    summary = pretrain(cfg, progress=False)
    run = tmp_path / "debug"
    assert summary["global_step"] == 6
    assert (run / "last").read_text().strip() == "step_0000000006"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000000006"]  # keep_last=1
    assert (run / "checkpoints/step_0000000006/data_state/rank_0.json").exists()
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(k in rows[0] for k in ("loss", "loss_mask_0", "loss_mask_1", "lr", "ema", "grad_norm",
                                      "clips_per_s", "data_wait_frac"))
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert load_config(run / "config.yaml") == cfg


def test_resume_equivalence_half_then_resume(tmp_path):
    straight = cfg_for(tmp_path / "a")
    pretrain(straight, progress=False)
    split = cfg_for(tmp_path / "b")
    pretrain(split, extra_callbacks=[StopAt(3)], progress=False)
    assert [r["step"] for r in metrics(tmp_path / "b/debug")] == [1, 2, 3]
    summary = pretrain(split, progress=False)  # the same command again: resumes from `last`
    assert summary["resumed_from"].endswith("step_0000000003")
    a, b = metrics(tmp_path / "a/debug"), metrics(tmp_path / "b/debug")
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]  # no step lost or repeated
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5, abs=1e-6)
        assert rb["lr"] == pytest.approx(ra["lr"]) and rb["ema"] == pytest.approx(ra["ema"])
    ca = torch.load(tmp_path / "a/debug/checkpoints/step_0000000006/model.ckpt", weights_only=True)
    cb = torch.load(tmp_path / "b/debug/checkpoints/step_0000000006/model.ckpt", weights_only=True)
    for k, v in ca["target_encoder"].items():
        torch.testing.assert_close(cb["target_encoder"][k], v, rtol=1e-5, atol=1e-6)


def test_changed_settings_are_refused_on_resume(tmp_path):
    pretrain(cfg_for(tmp_path, "train.max_steps=2"), progress=False)
    from vjepa_pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="optim.lr"):
        pretrain(cfg_for(tmp_path, "train.max_steps=2", "optim.lr=0.5"), progress=False)


def test_ema_runs_once_per_optimizer_step_with_accumulation(tmp_path, monkeypatch):
    calls = []
    real = module_lib.ema_update

    def counting(target, online, momentum):
        calls.append(momentum)
        return real(target, online, momentum)

    monkeypatch.setattr(module_lib, "ema_update", counting)
    cfg = cfg_for(tmp_path, "train.accumulate_grad_batches=2", "train.max_steps=3")
    pretrain(cfg, progress=False)
    rows = metrics(tmp_path / "debug")
    assert len(calls) == 3  # 6 micro-batches, 3 optimizer steps
    assert [r["step"] for r in rows] == [1, 2, 3]
    start, end = cfg.optim.ema_momentum
    assert calls == pytest.approx([start + (end - start) * s / 3 for s in (1, 2, 3)])
    assert rows[0]["loader_attempts"] == 2  # two micro-batches in the first step


def test_bf16_online_encoder_still_moves_the_fp32_target(tmp_path):
    cfg = cfg_for(tmp_path)
    module = ObjectiveModule(cfg)
    module.encoder.bfloat16()
    with torch.no_grad():
        for p in module.encoder.parameters():
            p.add_(0.25)
    before = [p.clone() for p in module.target_encoder.parameters()]
    module._acc.micro = 1
    module.optimizers = lambda: torch.optim.SGD(module.encoder.parameters(), lr=0.1)
    module._after_optimizer_step(1)
    assert all(p.dtype == torch.float32 for p in module.target_encoder.parameters())
    assert min((p - b).abs().max().item() for p, b in zip(module.target_encoder.parameters(), before)) > 1e-6


def _nan_at(monkeypatch, bad_steps: set[int]):
    real = module_lib.jepa_forward
    counter = {"n": 0}

    def forward(*args, **kwargs):
        out = real(*args, **kwargs)
        counter["n"] += 1
        if counter["n"] in bad_steps:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(module_lib, "jepa_forward", forward)


def test_nan_loss_stops_with_a_pointer_to_the_last_checkpoint(tmp_path, monkeypatch):
    _nan_at(monkeypatch, {5})
    with pytest.raises(TrainingStopped, match=r"non-finite loss at step 5.*step_0000000003"):
        pretrain(cfg_for(tmp_path), progress=False)


def test_nan_skip_policy_skips_the_step_and_continues(tmp_path, monkeypatch):
    _nan_at(monkeypatch, {2})
    pretrain(cfg_for(tmp_path, "train.nan_policy=skip"), progress=False)
    rows = metrics(tmp_path / "debug")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[1]["loss"] is None  # written as null, not NaN
    assert all(r["loss"] is not None for r in rows[2:])


def test_two_process_ddp_on_gloo_sees_different_data(tmp_path, generated_clips):
    from vjepa_pipeline.config.schema import ShardsConfig
    from vjepa_pipeline.shards.build import ShardBuilder

    shards = tmp_path / "shards"
    ShardBuilder(generated_clips, shards, ShardsConfig(short_side=64, samples_per_shard=1),
                 log=lambda *a: None).run(progress=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "vjepa_pipeline", "pretrain", "--config", str(ROOT / "configs/pretrain/debug.yaml"),
           "--no-progress", f"train.run_dir={tmp_path}", "train.max_steps=4", "train.devices=2",
           "train.strategy=ddp", "data.source=shards", f"data.path={shards}", "data.num_workers=1",
           "data.crop_size=32", "data.num_frames=8", "data.frame_step=2", "data.batches_per_epoch=10",
           "logging.trace_sample_keys=true", "train.checkpoint_every_steps=2"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    keys = {r: (tmp_path / f"debug/sample_keys/rank_{r}.txt").read_text().split() for r in (0, 1)}
    k0 = {k for k in keys[0] if not k.isdigit()}
    k1 = {k for k in keys[1] if not k.isdigit()}
    assert k0 and k1 and not k0 & k1  # explicit node split: each rank trains on its own shards
    assert [r["step"] for r in metrics(tmp_path / "debug")] == [1, 2, 3, 4]
    ckpt = tmp_path / "debug/checkpoints/step_0000000004"
    assert (ckpt / "data_state/rank_0.json").exists() and (ckpt / "data_state/rank_1.json").exists()


@pytest.mark.parametrize("in_job", [False, True])
def test_srun_hint_is_silenced_outside_a_slurm_job_only(tmp_path, monkeypatch, in_job):
    """Lightning's "srun is available but not used" on a machine with SLURM installed says nothing to a
    user who is not in an allocation (`vjepa launch` is the way onto the cluster); inside one it stays."""
    import warnings

    from lightning.fabric.plugins.environments import SLURMEnvironment

    from vjepa_pipeline.train.pretrain import quiet_lightning_warnings

    srun = tmp_path / "srun"
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    for var in [v for v in os.environ if v.startswith("SLURM_")]:
        monkeypatch.delenv(var)
    if in_job:
        monkeypatch.setenv("SLURM_JOB_ID", "42")
    with warnings.catch_warnings(record=True) as bare:
        warnings.simplefilter("always")
        SLURMEnvironment._validate_srun_used()
    assert any("srun" in str(w.message) for w in bare)  # Lightning does warn here
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_lightning_warnings():
            SLURMEnvironment._validate_srun_used()
    assert any("srun" in str(w.message) for w in seen) == in_job


def test_lightning_chatter_is_dropped_and_warnings_stay():
    import logging

    from vjepa_pipeline.train.pretrain import silence_lightning_chatter

    silence_lightning_chatter()
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    records = [logging.LogRecord(log.name, logging.INFO, __file__, 1, msg, None, None) for msg in
               ("GPU available: False, used: False", "`Trainer.fit` stopped: `max_steps=8` reached.",
                "Restoring states from the checkpoint path at x", "`Trainer.fit` stopped: No training batches.")]
    assert [log.filter(r) for r in records] == [False, False, True, True]
