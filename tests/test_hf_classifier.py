"""Hugging Face VJEPA2ForVideoClassification checkpoints: the backbone as our encoder (and
predictor), the pooler + classifier as our attentive probe with the HF model's logits, the head
refused with a one-line reason where it cannot be reproduced, and `vjepa eval --head`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml

from vjepa_pipeline.checkpoint.interop import load_part, select_state
from vjepa_pipeline.checkpoint.layouts import hf_classifier_to_probe, native_to_hf, split_hf_classifier
from vjepa_pipeline.config.schema import ShardsConfig
from vjepa_pipeline.errors import CheckpointError
from vjepa_pipeline.eval.encoders import load_encoder
from vjepa_pipeline.eval.hf_classifier import GivenHead, hf_classifier_head, load_head, load_hf_classifier
from vjepa_pipeline.eval.probes import AttentiveProbe
from vjepa_pipeline.models.predictor import Predictor
from vjepa_pipeline.models.vit import VisionTransformer, gather_tokens

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    # the default pooler (3 self-attention layers), head dim 64
    "default": dict(crop=64, frames=8, dim=192, heads=3, pooler_layers=3, labels=5),
    # one pooler layer, 5 heads of 32, a non-cubic grid (2, 6, 6)
    "narrow": dict(crop=96, frames=4, dim=160, heads=5, pooler_layers=1, labels=3),
}


@pytest.fixture(scope="module")
def hf():
    return pytest.importorskip("transformers")


def hf_config(hf, case: dict, **extra):
    return hf.VJEPA2Config(crop_size=case["crop"], frames_per_clip=case["frames"], hidden_size=case["dim"],
                           num_attention_heads=case["heads"], num_hidden_layers=2, pred_hidden_size=96,
                           pred_num_attention_heads=4, pred_num_hidden_layers=2, pred_zero_init_mask_tokens=False,
                           num_pooler_layers=case["pooler_layers"], num_labels=case["labels"],
                           attn_implementation="eager", **extra)


@torch.no_grad()
def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Perturb every parameter (LayerNorms, biases, query token included) so a dropped or swapped
    tensor shows in the outputs."""
    gen = torch.Generator().manual_seed(1000 + seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return module


def hf_classifier(hf, case: dict, seed: int = 0, **extra):
    torch.manual_seed(seed)
    return randomize_(hf.VJEPA2ForVideoClassification(hf_config(hf, case, **extra)), seed).eval()


def clips(case: dict, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """(B, C, T, H, W), our layout; HF takes (B, T, C, H, W)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, case["frames"], case["crop"], case["crop"], generator=gen)


def hf_view(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 1, 3, 4)


def saved(model, tmp_path: Path, name: str = "cls") -> Path:
    out = tmp_path / name
    model.save_pretrained(out)
    return out


# ----------------------------------------------------------------------------- backbone
@pytest.mark.parametrize("name", list(CASES))
def test_backbone_loads_as_our_encoder_and_predictor(hf, tmp_path, name):
    """The pooler / classifier keys no longer block the backbone: encoder and predictor outputs
    match the classification model's own VJEPA2Model to 1e-5."""
    case = CASES[name]
    model = hf_classifier(hf, case, seed=1)
    directory = saved(model, tmp_path)
    enc = load_encoder(directory)
    assert enc.kind == "hf"
    x = clips(case, seed=2)
    grid = (case["frames"] // 2, case["crop"] // 16, case["crop"] // 16)
    n = grid[0] * grid[1] * grid[2]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    ctx, tgt = perm[: n // 2].repeat(2, 1), perm[n // 2: n // 2 + n // 4].repeat(2, 1)
    with torch.no_grad():
        out = model.vjepa2(pixel_values_videos=hf_view(x), context_mask=[ctx], target_mask=[tgt])
        ours = enc.encoder(x)
    assert (ours - out.last_hidden_state).abs().max().item() <= 1e-5

    pred = Predictor(embed_dim=case["dim"], predictor_embed_dim=96, depth=2, num_heads=4, num_mask_tokens=10,
                     num_frames=case["frames"], img_size=case["crop"], pos_embed="rope")
    load_part(directory, pred, "predictor")
    with torch.no_grad():
        ours_pred = pred.eval()(gather_tokens(ours, ctx), ctx, tgt, grid, mask_index=1)  # HF's default mask token
    assert (ours_pred - out.predictor_output.last_hidden_state).abs().max().item() <= 1e-5


# ----------------------------------------------------------------------------- head
@pytest.mark.parametrize("name", list(CASES))
def test_head_maps_onto_our_attentive_probe_with_the_same_logits(hf, tmp_path, name):
    case = CASES[name]
    model = hf_classifier(hf, case, seed=4)
    loaded = load_hf_classifier(saved(model, tmp_path))
    assert loaded.head_refused is None
    assert isinstance(loaded.head, AttentiveProbe)
    assert loaded.given.head_config == {
        "kind": "attentive_v2", "dim": case["dim"], "num_classes": case["labels"], "num_heads": case["heads"],
        "self_attn_blocks": case["pooler_layers"], "mlp_ratio": 4.0, "final_norm": False}
    assert loaded.given.class_names == [f"LABEL_{i}" for i in range(case["labels"])]
    x = clips(case, batch=3, seed=5)
    with torch.no_grad():
        theirs = model(pixel_values_videos=hf_view(x)).logits
    ours = loaded.logits(x)
    assert ours.shape == theirs.shape == (3, case["labels"])
    assert (ours - theirs).abs().max().item() <= 1e-5
    assert theirs.std(dim=0).max().item() > 1e-3  # the logits depend on the clip: the check is not trivial
    # HF's cross-attention has no output projection: ours is the identity
    proj = loaded.head.pooler.cross_attention_block.xattn.proj
    assert torch.equal(proj.weight, torch.eye(case["dim"])) and not proj.bias.any()


def test_head_refused_with_a_one_line_reason_where_it_cannot_be_reproduced(hf, tmp_path):
    """A pooler whose LayerNorms use another eps than our probe's: the backbone still loads (and
    matches), the head is refused, and --head says why in one line."""
    case = CASES["default"]
    model = hf_classifier(hf, case, seed=6, layer_norm_eps=1e-5)
    directory = saved(model, tmp_path)
    loaded = load_hf_classifier(directory)
    assert loaded.head is None and loaded.given is None
    assert "classification head refused" in loaded.head_refused and "eps 1e-05" in loaded.head_refused
    assert "\n" not in loaded.head_refused
    x = clips(case, seed=7)
    with torch.no_grad():
        theirs = model.vjepa2(pixel_values_videos=hf_view(x), skip_predictor=True).last_hidden_state
    assert (loaded.encoder.encoder(x) - theirs).abs().max().item() <= 1e-5
    with pytest.raises(CheckpointError, match="eps"):
        loaded.logits(x)
    with pytest.raises(CheckpointError, match="eps"):
        load_head(directory)

    # weights without their config.json: the number of pooler heads is unknown
    lone = tmp_path / "lone"
    lone.mkdir()
    (directory / "model.safetensors").rename(lone / "model.safetensors")
    with pytest.raises(CheckpointError, match="no config.json") as info:
        hf_classifier_head(lone / "model.safetensors")
    assert "\n" not in str(info.value)


def test_head_mapping_without_transformers():
    """The key mapping on plain state dicts: fused q|k|v and k|v, identity projection, leftovers."""
    probe = AttentiveProbe(64, 4, num_heads=4, self_attn_blocks=2, final_norm=False)
    sd = probe.state_dict()
    head = {"pooler.query_tokens": sd["pooler.query_tokens"], "classifier.weight": sd["linear.weight"],
            "classifier.bias": sd["linear.bias"]}
    for i in range(2):
        src, dst = f"pooler.self_attention_layers.{i}", f"pooler.blocks.{i}"
        for kind in ("weight", "bias"):
            for p, part in zip("qkv", sd[f"{dst}.attn.qkv.{kind}"].chunk(3)):
                head[f"{src}.self_attn.{p}_proj.{kind}"] = part
            head[f"{src}.self_attn.out_proj.{kind}"] = sd[f"{dst}.attn.proj.{kind}"]
            for a, b in (("layer_norm1", "norm1"), ("layer_norm2", "norm2"), ("mlp.fc1", "mlp.fc1"),
                         ("mlp.fc2", "mlp.fc2")):
                head[f"{src}.{a}.{kind}"] = sd[f"{dst}.{b}.{kind}"]
    src, dst = "pooler.cross_attention_layer", "pooler.cross_attention_block"
    for kind in ("weight", "bias"):
        head[f"{src}.cross_attn.q_proj.{kind}"] = sd[f"{dst}.xattn.q.{kind}"]
        for p, part in zip("kv", sd[f"{dst}.xattn.kv.{kind}"].chunk(2)):
            head[f"{src}.cross_attn.{p}_proj.{kind}"] = part
        for a, b in (("layer_norm1", "norm1"), ("layer_norm2", "norm2"), ("mlp.fc1", "mlp.fc1"),
                     ("mlp.fc2", "mlp.fc2")):
            head[f"{src}.{a}.{kind}"] = sd[f"{dst}.{b}.{kind}"]
    mapped, facts = hf_classifier_to_probe(head)
    assert facts == {"dim": 64, "num_classes": 4, "self_attn_blocks": 2, "mlp_ratio": 4.0}
    assert mapped.keys() == sd.keys()
    for k in sd:
        if ".xattn.proj." not in k:
            assert torch.equal(mapped[k], sd[k]), k
    assert torch.equal(mapped["pooler.cross_attention_block.xattn.proj.weight"], torch.eye(64))

    with pytest.raises(ValueError, match="no counterpart"):
        hf_classifier_to_probe({**head, "pooler.extra.weight": torch.zeros(1)})

    # the head splits off a full classification state dict; the backbone converts as before
    enc = VisionTransformer(embed_dim=64, depth=1, num_heads=4, num_frames=4, img_size=32)
    full = {f"vjepa2.{k}": v for k, v in native_to_hf(enc.state_dict()).items()} | head
    backbone, split = split_hf_classifier(full)
    assert split.keys() == head.keys() and not any(k.startswith(("pooler.", "classifier.")) for k in backbone)
    assert select_state(full, "encoder").keys() == enc.state_dict().keys()
    # a stray classifier key alone is not a classification head: still reported
    with pytest.raises(CheckpointError, match="classifier.weight"):
        select_state({**native_to_hf(enc.state_dict()), "classifier.weight": torch.zeros(3, 64)}, "encoder")


# ----------------------------------------------------------------------------- vjepa eval --head
@pytest.fixture(scope="module")
def labelled_shards(tmp_path_factory, generated_clips) -> Path:
    from vjepa_pipeline.shards.build import ShardBuilder

    out = tmp_path_factory.mktemp("hf_head_shards")
    ShardBuilder(generated_clips, out, ShardsConfig(short_side=64, samples_per_shard=2),
                 log=lambda *a: None).run(progress=False)
    return out


def write_suite(tmp_path: Path, shards: Path, names=("toy",)) -> Path:
    datasets = [{"name": n, "train": str(shards), "val": str(shards), "num_frames": 8, "frame_step": 2,
                 "crop_size": 64, "probe": {"kind": "attentive_v2"}} for n in names]
    path = tmp_path / f"suite_{len(names)}.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "num_workers": 0, "feature_batch_size": 4, "datasets": datasets}))
    return path


@torch.no_grad()
def hf_confusion(model, shards: Path, suite_path: Path) -> list[list[int]]:
    """The HF model's own predictions on the clips the suite reads (one segment, one view)."""
    from vjepa_pipeline.data.eval_stream import EvalVideos
    from vjepa_pipeline.eval.features import eval_data_config
    from vjepa_pipeline.eval.suite import load_suite
    from vjepa_pipeline.models.inputs import normalize_clips

    suite = load_suite(suite_path)
    conf = [[0, 0], [0, 0]]
    for item in EvalVideos(eval_data_config(suite.datasets[0], suite), str(shards), 1, 1):
        x = normalize_clips(item["views"].reshape(-1, *item["views"].shape[2:]))
        conf[item["label"]][int(model(pixel_values_videos=hf_view(x)).logits.argmax())] += 1
    return conf


def test_cli_eval_head_gives_the_hf_models_predictions(hf, tmp_path, labelled_shards):
    case = dict(CASES["default"], labels=2)
    model = hf_classifier(hf, case, seed=8)
    directory = saved(model, tmp_path)
    suite = write_suite(tmp_path, labelled_shards)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "vjepa_pipeline", "eval", "--suite", str(suite), "--encoder", str(directory),
           "--head", str(directory), "--out", str(tmp_path / "o"), "--device", "cpu"]
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    ds = json.loads((tmp_path / "o/results.json").read_text())["datasets"]["toy"]
    assert ds["num_train"] == 0 and ds["num_val"] == 6 and ds["class_names"] == ["left", "right"]
    assert ds["protocol"]["probe"] == "attentive_v2" and ds["protocol"]["head"] == str(directory)
    assert ds["selection_rule"].startswith("given head") and (tmp_path / "o/report.md").exists()
    assert ds["confusion"] == hf_confusion(model, labelled_shards, suite)

    # a probe file (as vjepa eval writes under probes/) is a head source too
    given = load_head(directory)
    torch.save({"head_state": given.head_state, "head_config": given.head_config}, tmp_path / "toy.pt")
    again = load_head(tmp_path / "toy.pt")
    assert again.kind == "probe" and again.head_config == given.head_config
    assert isinstance(again.build(), AttentiveProbe) and isinstance(given, GivenHead)

    # one head, one dataset; a refused head is a one-line error, no traceback
    two = write_suite(tmp_path, labelled_shards, names=("a", "b"))
    bad = subprocess.run([*cmd[:5], str(two), *cmd[6:]], env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--dataset" in bad.stderr and "Traceback" not in bad.stderr
    refused = saved(hf_classifier(hf, case, seed=9, layer_norm_eps=1e-5), tmp_path, "eps")
    cmd_refused = [*cmd[:9], str(refused), *cmd[10:]]
    res = subprocess.run(cmd_refused, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "eps" in res.stderr and "Traceback" not in res.stderr
