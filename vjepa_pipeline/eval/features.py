"""Frozen-encoder features of every video of a labelled split, in deterministic order.

Features are cached in memory as (M, S, V, N, D) float16: M videos, S temporal segments, V spatial
views, N tokens, D width. Probes (and the whole lr x wd grid) then train on the cache without
running the encoder again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..config import load_config
from ..data.eval_stream import EvalVideos
from ..models.inputs import normalize_clips
from ..shards.format import INDEX_NAME, read_index
from .encoders import FrozenEncoder


@dataclass
class SplitFeatures:
    feats: torch.Tensor  # (M, S, V, N, D) float16
    labels: torch.Tensor  # (M,)
    keys: list[str]
    failed: int
    seconds: float

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


def label_names(path: str, num_classes: int | None) -> list[str]:
    """Class names from a shard index's label map (ids -> names); numbers otherwise."""
    if (Path(path) / INDEX_NAME).exists():
        label_map = read_index(path)[1].get("label_map") or {}
        if label_map:
            names = {v: k for k, v in label_map.items()}
            return [names.get(i, str(i)) for i in range(max(names) + 1)]
    return [str(i) for i in range(num_classes or 0)]


@torch.no_grad()
def extract_split(encoder: FrozenEncoder, data_cfg, path: str, segments: int, views: int, batch_clips: int,
                  device: str, progress=None, single_frame: bool = False) -> SplitFeatures:
    import time

    t0 = time.perf_counter()
    ds = EvalVideos(data_cfg, path, segments, views, single_frame=single_frame)
    loader = DataLoader(ds, batch_size=None, num_workers=data_cfg.num_workers)
    items, failed = [], 0
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
        pending.append((item["key"], item["label"], item["views"]))
        if sum(v.shape[0] * v.shape[1] for _, _, v in pending) >= batch_clips:
            flush()
        if progress is not None:
            progress(1)
    if pending:
        flush()
    items.sort(key=lambda x: x[0])  # workers interleave: order by key for determinism
    if not items:
        return SplitFeatures(torch.empty(0), torch.empty(0, dtype=torch.long), [], failed, time.perf_counter() - t0)
    return SplitFeatures(torch.stack([x[2] for x in items]), torch.tensor([x[1] for x in items], dtype=torch.long),
                         [x[0] for x in items], failed, time.perf_counter() - t0)
