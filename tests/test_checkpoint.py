"""Checkpoint interop: HF VJEPA2Model peer equivalence, official / native layouts, strict loading,
safe reading, prefix handling and layout detection (vjepa_pipeline.checkpoint)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from vjepa_pipeline.checkpoint.interop import (
    NATIVE_FORMAT,
    NATIVE_FORMAT_VERSION,
    CheckpointError,
    describe_encoder_state,
    load_part,
    load_state_strict,
    read_checkpoint,
    save_hf,
    save_native,
    save_official,
    select_state,
)
from vjepa_pipeline.checkpoint.layouts import detect_layout, hf_to_native, native_to_hf, strip_prefixes
from vjepa_pipeline.models.positions import rope_axis_dim
from vjepa_pipeline.models.predictor import Predictor
from vjepa_pipeline.models.vit import VisionTransformer, gather_tokens

FRAMES, CROP = 8, 64
GRID = (4, 4, 4)  # 8 frames x 64 px, tubelet 2, patch 16
N_TOKENS = 64


# ----------------------------------------------------------------------------- helpers
def make_encoder(pos: str = "rope", uniform_power: bool = True, dim: int = 192, depth: int = 2, heads: int = 3,
                 frames: int = FRAMES, crop: int = CROP, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    enc = VisionTransformer(embed_dim=dim, depth=depth, num_heads=heads, num_frames=frames, img_size=crop,
                            pos_embed=pos, uniform_power=uniform_power)
    return randomize_(enc, seed).eval()


def make_predictor(pos: str = "rope", uniform_power: bool = True, embed: int = 192, dim: int = 96,
                   depth: int = 2, heads: int = 4, frames: int = FRAMES, crop: int = CROP,
                   num_mask_tokens: int = 10, seed: int = 0) -> Predictor:
    torch.manual_seed(seed)
    pred = Predictor(embed_dim=embed, predictor_embed_dim=dim, depth=depth, num_heads=heads,
                     num_mask_tokens=num_mask_tokens, num_frames=frames, img_size=crop, pos_embed=pos,
                     uniform_power=uniform_power)
    return randomize_(pred, seed).eval()


@torch.no_grad()
def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Perturb every parameter (LayerNorm weights/biases, linear biases and mask tokens included) so a
    swapped or dropped tensor changes the outputs."""
    gen = torch.Generator().manual_seed(1000 + seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return module


def random_masks(batch: int, n: int, n_ctx: int, n_tgt: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint, unsorted context / target token indices per sample."""
    gen = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.randperm(n, generator=gen) for _ in range(batch)])
    return perms[:, :n_ctx].contiguous(), perms[:, n_ctx:n_ctx + n_tgt].contiguous()


def clip(batch: int = 2, frames: int = FRAMES, crop: int = CROP, seed: int = 0) -> torch.Tensor:
    """(B, C, T, H, W) in our layout."""
    return torch.randn(batch, 3, frames, crop, crop, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def run_ours(enc, pred, x, ctx, tgt, grid, mask_index: int = 1):
    out = enc(x)
    return out, pred(gather_tokens(out, ctx), ctx, tgt, grid, mask_index=mask_index)


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def assert_different_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert any(not torch.equal(sa[k], sb[k]) for k in sa), "test setup: models are already identical"


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ============================================================================= 1. HF peer equivalence
HF_CASES = {
    # head dims: encoder 64 (3 x 20 rotated + 4 unrotated), predictor 24 (fully rotated); cubic grid
    "default": dict(crop=64, frames=8, dim=192, heads=3, pdim=96, pheads=4),
    # encoder head dim 32 (3 x 10 rotated + 2 unrotated), predictor 40 (3 x 12 + 4); grid (2, 6, 6)
    "unrotated": dict(crop=96, frames=4, dim=160, heads=5, pdim=80, pheads=2),
    # encoder head dim 48 (3 x 16, none left), predictor 24; long-in-time grid (6, 3, 3)
    "long": dict(crop=48, frames=12, dim=96, heads=2, pdim=72, pheads=3),
}


@pytest.fixture(scope="module")
def hf():
    """The transformers module; only the HF peer tests depend on it."""
    return pytest.importorskip("transformers")


def hf_config(hf, case: dict, **extra):
    return hf.VJEPA2Config(crop_size=case["crop"], frames_per_clip=case["frames"], hidden_size=case["dim"],
                           num_attention_heads=case["heads"], num_hidden_layers=2,
                           pred_hidden_size=case["pdim"], pred_num_attention_heads=case["pheads"],
                           pred_num_hidden_layers=2, pred_zero_init_mask_tokens=False,
                           attn_implementation="eager", **extra)


def case_grid(case: dict) -> tuple[int, int, int]:
    return case["frames"] // 2, case["crop"] // 16, case["crop"] // 16


def ours_for(case: dict, seed: int, num_mask_tokens: int = 10):
    enc = make_encoder(dim=case["dim"], heads=case["heads"], frames=case["frames"], crop=case["crop"], seed=seed)
    pred = make_predictor(embed=case["dim"], dim=case["pdim"], heads=case["pheads"], frames=case["frames"],
                          crop=case["crop"], num_mask_tokens=num_mask_tokens, seed=seed)
    return enc, pred


@torch.no_grad()
def run_hf(model, x_ours, ctx, tgt):
    out = model(pixel_values_videos=x_ours.permute(0, 2, 1, 3, 4), context_mask=[ctx], target_mask=[tgt])
    return out.last_hidden_state, out.predictor_output.last_hidden_state


def case_inputs(case: dict, seed: int):
    grid = case_grid(case)
    n = grid[0] * grid[1] * grid[2]
    ctx, tgt = random_masks(2, n, n // 2, n // 4, seed)
    return clip(2, case["frames"], case["crop"], seed), ctx, tgt, grid


def test_hf_cases_cover_the_rope_splits():
    """Guards the intent of HF_CASES: unrotated leftover dims and a non-cubic grid are exercised."""
    leftovers = {name: [hd - 3 * rope_axis_dim(hd) for hd in (c["dim"] // c["heads"], c["pdim"] // c["pheads"])]
                 for name, c in HF_CASES.items()}
    assert leftovers["unrotated"] == [2, 4]
    assert leftovers["long"] == [0, 0]
    assert len(set(case_grid(HF_CASES["unrotated"]))) > 1 and case_grid(HF_CASES["long"]) == (6, 3, 3)


@pytest.mark.parametrize("name", list(HF_CASES))
def test_hf_weights_reproduce_hf_outputs(hf, name):
    """HF VJEPA2Model -> hf_to_native -> strict load: encoder and predictor outputs match HF."""
    case = HF_CASES[name]
    torch.manual_seed(0)
    model = randomize_(hf.VJEPA2Model(hf_config(hf, case)), seed=1).eval()
    enc_sd, pred_sd = hf_to_native(model.state_dict())
    enc, pred = ours_for(case, seed=2)
    load_state_strict(enc, enc_sd, "encoder")
    load_state_strict(pred, pred_sd, "predictor")

    # every learned mask token is carried over, in order
    hf_tokens = model.predictor.embeddings.mask_tokens
    assert len(pred.mask_tokens) == hf_tokens.shape[0]
    for k, tok in enumerate(pred.mask_tokens):
        assert torch.equal(tok.detach(), hf_tokens[k].detach())

    x, ctx, tgt, grid = case_inputs(case, seed=3)
    hf_enc, hf_pred = run_hf(model, x, ctx, tgt)
    our_enc, our_pred = run_ours(enc, pred, x, ctx, tgt, grid, mask_index=1)
    assert our_enc.shape == hf_enc.shape == (2, grid[0] * grid[1] * grid[2], case["dim"])
    assert our_pred.shape == hf_pred.shape == (2, tgt.shape[1], case["dim"])
    assert (our_enc - hf_enc).abs().max().item() <= 1e-5
    assert (our_pred - hf_pred).abs().max().item() <= 1e-5
    # sanity: the comparison is not trivially satisfied (mask token choice matters)
    _, other = run_ours(enc, pred, x, ctx, tgt, grid, mask_index=0)
    assert (other - hf_pred).abs().max().item() > 1e-3


@pytest.mark.parametrize("name", ["default", "unrotated"])
def test_native_to_hf_loads_strictly_and_reproduces_ours(hf, name):
    case = HF_CASES[name]
    enc, pred = ours_for(case, seed=4)
    sd = native_to_hf(enc.state_dict(), pred.state_dict())
    torch.manual_seed(5)
    model = hf.VJEPA2Model(hf_config(hf, case)).eval()
    model.load_state_dict(sd, strict=True)

    x, ctx, tgt, grid = case_inputs(case, seed=6)
    hf_enc, hf_pred = run_hf(model, x, ctx, tgt)
    our_enc, our_pred = run_ours(enc, pred, x, ctx, tgt, grid)
    assert (our_enc - hf_enc).abs().max().item() <= 1e-5
    assert (our_pred - hf_pred).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", ["default", "unrotated"])
def test_save_hf_directory_loads_with_from_pretrained(hf, tmp_path, name):
    case = HF_CASES[name]
    enc, pred = ours_for(case, seed=7, num_mask_tokens=4)  # non-default count: config.json must say so
    out = tmp_path / "hf_export"
    save_hf(out, enc, pred, num_frames=case["frames"], crop_size=case["crop"])
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]  # no temp files left
    assert json.loads((out / "config.json").read_text())["model_type"] == "vjepa2"

    model, info = hf.VJEPA2Model.from_pretrained(out, attn_implementation="eager", output_loading_info=True)
    model.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert model.config.pred_num_mask_tokens == 4
    assert (model.config.crop_size, model.config.frames_per_clip) == (case["crop"], case["frames"])

    x, ctx, tgt, grid = case_inputs(case, seed=8)
    hf_enc, hf_pred = run_hf(model, x, ctx, tgt)
    our_enc, our_pred = run_ours(enc, pred, x, ctx, tgt, grid)
    assert (our_enc - hf_enc).abs().max().item() <= 1e-5
    assert (our_pred - hf_pred).abs().max().item() <= 1e-5


# ----------------------------------------------------------------------------- HF layout without transformers
def test_hf_layout_round_trip_and_qkv_split():
    enc, pred = make_encoder(seed=9), make_predictor(seed=9)
    hf_sd = native_to_hf(enc.state_dict(), pred.state_dict())
    qkv = enc.state_dict()["blocks.1.attn.qkv.weight"]
    assert torch.equal(hf_sd["encoder.layer.1.attention.query.weight"], qkv[:192])
    assert torch.equal(hf_sd["encoder.layer.1.attention.key.weight"], qkv[192:384])
    assert torch.equal(hf_sd["encoder.layer.1.attention.value.weight"], qkv[384:])
    assert hf_sd["predictor.embeddings.mask_tokens"].shape == (10, 1, 1, 96)

    enc_sd, pred_sd = hf_to_native(hf_sd)
    for ours, back in ((enc.state_dict(), enc_sd), (pred.state_dict(), pred_sd)):
        assert ours.keys() == back.keys()
        for k in ours:
            assert torch.equal(ours[k], back[k]), k
    # a "vjepa2."-prefixed dict (as inside VJEPA2ForVideoClassification) converts the same way
    enc_sd2, _ = hf_to_native({f"vjepa2.{k}": v for k, v in hf_sd.items()})
    assert enc_sd2.keys() == enc_sd.keys()


def test_hf_leftover_keys_are_reported():
    hf_sd = native_to_hf(make_encoder().state_dict(), make_predictor().state_dict())
    hf_sd["classifier.weight"] = torch.zeros(3, 192)
    with pytest.raises(KeyError, match="classifier.weight"):
        hf_to_native(hf_sd)
    # through the public loading path it is a CheckpointError (the CLI reports those cleanly)
    msg = error_of(load_part, hf_sd, make_encoder(), "encoder")
    assert "classifier.weight" in msg


def test_hf_export_refuses_sincos_models(tmp_path):
    enc = make_encoder(pos="sincos")
    with pytest.raises(ValueError, match="RoPE"):
        native_to_hf(enc.state_dict() | {"pos_embed": enc.pos_embed})
    assert "RoPE" in error_of(save_hf, tmp_path / "x", enc, None, FRAMES, CROP)
    assert not (tmp_path / "x" / "model.safetensors").exists()


def test_save_hf_directory_loads_back_with_load_part(tmp_path):
    enc, pred = make_encoder(seed=10), make_predictor(seed=10)
    save_hf(tmp_path / "hf", enc, pred, num_frames=FRAMES, crop_size=CROP)
    enc2, tgt2, pred2 = make_encoder(seed=11), make_encoder(seed=12), make_predictor(seed=11)
    assert_different_state(enc, enc2)
    load_part(tmp_path / "hf", enc2, "encoder")
    load_part(tmp_path / "hf", tgt2, "target_encoder")  # HF's single encoder serves as both
    load_part(tmp_path / "hf", pred2, "predictor")
    assert_same_state(enc, enc2)
    assert_same_state(enc, tgt2)
    assert_same_state(pred, pred2)


# ============================================================================= 2. official layout
def official_parts(pos: str = "rope", uniform_power: bool = True):
    return {"encoder": make_encoder(pos, uniform_power, seed=20),
            "predictor": make_predictor(pos, uniform_power, seed=21),
            "target_encoder": make_encoder(pos, uniform_power, seed=22)}


@pytest.mark.parametrize("pos", ["rope", "sincos"])
def test_official_round_trip(tmp_path, pos):
    parts = official_parts(pos)
    path = tmp_path / "official.pt"
    save_official(path, parts)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"encoder", "predictor", "target_encoder"}
    for name, sd in raw.items():
        assert sd and all(k.startswith("module.backbone.") for k in sd), name
        assert all(v.dtype == torch.float32 for v in sd.values())
    has_tables = pos == "sincos"
    for name in ("encoder", "target_encoder"):
        assert ("module.backbone.pos_embed" in raw[name]) == has_tables
    assert ("module.backbone.predictor_pos_embed" in raw["predictor"]) == has_tables
    if has_tables:
        assert torch.equal(raw["encoder"]["module.backbone.pos_embed"], parts["encoder"].pos_embed)

    ckpt = read_checkpoint(path)
    sd = select_state(ckpt, "target_encoder")
    assert "blocks.0.attn.qkv.weight" in sd and not any(k.startswith(("module.", "backbone.")) for k in sd)

    x = clip(seed=23)
    ctx, tgt = random_masks(2, N_TOKENS, 32, 16, seed=23)
    for name in ("encoder", "target_encoder"):
        fresh = make_encoder(pos, seed=24)
        load_part(path, fresh, name)
        assert_same_state(parts[name], fresh)
        with torch.no_grad():
            assert torch.equal(fresh(x, masks=ctx), parts[name](x, masks=ctx))
    # encoder and target_encoder were different models; they must not have been swapped/merged
    assert_different_state(parts["encoder"], parts["target_encoder"])
    fresh_pred, enc = make_predictor(pos, seed=25), parts["encoder"]
    load_part(ckpt, fresh_pred, "predictor")
    assert torch.equal(run_ours(enc, fresh_pred, x, ctx, tgt, GRID)[1],
                       run_ours(enc, parts["predictor"], x, ctx, tgt, GRID)[1])


def test_official_training_checkpoint_with_extras_loads(tmp_path):
    """Official files also carry opt / epoch / ... and may use a bare ``module.`` prefix."""
    enc = make_encoder(seed=26)
    path = tmp_path / "vjepa2_style.pt"
    torch.save({"encoder": {f"module.{k}": v for k, v in enc.state_dict().items()},
                "target_encoder": {f"module.backbone.{k}": v for k, v in enc.state_dict().items()},
                "opt": {"state": {}, "param_groups": []}, "epoch": 7, "loss": 0.5, "batch_size": 4}, path)
    fresh = make_encoder(seed=27)
    load_part(path, fresh, "encoder")
    assert_same_state(enc, fresh)
    assert "'predictor'" in error_of(load_part, path, make_predictor(), "predictor")


@pytest.fixture()
def sincos_official(tmp_path) -> dict:
    path = tmp_path / "vjepa1.pt"
    save_official(path, official_parts("sincos", uniform_power=True))
    return read_checkpoint(path)


@pytest.mark.parametrize("part", ["encoder", "predictor"])
def test_corrupted_sincos_table_is_rejected(sincos_official, part):
    key = "module.backbone." + ("pos_embed" if part == "encoder" else "predictor_pos_embed")
    sincos_official[part][key] = sincos_official[part][key] + 0.01
    module = make_encoder("sincos") if part == "encoder" else make_predictor("sincos")
    msg = error_of(load_part, sincos_official, module, part)
    assert "uniform_power" in msg and key.split(".")[-1] in msg


@pytest.mark.parametrize("part", ["encoder", "target_encoder", "predictor"])
def test_sincos_table_of_other_uniform_power_is_rejected(sincos_official, part):
    module = make_encoder("sincos", uniform_power=False) if part != "predictor" else \
        make_predictor("sincos", uniform_power=False)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    assert "uniform_power" in error_of(load_part, sincos_official, module, part)
    # nothing was loaded before the error (no silent partial load)
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the matching setting loads fine
    ok = make_encoder("sincos") if part != "predictor" else make_predictor("sincos")
    load_part(sincos_official, ok, part)


@pytest.mark.parametrize("part", ["encoder", "predictor"])
def test_sincos_checkpoint_into_rope_model_gives_a_hint(sincos_official, part, caplog):
    """A RoPE model ignores a stored table, as the official V-JEPA 2 loader does (released V-JEPA 2
    files carry one); the weights cannot tell a V-JEPA 1 file apart, so one log line names the fix."""
    module = make_encoder("rope") if part == "encoder" else make_predictor("rope")
    with caplog.at_level("INFO", logger="vjepa_pipeline.checkpoint.interop"):
        load_part(sincos_official, module, part)
    lines = [r.getMessage() for r in caplog.records if r.name == "vjepa_pipeline.checkpoint.interop"]
    assert len(lines) == 1 and "RoPE" in lines[0] and "pos_embed=sincos" in lines[0]


def test_sincos_table_for_another_clip_size_names_the_fix(sincos_official):
    module = make_encoder("sincos", crop=96)  # same weights shapes, 6x6 instead of 4x4 spatial grid
    msg = error_of(load_part, sincos_official, module, "encoder")
    assert "shape" in msg and "crop_size" in msg


# ============================================================================= 3. native format
def test_native_round_trip(tmp_path):
    parts = {"encoder": make_encoder("sincos", seed=30), "predictor": make_predictor("sincos", seed=31),
             "target_encoder": make_encoder("sincos", seed=32)}
    config = {"model": {"size": "tiny", "pos_embed": "sincos"}, "data": {"num_frames": FRAMES}}
    path = tmp_path / "run" / "latest.pt"
    save_native(path, parts, config=config, epoch=3, step=120)
    assert [p.name for p in path.parent.iterdir()] == ["latest.pt"]  # atomic write left no temp file

    ckpt = read_checkpoint(path)
    assert ckpt["format"] == NATIVE_FORMAT and ckpt["format_version"] == NATIVE_FORMAT_VERSION
    assert ckpt["config"] == config and ckpt["epoch"] == 3 and ckpt["step"] == 120
    assert "pos_embed" not in ckpt["encoder"]  # computed tables are not stored natively
    for name, module in parts.items():
        fresh = make_encoder("sincos", seed=33) if name != "predictor" else make_predictor("sincos", seed=33)
        assert_different_state(module, fresh)
        load_part(path, fresh, name)
        assert_same_state(module, fresh)


def test_native_save_is_fp32_on_cpu(tmp_path):
    enc = make_encoder(seed=34).to(torch.bfloat16)
    save_native(tmp_path / "bf16.pt", {"encoder": enc})
    sd = read_checkpoint(tmp_path / "bf16.pt")["encoder"]
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in sd.values())
    assert torch.equal(sd["norm.weight"], enc.norm.weight.detach().float())


def test_bare_state_dicts_load(tmp_path):
    enc, pred = make_encoder(seed=35), make_predictor(seed=35)
    torch.save({f"_orig_mod.{k}": v for k, v in enc.state_dict().items()}, tmp_path / "enc.pt")
    torch.save(pred.state_dict(), tmp_path / "pred.pt")
    fresh_enc, fresh_pred = make_encoder(seed=36), make_predictor(seed=36)
    load_part(tmp_path / "enc.pt", fresh_enc, "target_encoder")
    load_part(tmp_path / "pred.pt", fresh_pred, "predictor")
    assert_same_state(enc, fresh_enc)
    assert_same_state(pred, fresh_pred)
    # a bare encoder dict is not a predictor, and vice versa
    assert "encoder weights" in error_of(load_part, tmp_path / "enc.pt", make_predictor(), "predictor")
    assert "predictor weights" in error_of(load_part, tmp_path / "pred.pt", make_encoder(), "encoder")


# ============================================================================= 4. strictness
def test_missing_keys_are_listed_with_count():
    enc = make_encoder()
    sd = make_encoder(seed=40).state_dict()
    del sd["blocks.1.mlp.fc2.bias"], sd["norm.weight"]
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    msg = error_of(load_state_strict, enc, sd, "encoder")
    assert "missing (2)" in msg and "blocks.1.mlp.fc2.bias" in msg and "norm.weight" in msg
    assert "unexpected" not in msg and "shape mismatch" not in msg
    for k, v in enc.state_dict().items():  # nothing partially loaded
        assert torch.equal(v, before[k]), k


def test_unexpected_keys_are_listed_with_count():
    sd = make_encoder().state_dict()
    sd["blocks.0.attn.q_norm.weight"] = torch.ones(64)
    sd["head.weight"] = torch.zeros(10, 192)
    msg = error_of(load_state_strict, make_encoder(), sd, "encoder")
    assert "unexpected (2)" in msg and "blocks.0.attn.q_norm.weight" in msg and "head.weight" in msg
    assert "missing" not in msg


def test_shape_mismatches_are_listed_with_count():
    sd = make_encoder().state_dict()
    sd["blocks.0.norm1.weight"] = torch.ones(191)
    sd["blocks.1.mlp.fc1.weight"] = torch.ones(700, 192)
    msg = error_of(load_state_strict, make_encoder(), sd, "encoder")
    assert "shape mismatch (2)" in msg and "blocks.0.norm1.weight" in msg and "blocks.1.mlp.fc1.weight" in msg
    assert "(191,)" in msg and "(192,)" in msg


def test_many_missing_keys_are_truncated_but_counted():
    sd = make_encoder().state_dict()
    sd = {k: v for k, v in sd.items() if not k.startswith("blocks.")}
    msg = error_of(load_state_strict, make_encoder(), sd, "encoder")
    n_block_keys = sum(k.startswith("blocks.") for k in make_encoder().state_dict())
    assert f"missing ({n_block_keys})" in msg and "more)" in msg


def test_predictor_mismatch_names_mask_tokens():
    sd = make_predictor(num_mask_tokens=10).state_dict()
    msg = error_of(load_state_strict, make_predictor(num_mask_tokens=4), sd, "predictor")
    assert "unexpected (6)" in msg and "mask_tokens.9" in msg


def test_large_checkpoint_into_tiny_model_names_the_size():
    with torch.device("meta"):
        large = VisionTransformer(embed_dim=1024, depth=24, num_heads=16)
    sd = large.state_dict()
    msg = error_of(load_state_strict, make_encoder(), sd, "target_encoder")
    assert "'large'" in msg and "embed_dim 1024" in msg and "depth 24" in msg
    assert "missing" not in msg  # tiny's 2 blocks exist in the large one: only extra + mis-shaped keys
    assert "unexpected (" in msg and "shape mismatch (" in msg


def test_describe_encoder_state():
    with torch.device("meta"):
        tiny = VisionTransformer(embed_dim=192, depth=12, num_heads=3)
    facts = describe_encoder_state({f"module.backbone.{k}": v for k, v in tiny.state_dict().items()})
    assert facts["matching_sizes"] == ["tiny"]
    assert (facts["embed_dim"], facts["depth"], facts["mlp_hidden"]) == (192, 12, 768)
    assert (facts["patch_size"], facts["tubelet_size"], facts["in_chans"], facts["pos_embed"]) == (16, 2, 3, "rope")
    enc = make_encoder("sincos")
    facts = describe_encoder_state(enc.state_dict() | {"pos_embed": enc.pos_embed})
    assert facts["depth"] == 2 and facts["matching_sizes"] == [] and facts["pos_embed"] == "sincos"
    with pytest.raises(CheckpointError, match="patch_embed"):
        describe_encoder_state(make_predictor().state_dict())


def test_select_state_lists_available_parts():
    ckpt = {"encoder": make_encoder().state_dict(), "epoch": 1}
    msg = error_of(select_state, ckpt, "predictor")
    assert "'predictor'" in msg and "['encoder']" in msg
    assert "holds no tensors" in error_of(select_state, {"epoch": 1, "lr": 0.1}, "encoder")
    assert "unrecognised" in error_of(select_state, {"foo.weight": torch.zeros(1)}, "encoder")
    with pytest.raises(ValueError, match="part must be one of"):
        select_state(ckpt, "decoder")


# ============================================================================= 5. safety
EXECUTED: list[str] = []


class PickledThing:
    """A custom class: a weights-only load must refuse it."""

    def __init__(self):
        self.value = 1


def _side_effect():
    EXECUTED.append("ran")
    return {}


class Exploit:
    """Unpickling this runs ``_side_effect``: proof that nothing pickled is executed."""

    def __reduce__(self):
        return (_side_effect, ())


@pytest.mark.parametrize("payload", [PickledThing, Exploit])
def test_pickled_objects_are_refused(tmp_path, payload):
    path = tmp_path / "evil.pt"
    torch.save({"encoder": make_encoder().state_dict(), "extra": payload()}, path)
    EXECUTED.clear()
    msg = error_of(read_checkpoint, path)
    assert "weights-only" in msg and str(path) in msg
    assert EXECUTED == []
    assert EXECUTED == [] and "weights-only" in error_of(load_part, path, make_encoder(), "encoder")


def test_missing_path_and_empty_directory(tmp_path):
    assert "no such checkpoint file" in error_of(read_checkpoint, tmp_path / "nope.pt")
    (tmp_path / "empty").mkdir()
    msg = error_of(read_checkpoint, tmp_path / "empty")
    assert "model.safetensors" in msg and "pytorch_model.bin" in msg
    assert "no such checkpoint file" in error_of(load_part, tmp_path / "nope.pt", make_encoder())


def test_truncated_torch_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_native(path, {"encoder": make_encoder()})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert str(path) in error_of(read_checkpoint, path)
    path.write_bytes(b"not a checkpoint at all")
    assert str(path) in error_of(read_checkpoint, path)


def test_truncated_safetensors_file(tmp_path):
    save_hf(tmp_path / "hf", make_encoder(), make_predictor(), FRAMES, CROP)
    weights = tmp_path / "hf" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert "model.safetensors" in error_of(read_checkpoint, tmp_path / "hf")
    weights.write_bytes(b"\x00" * 3)
    assert "model.safetensors" in error_of(load_part, tmp_path / "hf", make_encoder(), "encoder")


def test_non_dict_checkpoint(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    assert "expected a dict" in error_of(read_checkpoint, tmp_path / "tensor.pt")


# ============================================================================= 6. prefixes and layouts
def test_strip_prefixes():
    t1, t2, t3, t4 = (torch.zeros(1) for _ in range(4))
    out = strip_prefixes({
        "module.backbone.blocks.0.norm1.weight": t1,
        "_orig_mod.norm.weight": t2,
        "module._orig_mod.backbone.patch_embed.proj.weight": t3,
        "blocks.1.module.backbone.x": t4,  # only leading prefixes are removed
    })
    assert list(out) == ["blocks.0.norm1.weight", "norm.weight", "patch_embed.proj.weight",
                         "blocks.1.module.backbone.x"]
    assert out["blocks.0.norm1.weight"] is t1 and out["norm.weight"] is t2  # tensors untouched
    assert strip_prefixes({"vjepa2.encoder.layernorm.weight": t1}, ("vjepa2.",)) == {"encoder.layernorm.weight": t1}


def test_detect_layout():
    enc, pred = make_encoder().state_dict(), make_predictor().state_dict()
    hf_sd = native_to_hf(enc, pred)
    assert detect_layout(hf_sd) == "hf"
    assert detect_layout({f"vjepa2.{k}": v for k, v in hf_sd.items()}) == "hf"
    assert detect_layout(enc) == "native"
    assert detect_layout(pred) == "native"
    assert detect_layout({f"module.backbone.{k}": v for k, v in enc.items()}) == "native"
    with pytest.raises(ValueError, match="unrecognised") as info:
        detect_layout({"foo.weight": torch.zeros(1), "bar.bias": torch.zeros(1)})
    assert "foo.weight" in str(info.value)
    with pytest.raises(ValueError):
        detect_layout({})


def test_native_file_records_position_mode_and_a_mismatch_is_refused(tmp_path):
    from vjepa_pipeline.checkpoint.interop import CheckpointError, load_part, save_native
    from vjepa_pipeline.models.vit import VisionTransformer

    rope = VisionTransformer(64, 1, 4, patch_size=8, num_frames=8, img_size=32, pos_embed="rope")
    sincos = VisionTransformer(64, 1, 4, patch_size=8, num_frames=8, img_size=32, pos_embed="sincos")
    path = tmp_path / "rope.pt"
    save_native(path, {"encoder": rope}, config={"model": {"pos_embed": "rope"}})
    load_part(path, VisionTransformer(64, 1, 4, patch_size=8, num_frames=8, img_size=32), "encoder")
    with pytest.raises(CheckpointError, match="model.pos_embed=rope"):
        load_part(path, sincos, "encoder")
