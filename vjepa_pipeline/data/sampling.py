"""Which frame indices make a clip.

Pure index arithmetic: no decoding, no tensors. The loader decodes ``union_indices`` of all
clips drawn from one video in a single call (repeated sampling amortises the decode, which is
most of the per-clip CPU cost; see DESIGN.md section 3).

All randomness comes from the ``random.Random`` passed in, never from global state, so the
stream of clips is reproducible from (seed, rank, worker, sample index).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal, Sequence

__all__ = [
    "ClipSpec",
    "frame_step_for",
    "clip_span",
    "sample_train_clips",
    "sample_eval_clips",
    "union_indices",
]


@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut from a decoded video.

    frames_per_clip: frames in one clip.
    frame_step: stride between consecutive frames (ignored when ``target_fps`` is set and the
        video's fps is known).
    target_fps: if set, ``step = max(1, round_half_up(video_fps / target_fps))`` (V-JEPA 2
        samples 16 frames at 4 fps: 30 fps -> step 8, 25 fps -> step 6).
    num_clips: clips drawn per decoded video.
    short_video: a video shorter than one clip span is padded by repeating its last frame
        ("pad") or skipped ("skip"; training sampling then returns None).
    """

    frames_per_clip: int = 16
    frame_step: int = 4
    target_fps: float | None = None
    num_clips: int = 1
    short_video: Literal["pad", "skip"] = "pad"

    def __post_init__(self) -> None:
        if int(self.frames_per_clip) != self.frames_per_clip or self.frames_per_clip < 1:
            raise ValueError(f"frames_per_clip must be a positive integer, got {self.frames_per_clip!r}")
        if int(self.frame_step) != self.frame_step or self.frame_step < 1:
            raise ValueError(f"frame_step must be a positive integer, got {self.frame_step!r}")
        if self.target_fps is not None and not (self.target_fps > 0 and math.isfinite(self.target_fps)):
            raise ValueError(f"target_fps must be a positive number or None, got {self.target_fps!r}")
        if int(self.num_clips) != self.num_clips or self.num_clips < 1:
            raise ValueError(f"num_clips must be a positive integer, got {self.num_clips!r}")
        if self.short_video not in ("pad", "skip"):
            raise ValueError(f"short_video must be 'pad' or 'skip', got {self.short_video!r}")


def frame_step_for(spec: ClipSpec, video_fps: float | None) -> int:
    """The stride between clip frames for a video at ``video_fps``.

    With ``spec.target_fps`` set and a known, positive ``video_fps``:
    ``max(1, round(video_fps / target_fps))``, rounding halves up (7.5 -> 8, 6.5 -> 7; Python's
    ``round`` would give 6 for the latter). Otherwise ``spec.frame_step``.
    """
    if spec.target_fps is None or video_fps is None or not (video_fps > 0 and math.isfinite(video_fps)):
        return int(spec.frame_step)
    return max(1, int(math.floor(video_fps / spec.target_fps + 0.5)))


def clip_span(spec: ClipSpec, step: int) -> int:
    """Frames covered by one clip from its first to its last index, inclusive."""
    return (spec.frames_per_clip - 1) * step + 1


def _clip(start: int, step: int, spec: ClipSpec, num_frames: int) -> list[int]:
    last = num_frames - 1
    return [min(start + k * step, last) for k in range(spec.frames_per_clip)]


def _check_num_frames(num_frames: int) -> None:
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")


def sample_train_clips(
    num_frames: int, video_fps: float | None, spec: ClipSpec, rng: random.Random
) -> list[list[int]] | None:
    """``spec.num_clips`` independent clips, each with a uniformly random start such that the
    clip fits in the video.

    Video shorter than one clip span: ``None`` when ``spec.short_video == "skip"``; with "pad",
    every clip starts at 0 and indices past the end are clamped to the last frame.
    Images (``num_frames == 1``) are static clips ``[0] * frames_per_clip`` (never skipped).
    Draws exactly one ``rng.randint`` per clip when the video is long enough, none otherwise.
    """
    _check_num_frames(num_frames)
    if num_frames == 1:
        return [[0] * spec.frames_per_clip for _ in range(spec.num_clips)]
    step = frame_step_for(spec, video_fps)
    max_start = num_frames - clip_span(spec, step)
    if max_start < 0:
        if spec.short_video == "skip":
            return None
        return [_clip(0, step, spec, num_frames) for _ in range(spec.num_clips)]
    return [_clip(rng.randint(0, max_start), step, spec, num_frames) for _ in range(spec.num_clips)]


def sample_eval_clips(
    num_frames: int, video_fps: float | None, spec: ClipSpec, num_segments: int
) -> list[list[int]]:
    """Deterministic: ``num_segments`` clips whose starts are evenly spaced over the valid start
    range ``[0, num_frames - span]``, both ends included (start_i = max_start * i // (n - 1));
    one segment gives the centred clip (start = max_start // 2). Short videos are always padded
    (``spec.short_video`` does not apply to evaluation); images give static clips.
    ``spec.num_clips`` is ignored.
    """
    _check_num_frames(num_frames)
    if int(num_segments) != num_segments or num_segments < 1:
        raise ValueError(f"num_segments must be a positive integer, got {num_segments!r}")
    if num_frames == 1:
        return [[0] * spec.frames_per_clip for _ in range(num_segments)]
    step = frame_step_for(spec, video_fps)
    max_start = max(0, num_frames - clip_span(spec, step))
    if num_segments == 1:
        starts = [max_start // 2]
    else:
        starts = [max_start * i // (num_segments - 1) for i in range(num_segments)]
    return [_clip(s, step, spec, num_frames) for s in starts]


def union_indices(clips: Sequence[Sequence[int]]) -> tuple[list[int], list[list[int]]]:
    """Sorted unique frame indices of all clips, and for each clip the positions of its frames in
    that list, so one decode call serves every clip of a video:
    ``frames = decode(unique); clip_k = frames[positions[k]]``.
    """
    unique = sorted({int(i) for clip in clips for i in clip})
    where = {idx: pos for pos, idx in enumerate(unique)}
    return unique, [[where[int(i)] for i in clip] for clip in clips]
