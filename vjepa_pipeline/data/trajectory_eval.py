"""Held-out trajectory windows for offline validation: deterministic, in shard order, no augmentation.

Every sample of the shards gives its windows of ``frames`` frames, ``step`` apart (the training
loader's rule: ``data.target_fps`` or ``data.frame_step``), starting at frame 0 and every
``stride`` frames after (default: windows that do not overlap), up to ``windows_per_sample``.
Frames get the training crop's deterministic view (the whole frame, aspect clamped to
``data.crop_ratio``, resized to ``crop_size``: :func:`~.augment.center_view`); states are taken at
the kept frames and actions combined by the sample's action rule, exactly as in training. Samples
that cannot be used are counted by reason (``skipped``), never silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import LoaderError
from ..shards.decoders import DecodeError, get_decoder
from ..shards.actions import window_actions
from ..shards.format import read_npz
from .augment import center_view
from .batch import TrajectoryBatch
from .sampling import ClipSpec, frame_step_for
from .sources import expand_urls, tar_samples


@dataclass
class EvalWindows:
    """Counts of what the reader used and skipped (filled while iterating)."""

    samples: int = 0
    windows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _windows(num_frames: int, frames: int, step: int, stride: int | None, limit: int) -> list[list[int]]:
    span = (frames - 1) * step + 1
    stride = stride or span
    starts = range(0, num_frames - span + 1, stride)
    return [list(range(s, s + span, step)) for s in list(starts)[:limit]]


def trajectory_windows(path: str, frames: int, crop_size: int, batch_size: int, frame_step: int = 1,
                       target_fps: float | None = None, decoder: str = "decord", stride: int | None = None,
                       windows_per_sample: int = 4, use_extrinsics: bool = False,
                       counts: EvalWindows | None = None,
                       crop_ratio: tuple[float, float] = (0.75, 1.35)) -> Iterator[TrajectoryBatch]:
    """Batches of held-out windows (uint8 frames (B, T, S, S, C), actions (B, T-1, A), states (B, T, S))
    from the trajectory shards at ``path`` (a shard folder, its index.json or a URL pattern)."""
    if frames < 2:
        raise ValueError(f"windows need >= 2 frames, got {frames}")
    counts = counts if counts is not None else EvalWindows()
    urls, _ = expand_urls(path)
    spec = ClipSpec(frames, frame_step, target_fps)
    dec = get_decoder(decoder)
    pending: list[dict] = []
    held: list[dict] = []  # the last full batch, yielded once the next one is complete
    for sample in tar_samples(iter(urls), counts.skip):
        meta = sample["meta"] or {}
        if not isinstance(meta.get("trajectory"), dict) or sample.get("npz") is None:
            raise LoaderError(f"{path} holds video samples ({sample['key']} has no trajectory arrays): give "
                              "trajectory shards")
        try:
            arrays = read_npz(sample["npz"])
        except ValueError:
            counts.skip("bad trajectory arrays")
            continue
        states, n = arrays.get("states"), meta.get("num_frames")
        if states is None or not isinstance(n, int) or len(states) != n:
            counts.skip("bad trajectory arrays")
            continue
        step = frame_step_for(spec, meta.get("fps"))
        windows = _windows(n, frames, step, stride, windows_per_sample)
        if not windows:
            counts.skip("too short for a window")
            continue
        if use_extrinsics and arrays.get("extrinsics") is None:
            counts.skip("no extrinsics")
            continue
        try:
            union = sorted({i for w in windows for i in w})
            decoded = torch.from_numpy(dec.decode(sample["mp4"], union, n))
        except DecodeError as exc:
            counts.skip(f"decode: {exc.reason}")
            continue
        where = {f: j for j, f in enumerate(union)}
        rule = meta["trajectory"].get("action_rule", "sum")
        try:
            made = [{"key": f"{sample['key']}@{idx[0]}", "frames": center_view(decoded[[where[i] for i in idx]],
                                                                                crop_size, crop_ratio),
                     "actions": np.asarray(window_actions(arrays.get("actions"), states, idx, rule), np.float32),
                     "states": np.asarray(states[idx], np.float32),
                     "extrinsics": np.asarray(arrays["extrinsics"][idx], np.float32) if use_extrinsics else None}
                    for idx in windows]
        except (ValueError, IndexError, KeyError):
            counts.skip("bad trajectory arrays")
            continue
        counts.samples += 1
        for item in made:
            pending.append(item)
            counts.windows += 1
            if len(pending) == batch_size:
                if held:
                    yield _batch(held)
                held, pending = pending, []
    # a last batch of one window joins the one before (shuffling actions needs two trajectories)
    if len(pending) == 1 and held:
        held, pending = held + pending, []
    for rest in (held, pending):
        if rest:
            yield _batch(rest)


def _batch(items: list[dict]) -> TrajectoryBatch:
    extr = None
    if items[0]["extrinsics"] is not None:
        extr = torch.from_numpy(np.stack([it["extrinsics"] for it in items]))
    return TrajectoryBatch(torch.stack([it["frames"] for it in items]),
                           torch.from_numpy(np.stack([it["actions"] for it in items])),
                           torch.from_numpy(np.stack([it["states"] for it in items])), extr,
                           [it["key"] for it in items])
