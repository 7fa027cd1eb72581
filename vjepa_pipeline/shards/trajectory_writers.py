"""Tiny generated trajectory episodes, written by our own code, in the layouts that
:mod:`.trajectories` reads: the generic episode folders, a JSON-lines manifest, and the DROID raw
layout (``trajectory.h5``, ``recordings/MP4/<camera>.mp4``, ``metadata_<id>.json``). Used by tests,
benches and recipes; everything is deterministic per seed.

The generic episodes are a moving square (:func:`moving_square_episode`): the actions are the
square's integer displacements and the states its top-left corner, so a world model has something
real to learn and a test can check alignment by eye (``states[t + 1] - states[t] == actions[t]``).
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .media import write_video
from .trajectory_files import DROID_CARTESIAN, DROID_EXTRINSICS, DROID_GRIPPER

ARRAY_FORMATS = ("npy", "npz", "csv", "jsonl")


def moving_square_episode(seed: int, frames: int, size: int = 64, square: int = 16,
                          max_step: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(video uint8 (T, size, size, 3), actions float64 (T - 1, 2), states float64 (T, 2)).

    A bright square on a dark background moves by a random integer step (dx, dy) per frame, clipped
    at the borders: the recorded action is the displacement that happened; the state is (x, y) of the
    square's top-left corner. ``actions[t]`` leads from frame t to frame t + 1.
    """
    if frames < 1 or square >= size:
        raise ValueError(f"need frames >= 1 and square < size, got {frames=}, {square=}, {size=}")
    rng = np.random.default_rng(seed)
    limit = size - square
    pos = rng.integers(0, limit + 1, size=2)
    states, actions = [pos], []
    for _ in range(frames - 1):
        new = np.clip(pos + rng.integers(-max_step, max_step + 1, size=2), 0, limit)
        actions.append(new - pos)
        pos = new
        states.append(pos)
    video = np.full((frames, size, size, 3), 16, dtype=np.uint8)
    for t, (x, y) in enumerate(states):
        video[t, y:y + square, x:x + square] = (235, 210, 60)
    return (video, np.array(actions, dtype=np.float64).reshape(-1, 2), np.array(states, dtype=np.float64))


# ----------------------------------------------------------------------------- files

def write_array(path: str | os.PathLike, arr: np.ndarray, role: str) -> Path:
    """Write a side file in the format its extension names (npy / npz / csv / jsonl); csv and jsonl
    keep every float exactly (shortest round-trip repr). The npz array is named like the role."""
    path = Path(path)
    arr = np.asarray(arr, dtype=np.float64)
    table = arr.reshape(len(arr), -1)
    fmt = path.suffix.lower().lstrip(".")
    if fmt == "npy":
        np.save(path, arr, allow_pickle=False)
    elif fmt == "npz":
        np.savez(path, **{role: arr})
    elif fmt == "csv":
        header = ",".join(f"{role}_{j}" for j in range(table.shape[1]))
        rows = [",".join(repr(float(v)) for v in row) for row in table]
        path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    elif fmt == "jsonl":
        rows = [json.dumps([float(v) for v in row]) for row in table]
        path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
    else:
        raise ValueError(f"unknown array format {fmt!r} (expected one of {', '.join(ARRAY_FORMATS)})")
    return path


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """An 8-bit RGB PNG (stdlib zlib; no imaging library needed)."""
    rgb = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))  # filter type 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    Path(path).write_bytes(png)
    return Path(path)


def _write_clip(path: Path, video: np.ndarray, fps: float) -> None:
    write_video(path, video, fps=fps, crf=10, gop=max(1, min(len(video), 4)))


# ----------------------------------------------------------------------------- generic layout and manifest

def write_episodes(root: str | os.PathLike, n: int, frames: int, fps: float = 10, seed: int = 0,
                   fmt: str = "npy", with_frames_dir: bool = False) -> list[Path]:
    """``n`` moving-square episodes ``root/ep_000 ...`` in the generic layout: ``video.mp4`` (or
    ``frames/000000.png ...`` with ``episode.json`` giving the fps), ``actions.<fmt>``, ``states.<fmt>``.
    Episode i uses seed ``seed + i``."""
    if fmt not in ARRAY_FORMATS:
        raise ValueError(f"unknown array format {fmt!r} (expected one of {', '.join(ARRAY_FORMATS)})")
    folders = []
    for i in range(n):
        folder = Path(root) / f"ep_{i:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        video, actions, states = moving_square_episode(seed + i, frames)
        if with_frames_dir:
            (folder / "frames").mkdir(exist_ok=True)
            for t, image in enumerate(video):
                write_png(folder / "frames" / f"{t:06d}.png", image)
            (folder / "episode.json").write_text(json.dumps({"fps": float(fps)}) + "\n", encoding="utf-8")
        else:
            _write_clip(folder / "video.mp4", video, fps)
        write_array(folder / f"actions.{fmt}", actions, "actions")
        write_array(folder / f"states.{fmt}", states, "states")
        folders.append(folder)
    return folders


def _side(folder: Path, role: str) -> Path | None:
    found = sorted(p for p in folder.iterdir()
                   if p.stem == role and p.suffix.lower().lstrip(".") in ARRAY_FORMATS)
    return found[0] if found else None


def write_manifest(root: str | os.PathLike, episodes: Sequence[str | os.PathLike] | None = None, *,
                   name: str = "manifest.jsonl",
                   ranges: Sequence[tuple[int | None, int | None] | None] | None = None,
                   n: int = 2, frames: int = 10, fps: float = 10, seed: int = 0, fmt: str = "npy") -> Path:
    """A JSON-lines manifest ``root/<name>`` with one line per episode folder (written with
    :func:`write_episodes` under ``root/episodes`` when ``episodes`` is None). Paths are relative to
    ``root`` where they can be; ``ranges`` adds (start_frame, end_frame) per line."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if episodes is None:
        episodes = write_episodes(root / "episodes", n, frames, fps=fps, seed=seed, fmt=fmt)
    lines = []
    for i, folder in enumerate(map(Path, episodes)):
        def rel(p: Path) -> str:
            return os.path.relpath(p, root) if p.is_relative_to(root) else str(p.resolve())
        row: dict = {"frames": rel(folder / "frames"), "fps": float(fps)} if (folder / "frames").is_dir() \
            else {"video": rel(folder / "video.mp4")}
        for role in ("actions", "states", "extrinsics"):
            side = _side(folder, role)
            if side is not None:
                row[role] = rel(side)
        if ranges is not None and ranges[i] is not None:
            start, end = ranges[i]
            row.update({k: v for k, v in (("start_frame", start), ("end_frame", end)) if v is not None})
        lines.append(json.dumps(row))
    path = root / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- DROID layout

def droid_trajectory(frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cartesian_position (N, 6), gripper_position (N,), extrinsics (N, 6)): a smooth random walk of
    the end effector (xyz around a work point, small Euler angles), a gripper in [0, 1], and a
    slightly shaking camera."""
    rng = np.random.default_rng(seed)
    xyz = np.array([0.5, 0.0, 0.3]) + np.cumsum(rng.normal(0, 0.01, (frames, 3)), axis=0)
    euler = np.clip(np.cumsum(rng.normal(0, 0.03, (frames, 3)), axis=0), -0.5, 0.5)
    gripper = np.clip(0.5 + np.cumsum(rng.normal(0, 0.08, frames)), 0.0, 1.0)
    extrinsics = np.array([0.1, -0.4, 0.5, -2.0, 0.0, -0.6]) + rng.normal(0, 1e-3, (frames, 6))
    return np.concatenate([xyz, euler], axis=1), gripper, extrinsics


def _droid_video(cartesian: np.ndarray, gripper: np.ndarray, width: int = 64, height: int = 48) -> np.ndarray:
    """A square whose position follows x, y of the end effector and whose brightness the gripper."""
    video = np.full((len(cartesian), height, width, 3), 20, dtype=np.uint8)
    side = 12
    for t, (pose, g) in enumerate(zip(cartesian, gripper)):
        x = int(np.clip((pose[0] - 0.5) * 400 + (width - side) / 2, 0, width - side))
        y = int(np.clip(pose[1] * 400 + (height - side) / 2, 0, height - side))
        video[t, y:y + side, x:x + side] = (80 + int(170 * g), 160, 220)
    return video


def write_droid_episode(folder: str | os.PathLike, frames: int, fps: float = 15, seed: int = 0,
                        camera: str = "12345678", with_extrinsics: bool = True) -> Path:
    """One DROID raw episode in ``folder``: ``trajectory.h5`` (cartesian and gripper positions,
    ``<camera>_left`` extrinsics), ``recordings/MP4/<camera>.mp4`` (64x48, moving with the pose) and
    ``metadata_<id>.json`` naming the recordings (left = ``camera``; right and wrist cameras are named
    but not recorded)."""
    import h5py

    folder = Path(folder)
    (folder / "recordings" / "MP4").mkdir(parents=True, exist_ok=True)
    cartesian, gripper, extrinsics = droid_trajectory(frames, seed)
    with h5py.File(folder / "trajectory.h5", "w") as h5:
        h5.create_dataset(DROID_CARTESIAN, data=cartesian)
        h5.create_dataset(DROID_GRIPPER, data=gripper)
        if with_extrinsics:
            h5.create_dataset(DROID_EXTRINSICS.format(camera=camera), data=extrinsics)
    _write_clip(folder / "recordings" / "MP4" / f"{camera}.mp4", _droid_video(cartesian, gripper), fps)
    uid = f"GEN+{seed:08d}"
    base = f"gen/{folder.name}/recordings/MP4"
    meta = {"uuid": uid, "trajectory_length": frames, "left_mp4_path": f"{base}/{camera}.mp4",
            "right_mp4_path": f"{base}/{camera}_right.mp4", "wrist_mp4_path": f"{base}/{camera}_wrist.mp4"}
    (folder / f"metadata_{uid}.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return folder


def write_droid_csv(csv_path: str | os.PathLike, folders: Sequence[str | os.PathLike],
                    relative: bool = False) -> Path:
    """The official DROID list: one episode folder per line, no header (absolute paths, or relative to
    the CSV's folder with ``relative=True``)."""
    csv_path = Path(csv_path)
    base = csv_path.parent.resolve()
    paths = [Path(f).resolve() for f in folders]
    lines = [os.path.relpath(p, base) if relative else str(p) for p in paths]
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path


__all__ = ["ARRAY_FORMATS", "droid_trajectory", "moving_square_episode", "write_array", "write_droid_csv",
           "write_droid_episode", "write_episodes", "write_manifest", "write_png"]
