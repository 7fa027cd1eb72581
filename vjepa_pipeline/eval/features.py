"""Frozen-encoder features of every video of a labelled split, in deterministic order.

Features are cached in memory as (M, S, V, N, D) float16: M videos, S temporal segments, V spatial
views, N tokens, D width. Probes (and the whole lr x wd grid) then train on the cache without
running the encoder again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..config import load_config
from ..data.eval_stream import EvalVideos
from ..models.inputs import normalize_clips
from ..shards.format import INDEX_NAME, read_index
from .encoders import FrozenEncoder
from .suite import MAX_CLASSES


@dataclass
class SplitFeatures:
    feats: torch.Tensor  # (M, S, V, N, D) float16
    labels: torch.Tensor  # (M,)
    keys: list[str]
    failed: int
    seconds: float
    # (key, label) of the videos whose label lies outside [0, num_classes) (-1: no label); they are
    # not encoded and not in feats / labels / keys. Only filled when extract_split got num_classes.
    bad_labels: list[tuple[str, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)


def eval_data_config(dataset, suite):
    """A validated DataConfig for reading one dataset of a suite."""
    overrides = [f"data.source={dataset.source}", f"data.path={dataset.train}", f"data.num_frames={dataset.num_frames}",
                 f"data.frame_step={dataset.frame_step}", f"data.crop_size={dataset.crop_size}",
                 f"data.decoder={suite.decoder}", f"data.num_workers={suite.num_workers}"]
    if dataset.target_fps:
        overrides.append(f"data.target_fps={dataset.target_fps}")
    # The model section is irrelevant here; patch/tubelet 1 keep any crop and frame count valid.
    return load_config(None, [*overrides, "model.patch_size=1", "model.tubelet_size=1"]).data


def read_label_map(path: str, source: str = "shards") -> dict[str, int] | None:
    """The label map (names -> ids) of a dataset: a shard folder's index.json label map, or the
    labels a file list (``csv``) uses; None when there is none. UsageError when it is unreadable."""
    from ..errors import UsageError
    from ..shards.format import ShardFormatError

    try:
        if source == "csv":
            from ..shards.items import SourceError
            from ..shards.sources import discover

            try:
                label_map = discover(path, seed=0).label_map
            except SourceError as exc:
                raise ShardFormatError(str(exc)) from None
        elif (Path(path) / INDEX_NAME).exists():
            label_map = read_index(path)[1].get("label_map")
        else:
            return None
    except ShardFormatError as exc:
        raise UsageError(str(exc)) from None
    if not label_map:
        return None
    if not isinstance(label_map, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in label_map.items()):
        raise UsageError(f"{path}: the label map is not a mapping of names to non-negative ids")
    return label_map


def video_names(path: str, source: str, keys: list[str]) -> dict[str, str]:
    """Readable names for sample keys: a file list's paths (its keys are hashes); keys otherwise."""
    if source != "csv":
        return {}
    from ..shards.format import ShardFormatError, read_file_list

    try:
        by_key = {i.uid: i.rel for i in read_file_list(path)}
    except ShardFormatError:
        return {}
    return {k: by_key[k] for k in keys if k in by_key}


def dataset_classes(dataset) -> tuple[int, list[str], str]:
    """(num_classes, class names, where the count comes from) of a suite dataset: its
    ``num_classes`` when the suite sets it, else the size of the training shards' label map (ids
    0..N-1). Never the largest label seen: a stray label must not grow the classes (or allocate by
    its value). UsageError, one line, when neither gives a count."""
    from ..errors import UsageError

    label_map = read_label_map(dataset.train, dataset.source)
    by_id = {v: k for k, v in (label_map or {}).items()}
    if dataset.num_classes is not None:
        n, origin = dataset.num_classes, f"num_classes: {dataset.num_classes} in the suite"
    elif label_map:
        n = len(label_map)
        if set(by_id) != set(range(n)):
            raise UsageError(f"[{dataset.name}] the labels of {dataset.train} are {n} ids up to {max(by_id)}, not "
                             f"0..{n - 1}; set num_classes for this dataset in the suite")
        origin = f"{dataset.train} has {n} classes"
    else:
        raise UsageError(f"[{dataset.name}] num_classes: not set in the suite and {dataset.train} has no labels "
                         "(no label map); set num_classes for this dataset in the suite")
    if not 1 <= n <= MAX_CLASSES:
        raise UsageError(f"[{dataset.name}] {n} classes ({origin}): must be in [1, {MAX_CLASSES}]")
    return n, [by_id.get(i, str(i)) for i in range(n)], origin


def label_names(path: str, num_classes: int | None, source: str = "shards") -> list[str]:
    """Class names from a dataset's label map (ids -> names); numbers otherwise."""
    label_map = read_label_map(path, source)
    if label_map and num_classes is None and len(label_map) <= MAX_CLASSES:
        num_classes = len(label_map)
    names = {v: k for k, v in (label_map or {}).items()}
    return [names.get(i, str(i)) for i in range(min(num_classes or 0, MAX_CLASSES))]


def bad_labels_message(name: str, split: str, bad: list[tuple[str, int]], num_classes: int, origin: str,
                       names: dict[str, str] | None = None) -> str:
    """One line naming the videos whose labels lie outside [0, num_classes)."""
    names = names or {}
    shown = ", ".join(f"{names.get(key, key)} ({'no label' if label < 0 else f'label {label}'})"
                      for key, label in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return (f"[{name}] {len(bad)} {split} video{'s' if len(bad) != 1 else ''} with a label outside "
            f"[0, {num_classes}) ({origin}): {shown}{more}; fix the labels or the number of classes")


@torch.no_grad()
def extract_split(encoder: FrozenEncoder, data_cfg, path: str, segments: int, views: int, batch_clips: int,
                  device: str, progress=None, single_frame: bool = False,
                  num_classes: int | None = None) -> SplitFeatures:
    """Features of every readable video of ``path``. With ``num_classes``, videos whose label lies
    outside [0, num_classes) (or that have none) are not encoded but listed in ``bad_labels``."""
    import time

    t0 = time.perf_counter()
    ds = EvalVideos(data_cfg, path, segments, views, single_frame=single_frame)
    loader = DataLoader(ds, batch_size=None, num_workers=data_cfg.num_workers)
    items, failed, bad = [], 0, []
    pending: list[tuple[str, int, torch.Tensor]] = []

    def flush() -> None:
        clips = torch.cat([v.reshape(-1, *v.shape[2:]) for _, _, v in pending])  # (sum S*V, T, H, W, C)
        tokens = encoder(normalize_clips(clips.to(device))).to("cpu", torch.float16)
        start = 0
        for key, label, v in pending:
            n = v.shape[0] * v.shape[1]
            items.append((key, label, tokens[start:start + n].reshape(v.shape[0], v.shape[1], *tokens.shape[1:])))
            start += n
        pending.clear()

    for item in loader:
        if "failed" in item:
            failed += 1
            continue
        if num_classes is not None and not 0 <= item["label"] < num_classes:
            bad.append((item["key"], item["label"]))
            if progress is not None:
                progress(1)
            continue
        pending.append((item["key"], item["label"], item["views"]))
        if sum(v.shape[0] * v.shape[1] for _, _, v in pending) >= batch_clips:
            flush()
        if progress is not None:
            progress(1)
    if pending:
        flush()
    items.sort(key=lambda x: x[0])  # workers interleave: order by key for determinism
    bad.sort(key=lambda x: str(x[0]))
    if not items:
        return SplitFeatures(torch.empty(0), torch.empty(0, dtype=torch.long), [], failed, time.perf_counter() - t0,
                             bad)
    return SplitFeatures(torch.stack([x[2] for x in items]), torch.tensor([x[1] for x in items], dtype=torch.long),
                         [x[0] for x in items], failed, time.perf_counter() - t0, bad)
