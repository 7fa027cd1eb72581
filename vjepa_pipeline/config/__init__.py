"""Typed config tree (dataclasses) loaded from YAML recipes with dotted overrides.

cfg = load_config("configs/pretrain/debug.yaml", ["optim.lr=3e-4", "model.pos_embed=sincos"])
dump_config(cfg, run_dir / "config.yaml")   # load_config of that file == cfg
"""

from vjepa_pipeline.config.loader import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    read_run_config,
    read_yaml_file,
)
from vjepa_pipeline.config.schema import (
    Config,
    DataConfig,
    LaunchConfig,
    LoggingConfig,
    MaskBlockConfig,
    ModelConfig,
    OptimConfig,
    PredictorConfig,
    ShardsConfig,
    WorldModelConfig,
    TrainConfig,
)
from vjepa_pipeline.config.validate import config_problems, validate_config
from vjepa_pipeline.errors import ConfigError  # re-exported for convenience (defined in errors.py)

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "LaunchConfig",
    "LoggingConfig",
    "MaskBlockConfig",
    "ModelConfig",
    "OptimConfig",
    "PredictorConfig",
    "ShardsConfig",
    "WorldModelConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_problems",
    "config_to_dict",
    "dump_config",
    "load_config",
    "read_run_config",
    "read_yaml_file",
    "validate_config",
]
