"""The analytic FLOP counter against torch's own counter on a real training step."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from vjepa_pipeline.config import load_config
from vjepa_pipeline.models.build import build_jepa
from vjepa_pipeline.models.flops import ModelDims, config_step_flops, encoder_forward_flops, train_step_flops
from vjepa_pipeline.models.masks import MaskCollator, grid_for, specs_from_config


@pytest.mark.parametrize("pos", ["rope", "sincos"])
def test_analytic_step_flops_equal_torch_flop_counter(pos):
    cfg = load_config("configs/pretrain/debug.yaml", [f"model.pos_embed={pos}", "model.predictor.depth=2"])
    model = build_jepa(cfg)
    grid = grid_for(cfg.data.num_frames, cfg.data.crop_size, cfg.model.patch_size, cfg.model.tubelet_size)
    masks = MaskCollator(specs_from_config(cfg.masks), grid).sample(3, step=0)
    clips = torch.randn(3, 3, cfg.data.num_frames, cfg.data.crop_size, cfg.data.crop_size)
    # The math SDPA backend decomposes attention into matmuls that the counter sees.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(clips, masks).loss.backward()
    sizes = [(c.shape[1], t.shape[1]) for c, t in masks]
    analytic = train_step_flops(ModelDims.from_config(cfg.model), 64, 3, sizes)
    assert analytic["total"] == counter.get_total_flops()
    assert config_step_flops(cfg, batch=3, mask_sizes=sizes)["total"] == analytic["total"]


def test_large_model_forward_flops_are_in_the_published_ballpark():
    cfg = load_config(None, ["model.size=large"])
    fwd = encoder_forward_flops(ModelDims.from_config(cfg.model), 1568, 1)
    # ~2 x 304M params x 1568 tokens for the linear layers plus attention: ~1.2 TFLOP per clip.
    assert 1.1e12 < fwd < 1.3e12
    step = config_step_flops(cfg, batch=8)
    assert step["total"] > step["target_forward"] > 0
    assert step["num_tokens"] == 1568 and len(step["mask_sizes"]) == 2
