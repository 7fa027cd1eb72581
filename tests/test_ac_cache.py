"""The action-conditioned predictor's key / value cache (ActionConditionedPredictor.step) and the cached
planning rollout: the same predictions as the full frame-causal forward / the official rollout, with
fewer frames through the network."""

from __future__ import annotations

import pytest
import torch

from vjepa_pipeline.models.ac_predictor import ActionConditionedPredictor
from vjepa_pipeline.models.vit import VisionTransformer
from vjepa_pipeline.objectives.action_conditioned import rollout
from vjepa_pipeline.planning import LatentWorldModel


def predictor(use_rope: bool = True, extrinsics: bool = False, grid: tuple[int, int] = (32, 32)):
    torch.manual_seed(0)
    return ActionConditionedPredictor(24, 32, depth=2, num_heads=2, action_dim=3, state_dim=4, img_size=grid,
                                      patch_size=16, use_rope=use_rope, use_extrinsics=extrinsics).eval()


@pytest.mark.parametrize("use_rope,extrinsics,grid", [(True, False, (32, 32)), (False, False, (32, 32)),
                                                      (True, True, (32, 48))])
def test_step_equals_the_full_forward_frame_by_frame(use_rope, extrinsics, grid):
    pred = predictor(use_rope, extrinsics, grid)
    b, t, n = 3, 4, pred.patches_per_frame
    g = torch.Generator().manual_seed(1)
    z, a, s = torch.randn(b, t, n, 24, generator=g), torch.randn(b, t, 3, generator=g), torch.randn(b, t, 4, generator=g)
    e = torch.randn(b, t, 2, generator=g) if extrinsics else None
    with torch.no_grad():
        full = pred(z, a, s, e) if extrinsics else pred(z, a, s)
    cache = None
    for i in range(t):
        out, cache = pred.step(z[:, i], a[:, i], s[:, i], cache, None if e is None else e[:, i])
        assert torch.allclose(out, full[:, i], atol=1e-5), i
    assert cache.frames == t and cache.keys[0].shape[2] == t * (pred.cond_tokens + n)


def test_step_checks_its_inputs():
    pred = predictor()
    with pytest.raises(ValueError, match="tokens must be"):
        pred.step(torch.zeros(2, 3, 24), torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="actions must"):
        pred.step(torch.zeros(2, 4, 24), torch.zeros(2, 2), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="extrinsics"):
        pred.step(torch.zeros(2, 4, 24), torch.zeros(2, 3), torch.zeros(2, 4), extrinsics=torch.zeros(2, 2))


@pytest.mark.parametrize("normalize", [True, False])
def test_cached_planning_rollout_equals_the_official_rollout(normalize):
    torch.manual_seed(0)
    enc = VisionTransformer(img_size=32, patch_size=16, num_frames=2, tubelet_size=2, embed_dim=24, depth=1,
                            num_heads=2).eval()
    model = LatentWorldModel(enc, predictor(), crop_size=32, normalize_reps=normalize, state_update="add")
    g = torch.Generator().manual_seed(2)
    z0, s0 = torch.randn(1, 4, 24, generator=g), torch.randn(1, 4, generator=g)
    acts = torch.randn(6, 5, 3, generator=g)
    cached = model.rollout(z0, s0, acts)
    model.use_cache = False
    plain = model.rollout(z0, s0, acts)
    assert cached.shape == plain.shape == (6, 5, 4, 24)
    assert torch.allclose(cached, plain, atol=1e-5)
    with torch.no_grad():  # and the uncached path is the training rollout
        ref = rollout(model.predictor, z0.expand(6, -1, -1), acts, s0.expand(6, -1).unsqueeze(1), 5,
                      normalize_reps=normalize, state_update=model.state_update)
    assert torch.equal(plain, ref)


def test_a_cached_prefix_can_be_extended_several_ways():
    """step() returns a new cache: one real frame fed once (B = 1) serves every candidate continuation."""
    pred = predictor()
    g = torch.Generator().manual_seed(3)
    n = pred.patches_per_frame
    z0, a0, s0 = torch.randn(1, n, 24, generator=g), torch.randn(1, 3, generator=g), torch.randn(1, 4, generator=g)
    out0, prefix = pred.step(z0, a0, s0)
    z1 = torch.randn(5, n, 24, generator=g)
    a1, s1 = torch.randn(5, 3, generator=g), torch.randn(5, 4, generator=g)
    first, _ = pred.step(z1, a1, s1, prefix)
    assert prefix.frames == 1 and prefix.keys[0].shape[0] == 1  # untouched by the extension
    second, _ = pred.step(z1[:2], a1[:2], s1[:2], prefix)
    assert torch.allclose(first[:2], second, atol=1e-6)
    with torch.no_grad():
        full = pred(torch.stack([z0.expand(5, -1, -1), z1], 1), torch.stack([a0.expand(5, -1), a1], 1),
                    torch.stack([s0.expand(5, -1), s1], 1))
    assert torch.allclose(full[:, 1], first, atol=1e-5) and torch.allclose(full[:1, 0], out0, atol=1e-5)
