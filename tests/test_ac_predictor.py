"""The V-JEPA 2-AC action-conditioned predictor (models/ac_predictor.py) and its official checkpoint
layout (checkpoint/ac_layout.py). Tiny CPU models.

Numerical parity with the official ``VisionTransformerPredictorAC`` was checked by hand against the
facebookresearch/vjepa2 source (max abs diff ~1e-7 on random weights); it is not re-run here, as
the official code is not a dependency."""

from __future__ import annotations

import pytest
import torch

from vjepa_pipeline.checkpoint.ac_layout import (ACPredictorShape, ac_predictor_from_official,
                                                 ac_predictor_to_official, describe_ac_predictor,
                                                 load_official_ac_predictor)
from vjepa_pipeline.errors import CheckpointError
from vjepa_pipeline.models.ac_predictor import ActionConditionedPredictor, block_causal_mask
from vjepa_pipeline.models.positions import RotaryTables, rope_positions

ENC = 24  # encoder width
GRID = (2, 3)  # patches per frame: 32x48 px images, 16 px patches


def tiny(**kw) -> ActionConditionedPredictor:
    torch.manual_seed(kw.pop("seed", 0))
    args = dict(embed_dim=ENC, predictor_embed_dim=36, depth=2, num_heads=2, action_dim=4,
                img_size=(16 * GRID[0], 16 * GRID[1]), patch_size=16)
    args.update(kw)
    return ActionConditionedPredictor(**args).eval()


def inputs(model, b=2, t=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    n = model.patches_per_frame
    x = torch.randn(b, t * n, model.embed_dim, generator=g)
    a = torch.randn(b, t, model.action_dim, generator=g)
    s = torch.randn(b, t, model.state_dim, generator=g)
    e = torch.randn(b, t, model.extrinsics_dim, generator=g) if model.use_extrinsics else None
    return x, a, s, e


def frame(y, model, t):
    n = model.patches_per_frame
    return y[:, t * n:(t + 1) * n]


# ---- (a) block causality --------------------------------------------------------------------
@pytest.mark.parametrize("use_extrinsics", [False, True])
def test_later_frames_do_not_reach_earlier_predictions(use_extrinsics):
    model = tiny(use_extrinsics=use_extrinsics)
    x, a, s, e = inputs(model, t=4)
    n = model.patches_per_frame
    with torch.no_grad():
        y = model(x, a, s, e)
        for t in range(3):  # perturb everything of frame t+1 (and later): frames <= t keep their predictions
            x2, a2, s2 = x.clone(), a.clone(), s.clone()
            x2[:, (t + 1) * n:] += 3.0
            a2[:, t + 1:] += 3.0
            s2[:, t + 1:] -= 3.0
            e2 = None
            if e is not None:
                e2 = e.clone()
                e2[:, t + 1:] += 3.0
            y2 = model(x2, a2, s2, e2)
            torch.testing.assert_close(y2[:, :(t + 1) * n], y[:, :(t + 1) * n], rtol=0, atol=1e-6)
            assert (y2[:, (t + 1) * n:] - y[:, (t + 1) * n:]).abs().max() > 1e-3


@pytest.mark.parametrize("which", ["actions", "states", "extrinsics"])
def test_a_frames_conditioning_changes_that_frames_prediction(which):
    model = tiny(use_extrinsics=True)
    x, a, s, e = inputs(model, t=3)
    cond = {"actions": a, "states": s, "extrinsics": e}
    with torch.no_grad():
        y = model(x, a, s, e)
        changed = {k: v.clone() for k, v in cond.items()}
        changed[which][:, 1] += 1.0
        y2 = model(x, **changed)
    torch.testing.assert_close(frame(y2, model, 0), frame(y, model, 0), rtol=0, atol=1e-6)
    assert (frame(y2, model, 1) - frame(y, model, 1)).abs().max() > 1e-3
    assert (frame(y2, model, 2) - frame(y, model, 2)).abs().max() > 1e-3


def test_block_causal_mask_is_cached_per_length_and_has_the_official_pattern():
    mask = block_causal_mask(3, 2)
    want = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0],
                         [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask, want)
    model = tiny()
    m3, _ = model.frame_layout(3, torch.device("cpu"), torch.float32)
    assert model.frame_layout(3, torch.device("cpu"), torch.float32)[0] is m3
    assert m3.shape == (3 * (2 + 6),) * 2
    assert model.frame_layout(2, torch.device("cpu"), torch.float32)[0].shape == (2 * 8,) * 2


def test_conditioning_tokens_rotate_by_their_frame_only():
    model = tiny(predictor_embed_dim=48, num_heads=2)  # head dim 24: 3 axes x 8 dims
    _, rope = model.frame_layout(2, torch.device("cpu"), torch.float32)
    cos, sin = rope.cos[0], rope.sin[0]  # (N, 24)
    per_frame = 2 + 6
    for t in range(2):
        for slot in (0, 1):  # action, state
            i = t * per_frame + slot
            assert torch.all(cos[i, 8:] == 1) and torch.all(sin[i, 8:] == 0)  # rows / columns: unrotated
            assert (sin[i, :8] != 0).any() == (t > 0)  # frames: rotated by t
    # patch tokens: (frame, row, column) of the grid, columns scaled by rows / columns as officially
    q = torch.randn(1, 2, 2 * per_frame, 24)
    patches = torch.cat([torch.arange(2, 8), torch.arange(10, 16)])
    frames, rows, cols = rope_positions(torch.arange(12), (2, *GRID))
    grid_rope = RotaryTables.from_positions([frames, rows, cols * (GRID[0] / GRID[1])], 24, torch.float32)
    torch.testing.assert_close(rope.apply(q)[:, :, patches], grid_rope.apply(q[:, :, patches]), rtol=0, atol=0)
    square = tiny(predictor_embed_dim=48, num_heads=2, img_size=32)  # 2x2 grid: plain grid positions
    _, rope = square.frame_layout(2, torch.device("cpu"), torch.float32)
    q, patches = q[:, :, :12], torch.cat([torch.arange(2, 6), torch.arange(8, 12)])
    grid_rope = RotaryTables(torch.arange(8), (2, 2, 2), 24, torch.float32)
    torch.testing.assert_close(rope.apply(q)[:, :, patches], grid_rope.apply(q[:, :, patches]), rtol=0, atol=0)


def test_rotary_tables_from_positions_match_the_grid_constructor():
    ids = torch.tensor([0, 5, 7, 23])
    grid = (2, 3, 4)
    a = RotaryTables(ids, grid, 18, torch.float32)
    b = RotaryTables.from_positions(rope_positions(ids, grid), 18, torch.float32)
    assert torch.equal(a.cos, b.cos) and torch.equal(a.sin, b.sin)


# ---- (b) shapes -----------------------------------------------------------------------------
@pytest.mark.parametrize("t", [1, 2, 5])
@pytest.mark.parametrize("action_dim,state_dim", [(1, 1), (4, 2), (7, 7)])
def test_output_shapes(t, action_dim, state_dim):
    model = tiny(action_dim=action_dim, state_dim=state_dim)
    x, a, s, e = inputs(model, b=2, t=t)
    with torch.no_grad():
        y = model(x, a, s, e)
        y4 = model(x.view(2, t, model.patches_per_frame, ENC), a, s)
    assert y.shape == x.shape == (2, t * 6, ENC)
    assert y4.shape == (2, t, 6, ENC)
    torch.testing.assert_close(y4.flatten(1, 2), y, rtol=0, atol=0)


def test_wrong_inputs_are_refused_with_the_expected_shape():
    model = tiny(action_dim=4)
    x, a, s, _ = inputs(model, t=2)
    with pytest.raises(ValueError, match=r"actions must have shape \(B=2, T=2, action_dim=4\)"):
        model(x, a[..., :3], s)
    with pytest.raises(ValueError, match="states must have shape"):
        model(x, a, s[:, :1])
    with pytest.raises(ValueError, match="not a positive multiple"):
        model(x[:, :-1], a, s)
    with pytest.raises(ValueError, match="without use_extrinsics"):
        model(x, a, s, torch.zeros(2, 2, 3))
    with pytest.raises(ValueError, match="pass extrinsics"):
        tiny(use_extrinsics=True)(x, a, s)


def test_no_rope_and_activation_checkpointing_run_and_backprop():
    model = tiny(use_rope=False, activation_checkpointing=True).train()
    x, a, s, _ = inputs(model, t=2)
    model(x, a, s).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


# ---- (c) official layout ----------------------------------------------------------------------
def official_state(model) -> dict:
    """What app/vjepa_droid saves for ``model``: the DDP state dict under 'predictor'."""
    return {"predictor": ac_predictor_to_official(model.state_dict()), "epoch": 1, "opt": {}}


@pytest.mark.parametrize("use_extrinsics", [False, True])
def test_round_trip_through_the_official_layout_is_exact(use_extrinsics):
    model = tiny(use_extrinsics=use_extrinsics)
    ours = model.state_dict()
    official = ac_predictor_to_official(ours)
    assert all(k.startswith("module.") for k in official)
    assert "module.extrinsics_encoder.weight" in official  # the official class always has it
    assert official["module.extrinsics_encoder.weight"].shape == (36, 3)
    back = ac_predictor_from_official({"predictor": official, "epoch": 0}, use_extrinsics=use_extrinsics)
    assert back.keys() == ours.keys()
    assert all(torch.equal(back[k], ours[k]) for k in ours)
    if use_extrinsics:  # official -> ours -> official is exact too
        again = ac_predictor_to_official(back)
        assert again.keys() == official.keys() and all(torch.equal(again[k], official[k]) for k in official)


def test_loading_official_weights_reproduces_the_model():
    src, dst = tiny(seed=0), tiny(seed=5)
    x, a, s, _ = inputs(src)
    load_official_ac_predictor(dst, official_state(src))
    with torch.no_grad():
        assert torch.equal(dst(x, a, s), src(x, a, s))


def test_dimensions_are_read_from_the_weights():
    model = tiny(action_dim=5, use_extrinsics=True, depth=3, mlp_ratio=2.0)
    shape = describe_ac_predictor(ac_predictor_to_official(model.state_dict(), prefix="module.backbone."))
    assert shape == ACPredictorShape(embed_dim=ENC, predictor_embed_dim=36, depth=3, mlp_hidden=72, action_dim=5,
                                     state_dim=5, extrinsics_dim=4, qkv_bias=True)
    assert shape.mlp_ratio == 2.0


def test_a_wrong_action_dimension_is_a_one_line_error_naming_it():
    ckpt = official_state(tiny(action_dim=7))
    with pytest.raises(CheckpointError) as err:
        load_official_ac_predictor(tiny(action_dim=4), ckpt)
    message = str(err.value)
    assert "\n" not in message
    assert "action_dim: checkpoint 7, model 4" in message


def test_unknown_missing_and_unexportable_keys_are_named():
    official = ac_predictor_to_official(tiny().state_dict())
    with pytest.raises(CheckpointError, match=r"unknown keys: mask_tokens\.0 .*masked V-JEPA predictor"):
        ac_predictor_from_official({**official, "module.mask_tokens.0": torch.zeros(1, 1, 36)})
    with pytest.raises(CheckpointError, match="SwiGLU"):
        ac_predictor_from_official({**official, "module.predictor_blocks.0.mlp.fc3.weight": torch.zeros(1)})
    partial = {k: v for k, v in official.items() if k != "module.predictor_blocks.1.attn.proj.bias"}
    with pytest.raises(CheckpointError, match=r"1 missing keys: predictor_blocks\.1\.attn\.proj\.bias"):
        ac_predictor_from_official(partial)
    bad = dict(official, **{"module.predictor_blocks.1.mlp.fc2.weight": torch.zeros(36, 5)})
    with pytest.raises(CheckpointError, match=r"predictor_blocks\.1\.mlp\.fc2 has shape"):
        ac_predictor_from_official(bad)
    with pytest.raises(CheckpointError, match="state_dim 2 != action_dim 4"):
        ac_predictor_to_official(tiny(state_dim=2).state_dict())
    with pytest.raises(CheckpointError, match="looks like our layout"):
        ac_predictor_from_official(tiny().state_dict())


def test_the_masked_predictor_loader_points_an_ac_checkpoint_here():
    from vjepa_pipeline.checkpoint.interop import load_state_strict
    from vjepa_pipeline.models.predictor import Predictor

    official = ac_predictor_to_official(tiny().state_dict())
    with pytest.raises(CheckpointError, match="load_official_ac_predictor"):
        load_state_strict(Predictor(ENC, 36, depth=2, num_heads=2), official, what="predictor")


def test_outputs_match_the_official_class_on_its_own_weights():
    """tests/data/official_ac_predictor_tiny.pt holds two tiny official ``VisionTransformerPredictorAC``
    models (facebookresearch/vjepa2 at c2963a47, random N(0, 0.1) weights, saved as app/vjepa_droid saves
    them), their inputs and the official outputs: loaded through the official layout, ours gives the
    same numbers (measured 3e-8; without RoPE the difference would be 3e-5)."""
    from pathlib import Path

    from vjepa_pipeline.checkpoint.ac_layout import load_official_ac_predictor

    cases = torch.load(Path(__file__).parent / "data" / "official_ac_predictor_tiny.pt", weights_only=True)
    assert set(cases) == {"square_extrinsics", "nonsquare"}
    for name, case in cases.items():
        img_h, img_w, extr, heads, dim, enc_dim, depth, action_dim = case["config"].tolist()
        ours = ActionConditionedPredictor(enc_dim, dim, depth, heads, action_dim=action_dim, use_extrinsics=bool(extr),
                                          img_size=(img_h, img_w), patch_size=16).eval()
        load_official_ac_predictor(ours, {"predictor": case["predictor"], "epoch": 1})
        with torch.no_grad():
            got = ours(case["tokens"], case["actions"], case["states"], case["extrinsics"] if extr else None)
        assert torch.allclose(got, case["output"], atol=1e-6, rtol=0), (name, (got - case["output"]).abs().max())
