"""`vjepa eval` end to end on tiny shards: encoder sources, features, the probe grid, reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from vjepa_pipeline.checkpoint.interop import save_hf, save_native
from vjepa_pipeline.config import config_to_dict, load_config
from vjepa_pipeline.config.schema import ShardsConfig
from vjepa_pipeline.models.inputs import normalize_clips
from vjepa_pipeline.eval.encoders import FrozenEncoder, load_encoder
from vjepa_pipeline.eval.runner import run_suite
from vjepa_pipeline.eval.suite import load_suite
from vjepa_pipeline.models.build import build_encoder
from vjepa_pipeline.shards.build import ShardBuilder

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["model.embed_dim=64", "model.depth=2", "model.num_heads=4", "model.patch_size=16", "data.num_frames=8",
         "data.crop_size=64"]


@pytest.fixture(scope="module")
def labelled_shards(tmp_path_factory, generated_clips) -> Path:
    out = tmp_path_factory.mktemp("eval_shards")
    ShardBuilder(generated_clips, out, ShardsConfig(short_side=64, samples_per_shard=2),
                 log=lambda *a: None).run(progress=False)
    return out


@pytest.fixture(scope="module")
def native_encoder(tmp_path_factory) -> Path:
    cfg = load_config(None, MODEL)
    torch.manual_seed(0)
    enc = build_encoder(cfg.model, 8, 64)
    path = tmp_path_factory.mktemp("enc") / "encoder.pt"
    save_native(path, {"target_encoder": enc}, config=config_to_dict(cfg))
    return path


def write_suite(tmp_path, shards, **probe) -> Path:
    suite = {"name": "tiny", "num_workers": 0, "feature_batch_size": 4, "datasets": [{
        "name": "toy", "train": str(shards), "val": str(shards), "num_frames": 8, "frame_step": 2, "crop_size": 64,
        "segments": 2, "views": 2, "low_shot": [1], "low_shot_seeds": [0, 1],
        "probe": {"kind": "linear", "epochs": 3, "batch_size": 4, "lrs": [1e-3, 1e-2], "weight_decays": [0.01],
                  "holdout_fraction": 0.34, **probe}}]}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_suite_runner_writes_every_report_file(tmp_path, labelled_shards, native_encoder):
    suite = load_suite(write_suite(tmp_path, labelled_shards))
    out = tmp_path / "report"
    results = run_suite(suite, str(native_encoder), out, log=lambda *a: None, device="cpu")
    ds = results["datasets"]["toy"]
    assert ds["num_train"] == 6 and ds["num_val"] == 6 and ds["num_classes"] == 2
    assert ds["class_names"] == ["left", "right"]
    assert 0.0 <= ds["top1"] <= 1.0 and ds["top5"] == 1.0
    assert ds["selection_rule"].startswith("held-out") and len(ds["grid"]) == 2
    assert ds["protocol"]["probe"] == "linear" and ds["protocol"]["self_attn_blocks"] == 0  # what ran, not the key's default
    assert "num_heads" not in ds["protocol"] and "knn_k" not in ds["protocol"]  # keys a linear probe never reads
    assert set(ds["low_shot"]) == {"1"} and len(ds["low_shot"]["1"]["runs"]) == 2
    for name in ("results.json", "report.md", "probes/toy.pt"):
        assert (out / name).exists(), name
    assert list((out / "plots").glob("confusion_*.png")) and list((out / "plots").glob("curves_*.png"))
    saved = json.loads((out / "results.json").read_text())
    assert saved["encoder"]["fingerprint"] == results["encoder"]["fingerprint"]
    # --val-only re-evaluates the saved probe without training and gives the same top-1.
    again = run_suite(suite, str(native_encoder), out, val_only=True, log=lambda *a: None, device="cpu")
    assert again["datasets"]["toy"]["top1"] == pytest.approx(ds["top1"])


def test_hf_layout_encoder_gives_the_same_features_as_its_native_twin(tmp_path, native_encoder):
    pytest.importorskip("transformers")
    native = load_encoder(native_encoder)
    save_hf(tmp_path / "hf", native.encoder, None, num_frames=8, crop_size=64)
    hf = load_encoder(tmp_path / "hf")
    assert hf.kind == "hf" and hf.fingerprint == native.fingerprint
    clips = normalize_clips(torch.randint(0, 255, (2, 8, 64, 64, 3), dtype=torch.uint8))
    torch.testing.assert_close(FrozenEncoder(hf.encoder)(clips), FrozenEncoder(native.encoder)(clips))


def test_official_checkpoint_needs_and_uses_model_overrides(tmp_path, native_encoder):
    from vjepa_pipeline.errors import CheckpointError
    from vjepa_pipeline.checkpoint.interop import save_official

    enc = load_encoder(native_encoder).encoder
    save_official(tmp_path / "official.pth", {"encoder": enc, "target_encoder": enc})
    with pytest.raises(CheckpointError, match="--model"):
        load_encoder(tmp_path / "official.pth")  # default (ViT-tiny) does not fit
    loaded = load_encoder(tmp_path / "official.pth", MODEL)
    assert loaded.kind == "official" and loaded.fingerprint == load_encoder(native_encoder).fingerprint


def test_multi_layer_features_concatenate(native_encoder):
    enc = load_encoder(native_encoder).encoder
    clips = normalize_clips(torch.randint(0, 255, (1, 8, 64, 64, 3), dtype=torch.uint8))
    feats = FrozenEncoder(enc, [0, -1])(clips)
    assert feats.shape[-1] == 128
    torch.testing.assert_close(feats[..., 64:], FrozenEncoder(enc)(clips))


def test_cli_eval_runs_and_rejects_unknown_datasets(tmp_path, labelled_shards, native_encoder):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    suite = write_suite(tmp_path, labelled_shards)
    base = [sys.executable, "-m", "vjepa_pipeline", "eval", "--suite", str(suite), "--encoder", str(native_encoder),
            "--out", str(tmp_path / "o"), "--device", "cpu"]
    ok = subprocess.run(base, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (tmp_path / "o/report.md").exists()
    bad = subprocess.run([*base, "--dataset", "nope"], env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "nope" in bad.stderr and "Traceback" not in bad.stderr


def test_recorded_probe_protocol_holds_what_each_kind_reads():
    import dataclasses

    from vjepa_pipeline.eval.suite import UNUSED_PROBE_KEYS, ProbeConfig, probe_protocol

    fields = {f.name for f in dataclasses.fields(ProbeConfig)} - {"kind"}
    for kind in ("attentive", "attentive_v2", "linear", "knn"):
        rec = probe_protocol(ProbeConfig(kind=kind, self_attn_blocks=3))
        assert rec["probe"] == kind and set(rec) - {"probe"} == fields - set(UNUSED_PROBE_KEYS[kind]) | {"self_attn_blocks"}
    assert probe_protocol(ProbeConfig(kind="attentive_v2", self_attn_blocks=3))["self_attn_blocks"] == 3
    assert probe_protocol(ProbeConfig(kind="attentive", self_attn_blocks=3))["self_attn_blocks"] == 0
    knn = probe_protocol(ProbeConfig(kind="knn"))
    assert {"knn_k", "knn_temperature", "segment_mode"} <= set(knn) and not {"epochs", "lrs", "selection"} & set(knn)
