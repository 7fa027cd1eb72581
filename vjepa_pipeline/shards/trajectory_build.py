"""`vjepa shards build` for trajectories: one episode -> frame-exact clips + their aligned arrays.

An episode (found by :mod:`.trajectories`) is a video (or a folder of numbered images) with per-frame
actions / states / extrinsics. Its samples are cut in *frames*, never in seconds: sample ``[a, b)``
holds decoded frames ``a .. b-1`` of the source and nothing else (``media.encode_command`` frame-exact
mode: no seek, no resampling, timestamps rewritten to ``index / fps``), and the sample's arrays are the
same rows:

- ``states[a:b]`` and ``extrinsics[a:b]``: one row per kept frame;
- ``actions[a:b-1]``: ``actions[t]`` is the action taken at frame t, leading to frame t + 1, so a
  sample of T frames carries T - 1 actions (the action leaving the last frame belongs to the next clip).

The encoded clip is counted again and must hold exactly ``b - a`` frames, otherwise the episode is
skipped ("frames lost in re-encode"): alignment is never guessed. No frame is dropped or repeated
here; the loader picks frames at ``data.target_fps`` and combines the actions in between by the
episode's action rule (:func:`~.trajectories.window_actions`).

The episode's rate is its recording rate: the ``fps`` of ``episode.json`` / the manifest line when
given (``fps_source`` "episode"; the clip's timestamps are rewritten to it, and the sample's ``fps``
and ``max_clip_seconds`` / ``min_seconds`` cuts use it), else the container's (``fps_source``
"container"). The arrays are fitted to the video first (:func:`~.trajectory_files.check_lengths`: a
frame or two of difference is trimmed and recorded as ``trimmed``); a source without states gets
zero states, one column (``states_recorded`` False); dropped extrinsics are recorded as
``extrinsics_dropped``.

Arrays are stored per sample as ``<key>.npz`` (float64, written deterministically by
:func:`~.format.npz_bytes`: fixed zip times, no compression, no pickles), beside ``<key>.mp4`` and
``<key>.json``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
from pathlib import Path

import numpy as np

from .media import (EncodeSettings, EnvironmentalError, MediaError, encode_readable, ffmpeg_exe, output_geometry,
                    probe)
from .format import npz_bytes
from .trajectories import check_lengths, list_frames, read_episode

ARRAY_NAMES = ("actions", "states", "extrinsics")


def frame_ranges(num_frames: int, fps: float, start_frame: int | None, end_frame: int | None,
                 max_clip_seconds: float | None, min_seconds: float) -> list[tuple[int, int]]:
    """Frame ranges ``[a, b)`` of the samples cut from one episode of ``num_frames`` usable frames
    recorded at ``fps`` (the episode's rate, see the module docstring): the episode's range (whole by
    default) split into pieces of at most ``max_clip_seconds``; pieces shorter than ``min_seconds``
    or than 2 frames are dropped."""
    a = max(0, start_frame or 0)
    b = num_frames if end_frame is None else min(num_frames, end_frame)
    shortest = max(2, math.ceil(min_seconds * fps - 1e-9))
    if b - a < shortest:
        return []
    if max_clip_seconds is None:
        return [(a, b)]
    length = max(2, int(math.floor(max_clip_seconds * fps + 1e-9)))
    pieces = [(s, min(b, s + length)) for s in range(a, b, length)]
    return [(s, e) for s, e in pieces if e - s >= shortest]


def images_to_video(folder: str, dst: Path, fps: float) -> None:
    """Numbered images -> a lossless intermediate video, one frame per image (streamed, never all in
    memory). Images of different sizes or unreadable images are a verdict about the episode."""
    from PIL import Image, UnidentifiedImageError

    paths = list_frames(folder)
    if not paths:
        raise MediaError("no frames", folder)
    try:
        with Image.open(paths[0]) as im:
            size = im.size
    except (OSError, UnidentifiedImageError) as exc:
        raise MediaError("unreadable frame", f"{os.path.basename(paths[0])}: {exc}") from None
    w, h = output_geometry(size[0], size[1], None)
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
           "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps:.9g}", "-i", "pipe:0", "-an", "-c:v", "libx264",
           "-preset", "veryfast", "-qp", "0", "-pix_fmt", "yuv444p", "-threads", "1",
           "-fflags", "+bitexact", "-flags:v", "+bitexact", "-f", "mp4", str(dst)]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as exc:
        raise EnvironmentalError(exc.strerror or type(exc).__name__, "cannot start ffmpeg") from None
    problem = None
    try:
        for path in paths:
            try:
                with Image.open(path) as im:
                    if im.size != size:
                        problem = MediaError("frame sizes differ", f"{os.path.basename(path)} is {im.size[0]}x"
                                                                   f"{im.size[1]}, the first {size[0]}x{size[1]}")
                        break
                    rgb = np.asarray(im.convert("RGB"))[:h, :w]
            except (OSError, UnidentifiedImageError) as exc:
                problem = MediaError("unreadable frame", f"{os.path.basename(path)}: {exc}")
                break
            proc.stdin.write(np.ascontiguousarray(rgb).tobytes())
    except BrokenPipeError:
        pass
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        err = proc.stderr.read().decode(errors="replace")
        proc.wait()
    if problem is not None:
        raise problem
    if proc.returncode != 0:
        raise MediaError("ffmpeg failed", (err.strip().splitlines() or ["(no message)"])[-1][:200])


def process_trajectory(item: dict, unit_dir: Path, work_dir: Path, opts, settings: EncodeSettings,
                       sample_meta) -> tuple[list[dict], float]:
    """Cut, encode and align one episode into ``unit_dir``. Returns (sample records, seconds).
    Raises MediaError for a verdict about the episode (recorded as a skip by the caller)."""
    traj = item["extra"]["trajectory"]
    unit_dir.mkdir(parents=True, exist_ok=True)
    src = item["path"]
    if traj.get("frames_dir"):
        src = str(unit_dir / ".frames.mp4")
        images_to_video(traj["frames_dir"], Path(src), float(traj["fps"]))
    info = probe(src)
    rule = traj["action_rule"]
    arrays, num_frames, trimmed = check_lengths(read_episode(traj), info.num_frames, rule)
    states_recorded = arrays.states is not None
    if not states_recorded:  # no episode of the source has states: one zero column (see .trajectories)
        arrays = dataclasses.replace(arrays, states=np.zeros((num_frames, 1)))
    fps = float(traj["fps"]) if traj.get("fps") else info.fps  # the recording rate
    if traj.get("fps"):  # the clip's timestamps follow it (frame-exact mode never resamples)
        settings = dataclasses.replace(settings, fps=fps)
    ranges = frame_ranges(num_frames, fps, traj.get("start_frame"), traj.get("end_frame"),
                          opts.max_clip_seconds, opts.min_seconds)
    if not ranges:
        raise MediaError("too short", f"{num_frames} frames (min_seconds {opts.min_seconds})")
    samples, seconds = [], 0.0
    for i, (a, b) in enumerate(ranges):
        key = f"{item['uid']}_{i:04d}"
        dst, tmp = unit_dir / f"{key}.mp4", unit_dir / f".{key}.tmp.mp4"
        out = encode_readable(src, tmp, info, settings, None, None, frames=(a, b))
        if out.num_frames != b - a:
            raise MediaError("frames lost in re-encode", f"{out.num_frames} of {b - a} frames for frames {a}-{b} "
                                                         "(a damaged stream? actions could not stay aligned)")
        os.replace(tmp, dst)
        clip = {"states": arrays.states, "extrinsics": arrays.extrinsics}
        clip = {k: v[a:b] for k, v in clip.items() if v is not None}
        if arrays.actions is not None:
            clip["actions"] = arrays.actions[a:b - 1]
        npz = unit_dir / f"{key}.npz"
        tmp_npz = unit_dir / f".{key}.tmp.npz"
        tmp_npz.write_bytes(npz_bytes({k: np.asarray(v, dtype=np.float64) for k, v in clip.items()}))
        os.replace(tmp_npz, npz)
        meta = sample_meta(item, info, out, opts, a / fps, b / fps, key)
        meta["frames_expected"] = b - a  # frame-exact: exactly these frames
        meta["trajectory"] = {
            "layout": traj["layout"], "frames": b - a, "source_frames": [a, b], "action_rule": rule,
            # pose_delta actions are recomputed from the states: as many dimensions as the states have
            "action_dim": int(arrays.states.shape[1]) if rule == "pose_delta" else int(arrays.actions.shape[1]),
            "state_dim": int(arrays.states.shape[1]), "states_recorded": states_recorded,
            "extrinsics_dim": None if arrays.extrinsics is None else int(arrays.extrinsics.shape[1]),
            "arrays": sorted(clip), "camera": traj.get("camera"),
            "fps_source": "episode" if traj.get("fps") else "container",
        }
        if arrays.extrinsics_dropped:
            meta["trajectory"]["extrinsics_dropped"] = arrays.extrinsics_dropped
        if trimmed:
            meta["trajectory"]["trimmed"] = trimmed
        samples.append({"key": key, "file": str(dst.relative_to(work_dir)), "npz": str(npz.relative_to(work_dir)),
                        "label": None, "meta": meta})
        seconds += out.duration
    (unit_dir / ".frames.mp4").unlink(missing_ok=True)
    return samples, seconds
