"""Deterministic evaluation views: every video exactly once, as S temporal segments x V spatial
crops, for the frozen-backbone probes."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from .augment import eval_views
from ..shards.decoders import DecodeError, get_decoder
from .sampling import ClipSpec, sample_eval_clips, union_indices
from .sources import expand_urls, file_list_items, file_samples, tar_samples


def multi_view_clips(data: bytes, meta: dict | None, decoder, spec: ClipSpec, crop_size: int, segments: int,
                     views: int, single_frame: bool = False) -> torch.Tensor:
    """uint8 (segments, views, T, S, S, C) for one video; raises DecodeError. ``single_frame``
    replaces every clip by its middle frame repeated (a control that removes all motion)."""
    meta = meta or {}
    num_frames = meta.get("num_frames") or decoder.count_frames(data)
    clips = sample_eval_clips(num_frames, meta.get("fps"), spec, segments)
    frames_idx, positions = union_indices(clips)
    frames = torch.from_numpy(decoder.decode(data, frames_idx, num_frames))
    out = []
    for pos in positions:
        clip = frames[pos]
        if single_frame:
            clip = clip[len(pos) // 2].unsqueeze(0).expand_as(clip)
        out.append(eval_views(clip, crop_size, views))
    return torch.stack(out)


class EvalVideos(IterableDataset):
    """Yields ``{"views": uint8 (S, V, T, S, S, C), "label": int, "key": str}`` for every readable
    video of the source, split disjointly over ranks and workers (no resampling, no shuffling).
    Videos that fail are yielded as ``{"failed": reason, "key": ...}`` so callers count them."""

    def __init__(self, data_cfg, path: str, segments: int = 1, views: int = 1, rank: int = 0, world_size: int = 1,
                 single_frame: bool = False):
        self.cfg, self.segments, self.views, self.single_frame = data_cfg, segments, views, single_frame
        self.rank, self.world_size = rank, world_size
        self.spec = ClipSpec(data_cfg.num_frames, data_cfg.frame_step, data_cfg.target_fps, 1, "pad")
        if data_cfg.source == "csv":
            self.items, self.urls = file_list_items(path), None
        else:
            self.items, self.urls = None, expand_urls(path)[0]

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        failures: list[str] = []
        decoder = get_decoder(self.cfg.decoder)
        if self.items is not None:
            mine = self.items[self.rank::self.world_size][worker::workers]
            samples = file_samples(iter(mine), failures.append)
        else:
            mine = self.urls[self.rank::self.world_size][worker::workers]
            samples = tar_samples(iter(mine), failures.append)
        for sample in samples:
            try:
                views = multi_view_clips(sample["mp4"], sample["meta"], decoder, self.spec, self.cfg.crop_size,
                                         self.segments, self.views, self.single_frame)
            except DecodeError as exc:
                yield {"failed": f"decode: {exc.reason}", "key": sample["key"]}
                continue
            label = -1 if sample["label"] is None else int(sample["label"])
            yield {"views": views, "label": label, "key": sample["key"]}
        for reason in failures:
            yield {"failed": reason, "key": None}
