"""Evaluation suites: one YAML per set of downstream protocols (datasets, views, probes, grids),
typed and validated like the training config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config.loader import build_dataclass, read_yaml_file
from ..config.messages import describe
from ..config.recipes import not_found, resolve_recipe
from ..errors import ConfigError

# Classes beyond this are a typo, not a dataset (ImageNet-21k has 21,841): the confusion matrix
# alone holds num_classes**2 counts.
MAX_CLASSES = 100_000

ProbeKind = Literal["attentive", "attentive_v2", "linear", "knn"]


@dataclass
class ProbeConfig:
    kind: ProbeKind = "attentive"  # attentive = V-JEPA 1 (one cross-attention block + learned query);
    # attentive_v2 = V-JEPA 2 (self_attn_blocks self-attention blocks, then the cross-attention query)
    self_attn_blocks: int = 3  # attentive_v2 only
    num_heads: int = 16  # attention heads of the probe (must divide the feature width)
    epochs: int = 20
    batch_size: int = 32
    lrs: list[float] = field(default_factory=lambda: [1e-4, 5e-4, 1e-3])  # grid, trained in one pass
    weight_decays: list[float] = field(default_factory=lambda: [0.01, 0.1])
    warmup_epochs: float = 0.0
    knn_k: int = 20  # knn only
    knn_temperature: float = 0.07  # knn only
    selection: Literal["holdout", "best_on_val"] = "holdout"  # how the reported head is chosen
    holdout_fraction: float = 0.1  # part of the training split held out for selection
    segment_mode: Literal["average", "attend"] = "attend"  # temporal segments: average logits or attend jointly


# The ProbeConfig keys a probe kind does not read (recorded protocols leave them out, so a result
# never shows a setting that played no part); "self_attn_blocks" is recorded as 0 where no
# self-attention block ran.
_HEAD_TRAINING = ("epochs", "batch_size", "lrs", "weight_decays", "warmup_epochs", "selection", "holdout_fraction")
UNUSED_PROBE_KEYS = {
    "attentive": ("knn_k", "knn_temperature"),
    "attentive_v2": ("knn_k", "knn_temperature"),
    "linear": ("num_heads", "knn_k", "knn_temperature"),
    "knn": ("num_heads", *_HEAD_TRAINING),
}


def probe_protocol(probe: ProbeConfig) -> dict:
    """The probe settings that ran, for results and probe files: ``probe`` (the kind) and the
    :class:`ProbeConfig` fields that kind reads."""
    out = {"probe": probe.kind, **{k: v for k, v in dataclasses.asdict(probe).items()
                                   if k != "kind" and k not in UNUSED_PROBE_KEYS[probe.kind]}}
    if probe.kind != "attentive_v2":
        out["self_attn_blocks"] = 0
    return out


@dataclass
class DatasetConfig:
    name: str = "dataset"
    source: Literal["shards", "csv"] = "shards"
    train: str = ""  # shard folder / URL pattern or CSV file
    val: str = ""
    num_classes: int | None = None  # None = read from the shards' label map
    num_frames: int = 16
    frame_step: int = 4
    target_fps: float | None = None
    crop_size: int = 224
    segments: int = 1  # temporal segments per video at test time (K400: 8, SSv2: 2)
    views: int = 1  # spatial crops per segment at test time (3 in the official protocols)
    train_segments: int = 1  # segments per video when extracting training features
    train_views: int = 1
    single_frame: bool = False  # control: every clip is its middle frame repeated (no motion at all)
    low_shot: list[int] = field(default_factory=list)  # k samples per class; [] = full data only
    low_shot_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    probe: ProbeConfig = field(default_factory=ProbeConfig)


@dataclass
class SuiteConfig:
    name: str = "suite"
    layers: list[int] = field(default_factory=lambda: [-1])  # encoder blocks whose outputs are concatenated
    decoder: Literal["decord", "torchcodec", "pyav"] = "decord"
    num_workers: int = 2
    feature_batch_size: int = 8  # clips per encoder forward during feature extraction
    seed: int = 0
    datasets: list[DatasetConfig] = field(default_factory=list)


def suite_problems(s: SuiteConfig) -> list[str]:
    out = []
    if not s.datasets:
        out.append("datasets: at least one dataset is required")
    names = [d.name for d in s.datasets]
    if len(set(names)) != len(names):
        out.append(f"datasets: names must be unique, got {names}")
    for i, d in enumerate(s.datasets):
        p = f"datasets[{i}]"
        if not d.train or not d.val:
            out.append(f"{p}: both train and val are required")
        for key in ("num_frames", "frame_step", "crop_size", "segments", "views", "train_segments", "train_views"):
            if getattr(d, key) < 1:
                out.append(f"{p}.{key}: must be >= 1")
        pr = d.probe
        if pr.epochs < 1 or pr.batch_size < 1:
            out.append(f"{p}.probe: epochs and batch_size must be >= 1")
        if not pr.lrs or not pr.weight_decays:
            out.append(f"{p}.probe: lrs and weight_decays need at least one value each")
        if not 0 < pr.holdout_fraction < 1:
            out.append(f"{p}.probe.holdout_fraction: must be in (0, 1)")
        if d.num_classes is not None and not 1 <= d.num_classes <= MAX_CLASSES:
            out.append(f"{p}.num_classes: must be in [1, {MAX_CLASSES}], got {d.num_classes}")
        if any(k < 1 for k in d.low_shot):
            out.append(f"{p}.low_shot: k must be >= 1")
    return out


def load_suite(path: str | Path, overrides: dict | None = None) -> SuiteConfig:
    """A suite from a YAML file or a packaged suite name (``k400``, ``eval/k400.yaml``)."""
    found = resolve_recipe(path, "eval")
    if found is None:
        raise ConfigError([f"suite file {path} does not exist; {not_found(path, 'eval')}"])
    path = found
    data = read_yaml_file(path, "suite file") or {}  # bounded: no alias bomb, device or non-UTF-8 file
    if not isinstance(data, dict):
        raise ConfigError([f"expected a mapping of suite keys, got {describe(data)}"], str(path))
    data.update(overrides or {})
    suite = build_dataclass(data, SuiteConfig, source=str(path))
    base = path.parent
    for d in suite.datasets:  # relative data paths are relative to the suite file
        for key in ("train", "val"):
            value = getattr(d, key)
            if value and "://" not in value and not value.startswith("pipe:") and not Path(value).is_absolute():
                setattr(d, key, str((base / value).resolve()) if (base / value).exists() else value)
    problems = suite_problems(suite)
    if problems:
        raise ConfigError(problems, str(path))
    return suite
