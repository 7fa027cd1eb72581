"""metrics.jsonl / wandb / MetricsCallback, driven by a real Lightning Trainer on a tiny model whose
module fills ``step_record`` the way ObjectiveModule does (2 micro-batches per optimizer step)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vjepa_pipeline.train.devices import current_peak_flops, gpu_memory, peak_flops, precision_key
from vjepa_pipeline.train.metrics import MetricsCallback, MetricsWriter, WandbRun

REPO = Path(__file__).resolve().parents[1]


class FakeJEPA(pl.LightningModule):
    """Sets ``step_record`` once per optimizer step, either right after the optimizer step (as
    ObjectiveModule does) or in its own on_train_batch_end every 2nd micro-batch."""

    def __init__(self, where="optimizer_step", nan_steps=(), rankmes=None, flops=2e9):
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.where, self.nan_steps, self.rankmes, self.flops = where, set(nan_steps), rankmes, flops
        self.micro = 0

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.layer(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        if self.where == "optimizer_step":
            self.step_record = self.make_record(self.trainer.global_step + 1)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.micro += 1
        if self.where == "on_train_batch_end" and self.micro % 2 == 0:
            self.step_record = self.make_record(self.trainer.global_step)

    def make_record(self, step):
        rec = {
            "step": step, "loss": float("nan") if step in self.nan_steps else 1.0 / step,
            "loss_mask": [0.5 / step, 1.5 / step], "lr": 3.1e-4, "weight_decay": 0.04,
            "ema_momentum": 0.996, "grad_norm": 2.0, "clips": 8, "tokens": 8000, "data_wait_s": 0.05,
            "step_time_s": 0.5, "flops": self.flops,
            "loader": {"attempts": 10 * step, "failures": {"decode": step}},
        }
        if self.rankmes is not None:
            rec["collapse"] = {"target_std_mean": 0.3, "target_std_min": 0.1, "pooled_std_mean": 0.2,
                               "pooled_rankme": self.rankmes[step - 1], "token_rankme": 9.0}
        return rec


def fit(module, callback, max_steps, ckpt_path=None, accelerator="cpu", precision="32"):
    data = DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=4)
    trainer = pl.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=max_steps,
                         accumulate_grad_batches=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[callback])
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return trainer


def callback(run_dir, **kw):
    kw = {"log_every_steps": 1, "stats_every_steps": 1, "wandb_cfg": None, "world_size": 2,
          "precision": "32", "interactive": True, **kw}
    return MetricsCallback(run_dir, **kw)


def read_lines(run_dir):
    text = (Path(run_dir) / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("where", ["optimizer_step", "on_train_batch_end"])
def test_one_line_per_optimizer_step(tmp_path, where):
    fit(FakeJEPA(where=where), callback(tmp_path), max_steps=5)
    lines = read_lines(tmp_path)
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5]
    r = lines[2]
    assert r["epoch"] == 0
    assert r["loss"] == pytest.approx(1 / 3)
    assert r["loss_mask_0"] == pytest.approx(0.5 / 3) and r["loss_mask_1"] == pytest.approx(0.5)
    assert (r["lr"], r["wd"], r["ema"], r["grad_norm"], r["step_time_s"]) == (3.1e-4, 0.04, 0.996, 2.0, 0.5)
    assert r["data_wait_frac"] == pytest.approx(0.1)
    assert r["clips_per_s_per_device"] == pytest.approx(16) and r["clips_per_s"] == pytest.approx(32)
    assert r["tokens_per_s_per_device"] == pytest.approx(16000) and r["tokens_per_s"] == pytest.approx(32000)
    assert r["tflops_per_device"] == pytest.approx(0.004)
    assert "mfu" not in r  # no GPU peak known on CPU
    assert r["loader_attempts"] == 30 and r["loader_failures"] == 3 and r["loader_fail/decode"] == 3
    assert "collapse_alarm" not in r and not any(k.startswith("collapse/") for k in r)
    assert r["time"] > 0 and r["elapsed_s"] >= 0 and r["sec_per_step"] > 0


def test_log_every_and_window_average(tmp_path):
    fit(FakeJEPA(), callback(tmp_path, log_every_steps=3), max_steps=7)
    lines = read_lines(tmp_path)
    assert [r["step"] for r in lines] == [1, 3, 6, 7]  # first, every 3rd, last
    assert all(r["clips_per_s_per_device"] == pytest.approx(16) for r in lines)


def test_nan_written_as_null(tmp_path):
    fit(FakeJEPA(nan_steps={2}), callback(tmp_path), max_steps=3)
    text = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert [r["loss"] for r in read_lines(tmp_path)][1] is None

    w = MetricsWriter(tmp_path / "w")
    w.write({"step": 1, "a": float("inf"), "b": [float("-inf"), 1.0], "c": {"d": torch.tensor(float("nan"))},
             "e": torch.tensor(2.5)})
    w.close()
    expected = {"step": 1, "a": None, "b": [None, 1.0], "c": {"d": None}, "e": 2.5}
    assert read_lines(tmp_path / "w") == [expected]


def test_truncate_after(tmp_path):
    w = MetricsWriter(tmp_path)
    for s in range(1, 6):
        w.write({"step": s})
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 6, "lo')  # cut off by a kill
    assert w.truncate_after(3) == 3
    assert [r["step"] for r in read_lines(tmp_path)] == [1, 2, 3]
    w.write({"step": 4})  # appending still works after the rewrite
    assert [r["step"] for r in read_lines(tmp_path)] == [1, 2, 3, 4]
    assert MetricsWriter(tmp_path / "none").truncate_after(0) == 0


def test_resume_does_not_repeat_steps(tmp_path):
    module = FakeJEPA()
    trainer = fit(module, callback(tmp_path), max_steps=3)
    ckpt = tmp_path / "step3.ckpt"
    trainer.save_checkpoint(ckpt)
    w = MetricsWriter(tmp_path)  # the killed job had logged two more steps after the checkpoint
    w.write({"step": 4, "loss": 9.0})
    w.write({"step": 5, "loss": 9.0})
    w.close()
    fit(FakeJEPA(), callback(tmp_path), max_steps=5, ckpt_path=ckpt)
    lines = read_lines(tmp_path)
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5]
    assert lines[3]["loss"] == pytest.approx(0.25)  # rewritten by the resumed run


def test_plain_log_lines(tmp_path, capsys):
    fit(FakeJEPA(), callback(tmp_path / "a", log_every_steps=2, interactive=False), max_steps=4)
    out = capsys.readouterr().out.splitlines()
    lines = [line for line in out if line.startswith("step ")]
    assert [line.split(" |")[0] for line in lines] == ["step 1/4", "step 2/4", "step 4/4"]
    assert lines[1].startswith("step 2/4 | loss 0.5000 | lr 3.1e-4 | 32 clips/s | wait 10% | eta 0:00:")
    fit(FakeJEPA(), callback(tmp_path / "b", interactive=True), max_steps=2)
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]


def test_format_line():
    line = {"step": 120, "loss": 0.41234, "lr": 3.1e-4, "clips_per_s": 412.3, "data_wait_frac": 0.031,
            "sec_per_step": 0.85227}
    assert MetricsCallback.format_line(line, 1000) == \
        "step 120/1000 | loss 0.4123 | lr 3.1e-4 | 412 clips/s | wait 3% | eta 0:12:30"
    assert MetricsCallback.format_line({"step": 3, "loss": math.nan}) == "step 3 | loss nan"


def test_mfu_with_fake_peak(tmp_path):
    # 2e9 FLOPs per 0.5 s step = 4 TFLOP/s achieved; peak 10 TFLOP/s -> MFU 0.4.
    fit(FakeJEPA(flops=2e12), callback(tmp_path, peak_flops_per_device=10e12), max_steps=2)
    for r in read_lines(tmp_path):
        assert r["mfu"] == pytest.approx(0.4) and r["tflops_per_device"] == pytest.approx(4.0)


def test_collapse_alarm_fires_once_after_three_low(tmp_path, capsys):
    rankmes = [5.0, 1.0, 1.2, 3.0, 1.1, 1.0, 1.3, 1.2, 1.0, 4.0]
    # log_every 100: lines are still written on every step that carries collapse stats
    fit(FakeJEPA(rankmes=rankmes), callback(tmp_path, log_every_steps=100), max_steps=10)
    lines = read_lines(tmp_path)
    assert [r["step"] for r in lines] == list(range(1, 11))
    assert [r["collapse_alarm"] for r in lines] == [False] * 6 + [True, True, True, False]
    assert lines[0]["collapse/pooled_rankme"] == 5.0 and lines[0]["collapse/token_rankme"] == 9.0
    err = capsys.readouterr().err
    assert err.count("COLLAPSE ALARM") == 1 and "at step 7" in err


@pytest.mark.slow
def test_wandb_disabled_never_imports_wandb(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / "tests")!r})
        from test_train_metrics import FakeJEPA, callback, fit
        from vjepa_pipeline.train.metrics import WandbRun
        run = WandbRun({str(tmp_path)!r}, "disabled")
        run.log({{"loss": 1.0}}, step=1); run.finish()
        fit(FakeJEPA(), callback({str(tmp_path)!r}, wandb_cfg={{"mode": "disabled"}}), max_steps=2)
        assert "wandb" not in sys.modules, "wandb was imported"
        print("OK")
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-3000:]
    assert not (tmp_path / "wandb_id").exists() and not (tmp_path / "wandb").exists()


def test_wandb_offline_persists_and_reuses_id(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = {"mode": "offline", "project": "vjepa-test", "name": "tiny", "config": {"optim": {"lr": 1e-3}}}
    fit(FakeJEPA(), callback(tmp_path, wandb_cfg=cfg), max_steps=2)
    run_id = (tmp_path / "wandb_id").read_text().strip()
    assert len(run_id) == 8
    runs = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))

    again = WandbRun(tmp_path, "offline", project="vjepa-test")  # a requeued job: same run
    assert again.active and again.id == run_id and again.run.id == run_id
    again.log({"step": 3, "loss": 0.1, "collapse_alarm": True, "note": "x"}, step=3)
    again.finish()
    assert not again.active
    # offline: one dir per segment, named to the second, so two quick segments may share one
    # (the run id check above is the real test; wandb may also leave temporary entries here)
    segments = [d for d in (tmp_path / "wandb").glob("offline-run-*") if d.name.endswith(run_id)]
    assert 1 <= len(segments) <= 2, sorted(p.name for p in (tmp_path / "wandb").iterdir())


def test_wandb_failure_only_warns(tmp_path, monkeypatch, caplog):
    wandb = pytest.importorskip("wandb")

    def boom(**kwargs):
        raise RuntimeError("no wandb today")

    monkeypatch.setattr(wandb, "init", boom)
    run = WandbRun(tmp_path, "online")
    assert not run.active and "no wandb today" in caplog.text
    run.log({"loss": 1.0}, step=1)
    run.finish()


def test_peak_flops_table():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16-mixed") == 989e12
    assert peak_flops("NVIDIA H100 PCIe", "bf16-mixed") == 756e12
    assert peak_flops("NVIDIA H200", "bf16") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", "bf16-mixed") == 312e12
    assert peak_flops("NVIDIA A10G", "bf16-mixed") == 70e12  # the AWS variant, not an A10
    assert peak_flops("NVIDIA A10", "bf16-mixed") == 125e12
    assert peak_flops("NVIDIA L4", "bf16-mixed") == 121e12
    assert peak_flops("NVIDIA L40S", "bf16-mixed") == 362e12
    assert peak_flops("NVIDIA B200", "bf16-mixed") == 2250e12
    assert peak_flops("Tesla V100-SXM2-32GB", "16-mixed") == 125e12
    assert peak_flops("Tesla V100-SXM2-32GB", "bf16-mixed") is None  # no bf16 tensor cores
    assert peak_flops("NVIDIA H100 80GB HBM3", "32") == 67e12
    assert peak_flops("NVIDIA H100 80GB HBM3", "tf32") == 494e12
    assert peak_flops("Some Future GPU", "bf16-mixed") is None
    assert peak_flops("NVIDIA H100", "64-true") is None
    assert precision_key("bf16-mixed") == "bf16" and precision_key("16-mixed") == "fp16"
    assert precision_key("32-true") == "fp32" and precision_key("32") == "fp32"


def test_gpu_memory_empty_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert gpu_memory() == {}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_memory_and_peak_on_cuda(tmp_path):
    x = torch.ones(1024, 1024, device="cuda")  # 4 MiB
    mem = gpu_memory()
    assert mem["alloc_mib"] >= 4 and mem["reserved_mib"] >= mem["alloc_mib"] and mem["peak_mib"] >= 4
    del x
    name = torch.cuda.get_device_name()
    peak = current_peak_flops("bf16-mixed")
    print(name, peak)
    if any(k in name for k in ("H100", "H200", "A100")):  # the kinds our GPU machines have
        assert peak == peak_flops(name, "bf16") > 0
    fit(FakeJEPA(), callback(tmp_path, precision="bf16-mixed"), max_steps=2, accelerator="gpu",
        precision="bf16-mixed")
    for r in read_lines(tmp_path):
        assert r["gpu_mem_peak_mib"] > 0
        assert (r.get("mfu") == pytest.approx(2e9 / 0.5 / peak)) if peak else ("mfu" not in r)
