"""Config tree: YAML loading, dotted overrides, type checks, cross-field validation, dumping."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vjepa_pipeline.config import (
    Config,
    ConfigError,
    MaskBlockConfig,
    ModelConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
)

REPO = Path(__file__).resolve().parents[1]
DEBUG = REPO / "configs" / "pretrain" / "debug.yaml"
TINY_CPU = REPO / "configs" / "pretrain" / "tiny_cpu.yaml"


def _error(path, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- defaults and recipes


def test_defaults_validate_and_match_official_recipe():
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.model.resolved_size() == (192, 12, 3, 4.0)
    assert [(m.num_blocks, m.spatial_scale) for m in cfg.masks] == [
        (8, (0.15, 0.15)),
        (2, (0.7, 0.7)),
    ]
    assert cfg.optim.ema_momentum == (0.998, 1.0)
    assert cfg.model.predictor.num_mask_tokens == 10


def test_resolved_size_applies_overrides():
    cfg = apply_overrides(Config(), ["model.size=giant", "model.depth=2"])
    assert cfg.model.resolved_size() == (1408, 2, 16, 48 / 11)


def test_debug_recipe_loads():
    cfg = load_config(DEBUG)
    assert cfg.name == "debug"
    assert cfg.model.resolved_size() == (64, 2, 4, 4.0)
    assert (cfg.model.patch_size, cfg.data.crop_size, cfg.data.num_frames) == (8, 32, 8)
    assert cfg.data.source == "synthetic" and cfg.data.batch_size == 4
    assert cfg.train.max_steps == 20 and cfg.train.precision == "32"
    assert cfg.optim.warmup_steps == 2 and cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.logging.wandb_mode == "disabled"


def test_tiny_cpu_recipe_inherits_debug():
    cfg = load_config(TINY_CPU)
    assert cfg.name == "tiny_cpu"
    assert cfg.model.patch_size == 8  # from debug.yaml
    assert cfg.model.predictor.num_heads == 4  # from debug.yaml, merged under predictor
    assert cfg.model.predictor.embed_dim == 48  # child wins
    assert cfg.data.crop_size == 64 and cfg.train.max_steps == 200


# ----------------------------------------------------------------------------- overrides


def test_overrides_of_each_type():
    cfg = load_config(
        DEBUG,
        [
            "optim.lr=3e-4",  # float written without a dot: PyYAML reads it as a string
            "optim.final_lr=0",  # int accepted for float
            "train.max_steps=50",  # int
            "model.pos_embed=sincos",  # Literal
            "optim.betas=[0.9,0.95]",  # tuple
            "optim.clip_grad=null",  # None
            "model.predictor.depth=3",  # nested dataclass
            "masks.0.num_blocks=6",  # list index
            "masks[1].aspect_ratio=[0.5,2]",  # bracket index
            "train.compile=true",  # bool
            "train.precision=32",  # int text accepted for a string Literal
            "launch.partition=gpu",  # str | None
        ],
    )
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.final_lr == 0.0 and isinstance(cfg.optim.final_lr, float)
    assert cfg.train.max_steps == 50
    assert cfg.model.pos_embed == "sincos"
    assert cfg.optim.betas == (0.9, 0.95)
    assert cfg.optim.clip_grad is None
    assert cfg.model.predictor.depth == 3
    assert cfg.masks[0].num_blocks == 6 and cfg.masks[0].spatial_scale == (0.15, 0.15)
    assert cfg.masks[1].aspect_ratio == (0.5, 2.0)
    assert cfg.train.compile is True
    assert cfg.train.precision == "32"
    assert cfg.launch.partition == "gpu"


def test_override_mapping_merges_and_list_append():
    cfg = load_config(
        DEBUG, ["model.predictor={depth: 2}", "masks.2={num_blocks: 1, spatial_scale: [0.3, 0.3]}"]
    )
    assert cfg.model.predictor.depth == 2 and cfg.model.predictor.embed_dim == 32
    assert cfg.masks[2] == MaskBlockConfig(num_blocks=1, spatial_scale=(0.3, 0.3))


def test_apply_overrides_returns_new_config():
    base = load_config(DEBUG)
    cfg = apply_overrides(base, ["train.max_steps=5", "optim.warmup_steps=1"])
    assert cfg.train.max_steps == 5 and base.train.max_steps == 20


def test_unknown_override_key_suggests_nested_path():
    msg = _error(DEBUG, ["optim.lrr=1e-3"])
    assert "optim.lrr: unknown key; did you mean 'optim.lr'?" in msg
    msg = _error(DEBUG, ["model.predictor.dept=3"])
    assert "model.predictor.dept: unknown key; did you mean 'model.predictor.depth'?" in msg


def test_unknown_key_in_wrong_section_points_to_right_one():
    assert "model.lr: unknown key; did you mean 'optim.lr'?" in _error(None, ["model.lr=1"])
    assert "did you mean 'data.batch_size'?" in _error(None, ["train.batch_size=2"])


def test_unknown_key_without_match_lists_valid_keys():
    msg = _error(None, ["optim.zzzz=1"])
    assert "optim.zzzz: unknown key; valid keys here:" in msg
    assert "lr, start_lr" in msg


def test_malformed_overrides():
    msg = _error(DEBUG, ["foo"])
    assert "bad override 'foo'" in msg and "optim.lr=3e-4" in msg  # shows the right form
    assert "bad override 'optim..lr=1'" in _error(DEBUG, ["optim..lr=1"])
    assert "optim.betas: value '[0.9,'" in _error(DEBUG, ["optim.betas=[0.9,"])


def test_override_path_errors():
    assert "masks[5]: index out of range, masks has 2 items" in _error(
        DEBUG, ["masks.5.num_blocks=3"]
    )
    assert "masks: expected a list index" in _error(DEBUG, ["masks.first.num_blocks=3"])
    assert "optim.lr: is a float value, not a section" in _error(DEBUG, ["optim.lr.x=3"])


def test_several_bad_override_keys_reported_together():
    msg = _error(DEBUG, ["optim.lrr=1", "data.crop=3"])
    assert "2 config problems" in msg
    assert "optim.lrr" in msg and "did you mean 'data.crop_size'?" in msg


# ----------------------------------------------------------------------------- type errors


def test_wrong_types_name_the_key(tmp_path):
    assert "model.depth: expected int, got 'abc' (str)" in _error(DEBUG, ["model.depth=abc"])
    msg = _error(DEBUG, ["model.depth=true", "optim.lr=true", "train.compile=1", "model.depth=2.5"])
    assert "model.depth: expected int, got 2.5 (float)" in msg  # the later override wins
    assert "optim.lr: expected float, got True (bool)" in msg
    assert "train.compile: expected bool (true/false), got 1 (int)" in msg
    assert "name: expected str" in _error(DEBUG, ["name=3"])
    assert "data.num_frames: expected int, got null" in _error(DEBUG, ["data.num_frames=null"])


def test_bad_literal_suggests_choice():
    msg = _error(DEBUG, ["model.pos_embed=rop"])
    assert (
        "model.pos_embed: must be one of 'sincos', 'rope'; got 'rop' (did you mean 'rope'?)" in msg
    )
    assert "train.strategy: must be one of" in _error(DEBUG, ["train.strategy=dpp"])


def test_tuple_length_checked():
    msg = _error(DEBUG, ["masks.1.spatial_scale=[0.1,0.2,0.3]"])
    assert "masks[1].spatial_scale: expected 2 values, got 3" in msg
    assert "optim.betas: expected a list of 2 floats, got 0.9 (float)" in _error(
        DEBUG, ["optim.betas=0.9"]
    )
    assert "optim.betas[1]: expected float, got 'x' (str)" in _error(
        DEBUG, ["optim.betas=[0.9, x]"]
    )


def test_unknown_key_in_yaml_file(tmp_path):
    path = _write(
        tmp_path,
        "bad.yaml",
        "model:\n  predictor:\n    num_head: 4\n"
        "masks:\n  - num_blocks: 2\n    spatial_scal: [0.1, 0.1]\n",
    )
    msg = _error(path)
    assert str(path) in msg
    assert "model.predictor.num_head: unknown key; did you mean 'model.predictor.num_heads'?" in msg
    assert "masks[0].spatial_scal: unknown key; did you mean 'masks[0].spatial_scale'?" in msg


def test_yaml_float_quirk_in_file(tmp_path):
    path = _write(tmp_path, "lr.yaml", "optim:\n  lr: 3e-4\n  final_lr: 1\n")
    cfg = load_config(path)
    assert cfg.optim.lr == 3e-4 and cfg.optim.final_lr == 1.0


def test_empty_section_means_defaults(tmp_path):
    path = _write(tmp_path, "empty.yaml", "launch:\ntrain:\n  max_steps: 7\n")
    cfg = load_config(path)
    assert cfg.launch == Config().launch and cfg.train.max_steps == 7


# ----------------------------------------------------------------------------- cross-field checks


def test_crop_and_frames_divisibility_reported_together():
    msg = _error(DEBUG, ["data.crop_size=36", "data.num_frames=7"])
    assert "2 config problems" in msg
    assert "data.crop_size: 36 is not divisible by model.patch_size 8" in msg
    assert "data.num_frames: 7 is not divisible by model.tubelet_size 2" in msg


def test_heads_and_rope_head_dim():
    assert "model.num_heads: embed_dim 64 is not divisible by num_heads 12" in _error(
        DEBUG, ["model.num_heads=12"]
    )
    msg = _error(DEBUG, ["model.num_heads=16", "model.predictor.num_heads=8"])
    assert "model.num_heads: head dim 4" in msg and "model.predictor.num_heads: head dim 4" in msg
    # sincos has no head-dim constraint
    cfg = load_config(
        DEBUG, ["model.num_heads=16", "model.predictor.num_heads=8", "model.pos_embed=sincos"]
    )
    assert cfg.model.pos_embed == "sincos"
    # divisibility uses the named size when not overridden
    assert "embed_dim 192 (size 'tiny') is not divisible by num_heads 5" in _error(
        None, ["model.num_heads=5"]
    )


def test_unknown_size_suggests():
    msg = _error(DEBUG, ["model.size=larg"])
    assert "model.size: unknown ViT size 'larg'; did you mean 'large'?" in msg
    with pytest.raises(ConfigError, match="model.size"):
        ModelConfig(size="nope").resolved_size()


def test_scales_and_pairs():
    msg = _error(
        DEBUG,
        [
            "masks.0.spatial_scale=[0.2,1.5]",
            "masks.1.temporal_scale=[0.9,0.5]",
            "optim.ema_momentum=[1.0,0.99]",
        ],
    )
    assert "masks[0].spatial_scale: values must be in [0, 1]" in msg
    assert "masks[1].temporal_scale: low must be <= high" in msg
    assert "optim.ema_momentum: low must be <= high" in msg
    assert "masks[0].aspect_ratio: values must be > 0" in _error(
        DEBUG, ["masks.0.aspect_ratio=[0,1]"]
    )


def test_mask_count_and_tokens():
    assert "masks: at least one mask generator is required" in _error(DEBUG, ["masks=[]"])
    msg = _error(DEBUG, ["model.predictor.num_mask_tokens=1"])
    assert "masks: 2 mask generators but model.predictor.num_mask_tokens is 1" in msg


def test_data_path_steps_and_positivity():
    assert "data.path: required when data.source is 'shards'" in _error(
        DEBUG, ["data.source=shards"]
    )
    assert load_config(DEBUG, ["data.source=csv", "data.path=x.csv"]).data.path == "x.csv"
    msg = _error(DEBUG, ["optim.warmup_steps=15", "optim.cooldown_steps=10"])
    assert (
        "optim.warmup_steps: warmup_steps + cooldown_steps = 25 exceeds train.max_steps = 20" in msg
    )
    msg = _error(
        DEBUG, ["data.batch_size=0", "train.max_steps=-1", "optim.warmup_steps=0", "model.depth=0"]
    )
    assert "data.batch_size: must be > 0" in msg
    assert "train.max_steps: must be > 0" in msg
    assert "model.depth: must be > 0" in msg
    assert "name: 'a/b' must be a plain directory name" in _error(DEBUG, ["name=a/b"])


def test_config_from_dict_partial_and_invalid():
    cfg = config_from_dict({"train": {"max_steps": 3}})
    assert cfg.train.max_steps == 3 and cfg.model == Config().model
    with pytest.raises(ConfigError, match=r"data.crop_size: 100 is not divisible"):
        config_from_dict({"data": {"crop_size": 100}})
    assert config_from_dict({"data": {"crop_size": 100}}, validate=False).data.crop_size == 100


# ----------------------------------------------------------------------------- files


def test_defaults_inheritance(tmp_path):
    _write(
        tmp_path,
        "base.yaml",
        "name: base\nmodel:\n  size: small\n  predictor:\n    depth: 4\noptim:\n  lr: 1.0e-4\n",
    )
    sub = tmp_path / "sub"
    sub.mkdir()
    child = _write(
        sub,
        "child.yaml",
        "defaults: ../base.yaml\nname: child\nmodel:\n  predictor:\n    num_heads: 6\n",
    )
    cfg = load_config(child)
    assert cfg.name == "child"  # child wins
    assert cfg.model.size == "small" and cfg.optim.lr == 1e-4  # inherited
    assert cfg.model.predictor.depth == 4 and cfg.model.predictor.num_heads == 6  # merged
    # overrides apply after inheritance
    assert load_config(child, ["model.size=base"]).model.size == "base"


def test_defaults_errors(tmp_path):
    a = _write(tmp_path, "a.yaml", "defaults: b.yaml\n")
    _write(tmp_path, "b.yaml", "defaults: a.yaml\n")
    assert "defaults: inheritance cycle" in _error(a)
    c = _write(tmp_path, "c.yaml", "defaults: missing.yaml\n")
    assert f"config file not found: {tmp_path / 'missing.yaml'}" in _error(c)


def test_dump_reload_identical(tmp_path):
    cfg = load_config(
        DEBUG,
        ["optim.lr=3e-4", "model.mlp_ratio=2.5", "optim.clip_grad=null", "launch.mem_per_gpu=64G"],
    )
    out = dump_config(cfg, tmp_path / "run" / "config.yaml")
    assert out.exists() and not list(out.parent.glob("*.tmp"))
    assert load_config(out) == cfg
    data = yaml.safe_load(out.read_text())
    assert data["optim"]["betas"] == [0.9, 0.999]  # tuples as plain lists
    assert data["train"]["precision"] == "32"  # stays a string
    # exotic floats survive too
    giant = apply_overrides(Config(), ["model.size=giant"])
    giant = apply_overrides(giant, [f"model.mlp_ratio={48 / 11!r}"])
    assert load_config(dump_config(giant, tmp_path / "g.yaml")) == giant
    assert load_config(dump_config(Config(), tmp_path / "d.yaml")) == Config()


def test_config_to_dict_is_yaml_safe():
    data = config_to_dict(Config())
    assert isinstance(data["masks"][0]["spatial_scale"], list)
    assert yaml.safe_load(yaml.safe_dump(data)) == data
    assert config_from_dict(data) == Config()


def test_missing_file_and_yaml_syntax_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert f"config file not found: {missing}" in _error(missing)
    bad = _write(tmp_path, "bad.yaml", "model:\n  depth: 2\n  size: [tiny\n")
    msg = _error(bad)
    assert str(bad) in msg and "invalid YAML" in msg and "line " in msg
    scalar = _write(tmp_path, "scalar.yaml", "just a string\n")
    assert "expected a mapping of config sections" in _error(scalar)
