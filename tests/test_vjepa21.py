"""V-JEPA 2.1 encoders (official ``app/vjepa_2_1``): the official key layout, a reference of the
official forward written here from its code's facts, strict loading into our VisionTransformer
(also through the eval loader and as initialisation), and the refusals with their fixes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vjepa_pipeline.checkpoint.interop import CheckpointError, load_part, load_state_strict, save_native
from vjepa_pipeline.checkpoint.layouts import vjepa21_model_options
from vjepa_pipeline.config import load_config
from vjepa_pipeline.config.sizes import VIT_SIZES
from vjepa_pipeline.eval.encoders import load_encoder
from vjepa_pipeline.models.build import build_encoder
from vjepa_pipeline.models.positions import RotaryTables
from vjepa_pipeline.models.vit import HIERARCHICAL_LAYERS, VisionTransformer, hierarchical_layers

DIM, DEPTH, HEADS = 64, 12, 2  # head dim 32: 3 x 10 rotated dims + 2 unrotated; depth 12 = official table
PATCH, TUBELET = 16, 2
V21 = dict(rope_layout="interleave", rope_rescale_grid=16, image_tokenizer=True, modality_embedding=True,
           hierarchical_norms=True)


# ============================================================================ reference (official math)
def ref_rotate(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Official 2.1 ``rotate_queries_or_keys``: frequencies duplicated with repeat_interleave, each
    adjacent pair (x[2k], x[2k+1]) turned by angle pos * f_k."""
    d = x.shape[-1]
    omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float32) / (d / 2.0))
    freq = pos.unsqueeze(-1) * omega
    sin, cos = freq.sin().repeat_interleave(2, dim=-1), freq.cos().repeat_interleave(2, dim=-1)
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos + rotated * sin


class RefAttention(nn.Module):
    """Official 2.1 ``RoPEAttention`` (use_rope, interpolate_rope, no registers / cls), with an
    explicit softmax instead of SDPA."""

    def __init__(self, dim: int, heads: int, patch: int, interpolate: bool):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.axis = int(2 * ((self.head_dim // 3) // 2))
        self.interpolate = interpolate
        self.pretrained_grid = {14: 252 // 14, 16: 256 // 16}[patch]

    def forward(self, x, ids, t, h, w):
        b, n, c = x.shape
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        frame = ids // (h * w)
        row = (ids - frame * h * w) // w
        col = ids - frame * h * w - row * w
        frame, row, col = 1.0 * frame, 1.0 * row, 1.0 * col
        if self.interpolate:
            row = row * (self.pretrained_grid - 1) / (h - 1)
            col = col * (self.pretrained_grid - 1) / (w - 1)
        if ids.ndim == 2:  # masks (B, K): one position set per sample, shared by the heads
            frame, row, col = (p.unsqueeze(1) for p in (frame, row, col))
        a = self.axis
        parts_q, parts_k = [], []
        for i, pos in enumerate((frame, row, col)):
            parts_q.append(ref_rotate(q[..., i * a:(i + 1) * a], pos))
            parts_k.append(ref_rotate(k[..., i * a:(i + 1) * a], pos))
        q = torch.cat(parts_q + [q[..., 3 * a:]], dim=-1)
        k = torch.cat(parts_k + [k[..., 3 * a:]], dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.head_dim ** -0.5).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class RefBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, patch, interpolate):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RefAttention(dim, heads, patch, interpolate)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(dim, int(dim * mlp_ratio)), nn.Linear(int(dim * mlp_ratio), dim)

    def forward(self, x, ids, t, h, w):
        x = x + self.attn(self.norm1(x), ids, t, h, w)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class RefEncoder(nn.Module):
    """Official 2.1 ``VisionTransformer`` (use_rope, img_temporal_dim_size=1, modality_embedding,
    interpolate_rope), parameter names as in the official module tree."""

    def __init__(self, dim=DIM, depth=DEPTH, heads=HEADS, mlp_ratio=4.0, patch=PATCH, tubelet=TUBELET,
                 interpolate=True):
        super().__init__()
        self.patch, self.tubelet = patch, tubelet
        self.patch_embed, self.patch_embed_img = nn.Module(), nn.Module()
        self.patch_embed.proj = nn.Conv3d(3, dim, (tubelet, patch, patch), (tubelet, patch, patch))
        self.patch_embed_img.proj = nn.Conv3d(3, dim, (1, patch, patch), (1, patch, patch))
        self.blocks = nn.ModuleList([RefBlock(dim, heads, mlp_ratio, patch, interpolate) for _ in range(depth)])
        self.hierarchical_layers = {12: [2, 5, 8, 11], 24: [5, 11, 17, 23], 40: [9, 19, 29, 39],
                                    48: [11, 23, 37, 47]}[depth]
        self.norms_block = nn.ModuleList([nn.LayerNorm(dim, eps=1e-6) for _ in self.hierarchical_layers])
        self.img_mod_embed = nn.Parameter(torch.zeros(1, 1, dim))
        self.video_mod_embed = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x, masks=None, out_layers=None, return_hierarchical=False):
        _, _, t, h, w = x.shape
        image = t == 1  # check_temporal_dim with img_temporal_dim_size=1
        t = t if image else t // self.tubelet
        h, w = h // self.patch, w // self.patch
        if image:
            x = self.patch_embed_img.proj(x).flatten(2).transpose(1, 2) + self.img_mod_embed
        else:
            x = self.patch_embed.proj(x).flatten(2).transpose(1, 2) + self.video_mod_embed
        if masks is not None:
            x = torch.gather(x, 1, masks.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
            ids = masks
        else:
            ids = torch.arange(t * h * w)
        outs, hier = [], []
        for i, blk in enumerate(self.blocks):
            x = blk(x, ids, t, h, w)
            if out_layers is not None and i in out_layers:
                outs.append(self.norms_block[self.hierarchical_layers.index(i)](x))
            if i in self.hierarchical_layers:
                hier.append(self.norms_block[self.hierarchical_layers.index(i)](x))
        if out_layers is not None:
            return outs
        return torch.cat(hier, dim=2) if return_hierarchical else self.norms_block[-1](x)


def official_encoder_keys(dim: int, depth: int, mlp_hidden: int, patch: int = PATCH,
                          tubelet: int = TUBELET) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an official V-JEPA 2.1 encoder (released configuration), from its code."""
    keys = {
        "patch_embed.proj.weight": (dim, 3, tubelet, patch, patch), "patch_embed.proj.bias": (dim,),
        "patch_embed_img.proj.weight": (dim, 3, 1, patch, patch), "patch_embed_img.proj.bias": (dim,),
        "img_mod_embed": (1, 1, dim), "video_mod_embed": (1, 1, dim),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        keys.update({p + "norm1.weight": (dim,), p + "norm1.bias": (dim,), p + "attn.qkv.weight": (3 * dim, dim),
                     p + "attn.qkv.bias": (3 * dim,), p + "attn.proj.weight": (dim, dim), p + "attn.proj.bias": (dim,),
                     p + "norm2.weight": (dim,), p + "norm2.bias": (dim,), p + "mlp.fc1.weight": (mlp_hidden, dim),
                     p + "mlp.fc1.bias": (mlp_hidden,), p + "mlp.fc2.weight": (dim, mlp_hidden),
                     p + "mlp.fc2.bias": (dim,)})
    for j in range(4):
        keys.update({f"norms_block.{j}.weight": (dim,), f"norms_block.{j}.bias": (dim,)})
    return keys


@torch.no_grad()
def random_reference(seed: int = 0, **kw) -> RefEncoder:
    torch.manual_seed(seed)
    ref = RefEncoder(**kw).eval()
    for p in ref.parameters():  # every tensor (norms, biases, modality embeddings) matters
        p.copy_(torch.randn_like(p) * (0.05 if p.ndim > 1 and p.shape[0] != 1 else 0.5))
    return ref


def official_file(ref: RefEncoder, key: str = "target_encoder") -> dict:
    """An official training / hub file: DDP-prefixed encoder dicts (+ a predictor entry)."""
    sd = {f"module.backbone.{k}": v.clone() for k, v in ref.state_dict().items()}
    return {key: sd, "predictor": {"module.backbone.predictor_embed.weight": torch.zeros(4, DIM)}, "epoch": 3}


def ours_21(**kw) -> VisionTransformer:
    return VisionTransformer(DIM, DEPTH, HEADS, patch_size=PATCH, tubelet_size=TUBELET, num_frames=4,
                             img_size=64, **{**V21, **kw}).eval()


@pytest.fixture(scope="module")
def ref():
    return random_reference()


@pytest.fixture(scope="module")
def loaded(ref):
    return load_part(official_file(ref), ours_21())


# ============================================================================ layout
def test_reference_has_the_official_keys_and_shapes(ref):
    got = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert got == official_encoder_keys(DIM, DEPTH, 4 * DIM)
    assert not any(k.startswith("norm.") or k == "pos_embed" for k in got)  # no final norm, RoPE only


def test_our_21_encoder_has_exactly_the_official_keys():
    ours = {k: tuple(v.shape) for k, v in ours_21().state_dict().items()}
    assert ours == official_encoder_keys(DIM, DEPTH, 4 * DIM)


def test_model_options_are_read_from_the_weights(ref):
    sd = official_file(ref)["target_encoder"]
    assert vjepa21_model_options(sd) == V21
    without_images = {k: v for k, v in sd.items() if "img" not in k and "mod_embed" not in k}
    assert vjepa21_model_options(without_images) == {**V21, "image_tokenizer": False, "modality_embedding": False}
    assert vjepa21_model_options(VisionTransformer(DIM, 2, HEADS).state_dict()) is None


def test_official_hierarchical_table_and_released_sizes():
    assert HIERARCHICAL_LAYERS == {12: (2, 5, 8, 11), 24: (5, 11, 17, 23), 40: (9, 19, 29, 39), 48: (11, 23, 37, 47)}
    assert hierarchical_layers(8) == (1, 3, 5, 7) and hierarchical_layers(2) == (0, 1)  # custom depths (ours)
    g = VIT_SIZES["gigantic"]  # ViT-G "2B": vit_gigantic_xformers
    assert (g.embed_dim, g.depth, g.num_heads, int(g.embed_dim * g.mlp_ratio)) == (1664, 48, 26, 8192)
    with torch.device("meta"):
        enc = VisionTransformer(g.embed_dim, g.depth, g.num_heads, g.mlp_ratio, **V21)
    assert 1840 < sum(p.numel() for p in enc.parameters()) / 1e6 < 1850
    assert enc.hierarchical_layers == (11, 23, 37, 47)


# ============================================================================ outputs match the official math
CLIPS = {"cube": (4, 64, 64), "non_square": (4, 48, 64), "long": (6, 32, 48)}


@pytest.mark.parametrize("shape", CLIPS.values(), ids=CLIPS.keys())
def test_video_output_matches_official(ref, loaded, shape):
    x = torch.randn(2, 3, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref(x), atol=1e-5, rtol=1e-5)


def test_masked_tokens_match_official(ref, loaded):
    x = torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(3)
    keep = torch.stack([torch.randperm(32, generator=gen)[:13] for _ in range(2)])  # unsorted, per sample
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, keep), ref(x, masks=keep), atol=1e-5, rtol=1e-5)


def test_image_tokenizer_matches_official(ref, loaded):
    img = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = ref(img.unsqueeze(2))  # the official image path: (B, C, 1, H, W)
        torch.testing.assert_close(loaded(img.unsqueeze(2)), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded(img), want, atol=1e-5, rtol=1e-5)  # (B, C, H, W) too


def test_hierarchical_outputs_match_official(ref, loaded):
    x = torch.randn(1, 3, 4, 48, 48, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = loaded(x, return_layers=loaded.hierarchical_layers)
        for got, want in zip(ours, ref(x, out_layers=[2, 5, 8, 11])):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(torch.cat(ours, dim=2), ref(x, return_hierarchical=True), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"block 3 has no output norm.*\[2, 5, 8, 11\]"):
        loaded(x, return_layers=[3])


@pytest.mark.parametrize("change", [dict(rope_layout="repeat"), dict(rope_rescale_grid=None)],
                         ids=["repeat_layout", "no_interpolation"])
def test_each_21_position_detail_matters(ref, change):
    """Guard against a reference that cannot tell: the V-JEPA 2 RoPE layout, or no interpolate_rope,
    gives other outputs with the same weights."""
    enc = ours_21(**change)
    enc.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 4, 48, 48, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert (enc(x) - ref(x)).abs().max() > 1e-3


def test_interleave_layout_is_the_textbook_pair_rotation():
    ids, grid, head_dim = torch.tensor([0, 5, 17, 30]), (2, 4, 4), 18  # axis dim 6: 3 pairs per axis
    x = torch.randn(1, 1, 4, head_dim)
    got = RotaryTables(ids, grid, head_dim, torch.float32, layout="interleave").apply(x)
    pos = [ids // 16, (ids % 16) // 4, ids % 4]
    want = []
    for a in range(3):
        z = torch.view_as_complex(x[..., 6 * a:6 * a + 6].reshape(1, 1, 4, 3, 2).contiguous())
        freqs = 1.0 / 10000 ** (torch.arange(3) / 3.0)
        angle = pos[a].float()[:, None] * freqs
        want.append(torch.view_as_real(z * torch.polar(torch.ones_like(angle), angle)).flatten(-2))
    torch.testing.assert_close(got, torch.cat(want, dim=-1), atol=1e-5, rtol=1e-5)
    repeat = RotaryTables(ids, grid, head_dim, torch.float32, layout="repeat").apply(x)
    assert (repeat - got).abs().max() > 1e-3


def test_single_row_grid_stays_finite_under_interpolation(loaded):
    """interpolate_rope divides by (rows - 1); the official code gives NaN for one row, we keep row 0."""
    with torch.no_grad():
        assert torch.isfinite(loaded(torch.randn(1, 3, 2, 16, 64))).all()


# ============================================================================ loading paths
def test_eval_loader_detects_21_and_matches_official(tmp_path, ref):
    path = tmp_path / "vjepa2_1_tiny.pt"
    torch.save(official_file(ref), path)
    overrides = [f"model.embed_dim={DIM}", f"model.depth={DEPTH}", f"model.num_heads={HEADS}", "data.crop_size=64",
                 "data.num_frames=4"]
    enc = load_encoder(path, overrides)
    assert enc.kind == "official" and enc.encoder.hierarchical_layers == (2, 5, 8, 11)
    x = torch.randn(1, 3, 4, 64, 48, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(enc.encoder(x), ref(x), atol=1e-5, rtol=1e-5)
    # An explicit override wins over the detected option, and then the RoPE check names the fix.
    with pytest.raises(CheckpointError, match="repeat_interleave.*model.rope_layout=interleave"):
        load_encoder(path, overrides + ["model.rope_layout=repeat"])


def test_distilled_files_keep_the_encoder_under_ema_encoder(tmp_path, ref):
    """The hub loads ViT-B / ViT-L 2.1 (distilled from ViT-G) with checkpoint_key='ema_encoder'."""
    path = tmp_path / "vjepa2_1_vitb_dist.pt"
    torch.save(official_file(ref, key="ema_encoder"), path)
    enc = load_part(path, ours_21())
    x = torch.randn(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        torch.testing.assert_close(enc(x), ref(x), atol=1e-5, rtol=1e-5)
    overrides = [f"model.embed_dim={DIM}", f"model.depth={DEPTH}", f"model.num_heads={HEADS}"]
    assert load_encoder(path, overrides).encoder.hierarchical_layers is not None


def test_21_into_a_v2_model_lists_the_keys_and_names_the_fix(ref):
    sd = official_file(ref)["target_encoder"]
    with pytest.raises(CheckpointError) as info:
        load_state_strict(VisionTransformer(DIM, DEPTH, HEADS), sd, what="target_encoder")
    msg = str(info.value)
    assert "missing (2): norm.bias, norm.weight" in msg
    assert "unexpected (12):" in msg and "img_mod_embed" in msg and "norms_block.0.bias" in msg
    assert "patch_embed_img.proj.weight" in msg and "video_mod_embed" in msg
    assert ("V-JEPA 2.1 (norms_block, no final norm): describe the model with model.rope_layout=interleave "
            "model.rope_rescale_grid=16 model.image_tokenizer=true model.modality_embedding=true "
            "model.hierarchical_norms=true") in msg


def test_v2_into_a_21_model_is_refused_with_the_fix():
    with pytest.raises(CheckpointError) as info:
        load_state_strict(ours_21(), VisionTransformer(DIM, DEPTH, HEADS).state_dict(), what="encoder")
    msg = str(info.value)
    assert "missing (12):" in msg and "unexpected (2): norm.bias, norm.weight" in msg
    assert "model.rope_layout=repeat model.rope_rescale_grid=null model.image_tokenizer=false" in msg


def test_21_weights_into_a_21_shape_with_v2_rope_are_refused(ref):
    with pytest.raises(CheckpointError, match=r"model.rope_layout=repeat;.*set model.rope_layout=interleave"):
        load_part(official_file(ref), ours_21(rope_layout="repeat"))
    with pytest.raises(CheckpointError, match=r"model.rope_rescale_grid=None;.*model.rope_rescale_grid=16"):
        load_part(official_file(ref), ours_21(rope_rescale_grid=None))


def test_unofficial_21_layouts_are_refused(ref):
    sd = official_file(ref)["target_encoder"]
    three = {k: v for k, v in sd.items() if not k.endswith("norms_block.3.weight") and not k.endswith("norms_block.3.bias")}
    with pytest.raises(CheckpointError, match=r"norms_block entries \['0', '1', '2'\]"):
        load_part({"target_encoder": three}, ours_21())
    both = {**sd, "module.backbone.norm.weight": torch.ones(DIM), "module.backbone.norm.bias": torch.zeros(DIM)}
    with pytest.raises(CheckpointError, match="both norms_block"):
        load_part({"target_encoder": both}, ours_21())


def test_21_encoder_as_initialisation_from_the_config(ref, tmp_path):
    """A pretraining config describing 2.1 builds the module the official weights load into; the
    loaded encoder trains (masked forward + backward) and our own checkpoint of it reloads."""
    cfg = load_config(None, [f"model.embed_dim={DIM}", f"model.depth={DEPTH}", f"model.num_heads={HEADS}",
                             "model.rope_layout=interleave", "model.rope_rescale_grid=16",
                             "model.image_tokenizer=true", "model.modality_embedding=true",
                             "model.hierarchical_norms=true", "data.crop_size=64", "data.num_frames=4"])
    enc = load_part(official_file(ref), build_encoder(cfg.model, 4, 64)).train()
    x = torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(9))
    keep = torch.stack([torch.randperm(32, generator=torch.Generator().manual_seed(s))[:20] for s in range(2)])
    enc(x, keep).pow(2).mean().backward()
    grads = {n for n, p in enc.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {"patch_embed.proj.weight", "video_mod_embed", "blocks.0.attn.qkv.weight", "norms_block.3.weight"} <= grads
    path = tmp_path / "ours.pt"
    save_native(path, {"target_encoder": enc}, config={"model": {"rope_layout": "interleave"}})
    again = load_part(path, build_encoder(cfg.model, 4, 64)).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), ref(x), atol=1e-5, rtol=1e-5)
    assert math.isclose(sum(p.numel() for p in again.parameters()), sum(p.numel() for p in ref.parameters()))


def test_hf_export_refuses_a_21_encoder_and_config_checks_the_rope_grid(tmp_path):
    from vjepa_pipeline.checkpoint.interop import save_hf
    from vjepa_pipeline.config import ConfigError, load_config
    from vjepa_pipeline.errors import CheckpointError
    from vjepa_pipeline.models.vit import VisionTransformer

    enc = VisionTransformer(embed_dim=96, depth=4, num_heads=2, patch_size=16, num_frames=4, img_size=32,
                            rope_layout="interleave", rope_rescale_grid=16, hierarchical_norms=True,
                            image_tokenizer=True, modality_embedding=True)
    with pytest.raises(CheckpointError, match="norms_block.*image tokenizer.*modality.*'interleave'"):
        save_hf(tmp_path / "hf", enc, None, 4, 32)
    assert not (tmp_path / "hf" / "model.safetensors").exists()
    with pytest.raises(ConfigError, match="model.rope_rescale_grid: must be >= 2"):
        load_config(None, ["model.rope_rescale_grid=1"])


def test_pretraining_from_a_21_encoder_has_no_unused_trainable_parameters(tmp_path):
    """DDP (find_unused_parameters off) needs a gradient for every trainable parameter."""
    from vjepa_pipeline.config import load_config
    from vjepa_pipeline.data.synthetic import SyntheticClips, synthetic_batch
    from vjepa_pipeline.objectives import build_objective

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs/pretrain/debug.yaml",
                      ["model.rope_layout=interleave", "model.rope_rescale_grid=16", "model.image_tokenizer=true",
                       "model.modality_embedding=true", "model.hierarchical_norms=true", "model.depth=4"])
    obj = build_objective(cfg)
    out = obj.step(synthetic_batch(SyntheticClips(cfg.data.num_frames, cfg.data.crop_size), 0, 2))
    out.loss.backward()
    trainable = {f"{n}.{k}": p for n, net in obj.trainable_networks().items() for k, p in net.named_parameters()
                 if p.requires_grad}
    assert [k for k, p in trainable.items() if p.grad is None] == []
    frozen = [k for n, net in obj.trainable_networks().items() for k, p in net.named_parameters()
              if not p.requires_grad and n == "encoder"]
    assert frozen and all(k.startswith(("patch_embed_img", "img_mod_embed", "norms_block.")) for k in frozen)
    assert "video_mod_embed" in dict(obj.trainable_networks()["encoder"].named_parameters())
