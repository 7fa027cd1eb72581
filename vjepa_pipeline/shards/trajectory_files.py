"""Side files of trajectory episodes: actions, states and camera extrinsics as (N, D) arrays.

Formats (the role is ``actions`` / ``states`` / ``extrinsics``):

* ``.npy``: one array (never unpickled: object arrays are refused);
* ``.npz``: the array named like the role, else the only array;
* ``.csv``: comma-separated numbers, one row per line; one header row of non-numbers is skipped;
* ``.jsonl``: one JSON array of numbers per line (or an object with exactly one list value);
* DROID ``trajectory.h5``: states = ``observation/robot_state/cartesian_position`` (N, 6) with
  ``observation/robot_state/gripper_position`` as a last column; extrinsics =
  ``observation/camera_extrinsics/<camera>_left`` (N, 6), when present.

A 1-D array is one value per row, (N, 1). Problems with a file are :class:`MediaError` verdicts
(the build records them as skips); machine failures (I/O errors, memory) are raised as
:class:`EnvironmentalError`. Extrinsics are optional: a problem with them (unreadable, non-finite, a
shape or row count that does not fit) drops the episode's extrinsics (``extrinsics_dropped``: why)
and keeps the episode. Discovery reads only shapes (:func:`side_shape`, :func:`droid_shapes`); the
build reads the arrays with :func:`read_episode` and fits them to the video with
:func:`check_lengths` (the row-count tolerance, :func:`row_tolerance`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from .items import has_ext, text_lines
from .media import MediaError, environmental

SIDE_EXTENSIONS = (".npy", ".npz", ".csv", ".jsonl")
ROLES = ("actions", "states", "extrinsics")
SINGULAR = {"actions": "action", "states": "state", "extrinsics": "extrinsics"}
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg")
_NUMBER_RE = re.compile(r"(\d+)$")  # the frame number ends a frame image's name (before the extension)
DROID_CARTESIAN = "observation/robot_state/cartesian_position"
DROID_GRIPPER = "observation/robot_state/gripper_position"
DROID_EXTRINSICS = "observation/camera_extrinsics/{camera}_left"


@dataclass
class EpisodeArrays:
    """One episode's side arrays, float64; None where the episode has none (DROID: no actions)."""

    actions: np.ndarray | None  # (N_a, A): N_a = N or N - 1 for N frames
    states: np.ndarray | None  # (N, S)
    extrinsics: np.ndarray | None  # (N, E)
    extrinsics_dropped: str | None = None  # why an episode's extrinsics were not kept (optional file)


def _verdict(exc: BaseException, reason: str, detail: str = "") -> MediaError:
    """``exc`` as a verdict about the input, unless it is the machine's failure (raised as such)."""
    env = environmental(exc, ours=False)
    if env is not None:
        raise env from exc
    return MediaError(reason, " ".join((detail or f"{type(exc).__name__}: {exc}").split())[:200])


def _check_dtype(dtype: np.dtype, role: str, where: str = "") -> None:
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.shape != ():
        raise MediaError(f"{role} file not numeric", f"{where}dtype {dtype}")


def _table_shape(shape: tuple[int, ...], role: str) -> tuple[int, int]:
    if len(shape) == 1:
        shape = (shape[0], 1)
    if len(shape) != 2 or shape[1] == 0:
        raise MediaError(f"bad {role} shape", f"{tuple(shape)}: expected (N,) or (N, D)")
    if shape[0] == 0:
        raise MediaError(f"empty {role} file", "0 rows")
    return int(shape[0]), int(shape[1])


# ----------------------------------------------------------------------------- npy / npz

def _npy_header(f) -> tuple[tuple[int, ...], np.dtype] | None:
    """(shape, dtype) from an .npy header (never unpickles); None for header versions past 2.0."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        return None
    return tuple(shape), dtype


def _npz_member(npz, role: str) -> str:
    names = list(npz.files)
    if role in names:
        return role
    if len(names) == 1:
        return names[0]
    if not names:
        raise MediaError(f"empty {role} file", "npz holds no arrays")
    raise MediaError("ambiguous npz", f"no array named {role!r} among {', '.join(sorted(names))}")


def _npz_shape(npz, name: str, role: str) -> tuple[int, ...]:
    member = name + ".npy"
    if member not in npz.zip.namelist():
        raise MediaError(f"{role} file not numeric", f"npz member {name!r} is not an array")
    with npz.zip.open(member) as f:
        header = _npy_header(f)
    if header is None:
        arr = npz[name]
        header = (arr.shape, arr.dtype)
    _check_dtype(header[1], role, f"array {name!r}: ")
    return header[0]


def _numpy_file(path: str, role: str, load: bool):
    """An .npy / .npz file's shape (``load=False``) or array. Object arrays are refused from the
    header, before anything else is read."""
    try:
        if path.lower().endswith(".npz"):
            with np.load(path, allow_pickle=False) as npz:
                name = _npz_member(npz, role)
                shape = _npz_shape(npz, name, role)
                return npz[name] if load else shape
        with open(path, "rb") as f:
            header = _npy_header(f)
        if header is not None:
            _check_dtype(header[1], role)
        arr = np.load(path, mmap_mode=None if load else "r", allow_pickle=False)
        _check_dtype(arr.dtype, role)
        return arr if load else arr.shape
    except MediaError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to parse the file is the file's verdict
        raise _verdict(exc, f"unreadable {role} file") from None


# ----------------------------------------------------------------------------- csv / jsonl

def _read_utf8(path: str, role: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        detail = f"not UTF-8 text (bad byte at offset {exc.start})"
        raise MediaError(f"unreadable {role} file", detail) from None
    except OSError as exc:
        raise _verdict(exc, f"unreadable {role} file", exc.strerror or str(exc)) from None


def _rows_to_array(rows: list[tuple[int, list[float]]], role: str) -> np.ndarray:
    if not rows:
        raise MediaError(f"empty {role} file", "no rows")
    width, first = len(rows[0][1]), rows[0][0]
    for lineno, row in rows:
        if len(row) != width:
            raise MediaError(f"ragged {role} file",
                             f"line {lineno} has {len(row)} values, line {first} has {width}")
    return np.array([row for _, row in rows], dtype=np.float64)


def _csv_array(text: str, role: str) -> np.ndarray:
    rows: list[tuple[int, list[float]]] = []
    header_seen = False
    for lineno, line in enumerate(text_lines(text), 1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        values = []
        for field in fields:
            try:
                values.append(float(field))
            except ValueError:
                values.append(None)
        if all(v is None for v in values) and not rows and not header_seen:
            header_seen = True  # a header row of names
            continue
        if any(v is None for v in values):
            bad = fields[values.index(None)]
            raise MediaError(f"{role} file not numeric", f"line {lineno}: {bad[:40]!r}")
        rows.append((lineno, values))
    return _rows_to_array(rows, role)


def _json_row(value, lineno: int, role: str) -> list[float]:
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise MediaError(f"{role} file not numeric",
                             f"line {lineno}: an object needs exactly one list value")
        value = lists[0]
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in value):
        raise MediaError(f"{role} file not numeric", f"line {lineno}: not an array of numbers")
    return [float(v) for v in value]


def _jsonl_array(text: str, role: str) -> np.ndarray:
    rows = []
    for lineno, line in enumerate(text_lines(text), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            raise MediaError(f"unreadable {role} file", f"line {lineno}: not JSON") from None
        rows.append((lineno, _json_row(value, lineno, role)))
    return _rows_to_array(rows, role)


# ----------------------------------------------------------------------------- generic side files

def _raw_side(path: str, role: str, load: bool):
    low = path.lower()
    if low.endswith((".npy", ".npz")):
        return _numpy_file(path, role, load)
    if low.endswith(".csv"):
        arr = _csv_array(_read_utf8(path, role), role)
    elif low.endswith(".jsonl"):
        arr = _jsonl_array(_read_utf8(path, role), role)
    else:
        expected = ", ".join(SIDE_EXTENSIONS)
        raise MediaError(f"unreadable {role} file", f"unknown extension (expected {expected})")
    return arr if load else arr.shape


def side_shape(path: str, role: str) -> tuple[int, int]:
    """(rows, dim) of a side file, reading as little as the format allows. Raises MediaError."""
    return _table_shape(_raw_side(path, role, load=False), role)


def _finite(arr: np.ndarray, role: str) -> np.ndarray:
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise MediaError(f"non-finite {role}", f"row {int(np.argmax(bad))}")
    return arr


def load_side(path: str, role: str) -> np.ndarray:
    """A side file as a finite (N, D) float64 array. Raises MediaError."""
    arr = np.asarray(_raw_side(path, role, load=True))
    _check_dtype(arr.dtype, role)
    _table_shape(arr.shape, role)
    return _finite(arr.astype(np.float64).reshape(len(arr), -1), role)


# ----------------------------------------------------------------------------- DROID trajectory.h5

def _h5_dataset(h5, key: str, required: bool = True):
    import h5py

    node = h5.get(key)
    if node is None and not required:
        return None
    if not isinstance(node, h5py.Dataset):
        raise MediaError("bad trajectory.h5", f"no dataset {key}")
    try:
        _check_dtype(node.dtype, "trajectory.h5")
    except MediaError:
        raise MediaError("bad trajectory.h5", f"{key} is not numeric ({node.dtype})") from None
    return node


def _droid_datasets(h5, camera: str):
    """(cartesian, gripper, extrinsics or None, why the extrinsics were dropped or None) datasets,
    their shapes checked. Extrinsics are optional: a bad extrinsics dataset is dropped, not a verdict."""
    cart, grip = _h5_dataset(h5, DROID_CARTESIAN), _h5_dataset(h5, DROID_GRIPPER)
    if cart.ndim != 2 or grip.ndim not in (1, 2) or (grip.ndim == 2 and grip.shape[1] != 1):
        raise MediaError("bad trajectory.h5",
                         f"cartesian_position {cart.shape}, gripper_position {grip.shape}")
    if len(grip) != len(cart):
        raise MediaError("bad trajectory.h5",
                         f"{len(cart)} cartesian positions, {len(grip)} gripper positions")
    if len(cart) == 0:
        raise MediaError("bad trajectory.h5", "0 rows")
    key = DROID_EXTRINSICS.format(camera=camera)
    try:
        extr = _h5_dataset(h5, key, required=False)
    except MediaError as exc:
        return cart, grip, None, f"{exc.reason}: {exc.detail}"
    if extr is not None and (extr.ndim != 2 or extr.shape[1] == 0 or len(extr) != len(cart)):
        return cart, grip, None, f"bad extrinsics: {key} {extr.shape} for {len(cart)} positions"
    return cart, grip, extr, None


def _with_h5(path: str, camera: str, fn):
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except Exception as exc:  # noqa: BLE001 - not an HDF5 file, truncated, ...
        raise _verdict(exc, "unreadable trajectory.h5") from None
    try:
        with h5:
            return fn(*_droid_datasets(h5, camera))
    except MediaError:
        raise
    except Exception as exc:  # noqa: BLE001 - a dataset that cannot be read
        raise _verdict(exc, "unreadable trajectory.h5") from None


def droid_shapes(path: str, camera: str) -> tuple[int, int, int | None, str | None]:
    """(rows, state dim, extrinsics dim or None, why the extrinsics were dropped or None) of a DROID
    trajectory.h5. Raises MediaError."""
    return _with_h5(path, camera, lambda cart, grip, extr, dropped: (
        len(cart), cart.shape[1] + 1, None if extr is None else extr.shape[1], dropped))


def _read_extrinsics(extr) -> tuple[np.ndarray | None, str | None]:
    try:
        return _finite(np.asarray(extr, dtype=np.float64), "extrinsics"), None
    except MediaError as exc:
        return None, f"{exc.reason}: {exc.detail}"
    except Exception as exc:  # noqa: BLE001 - an unreadable dataset: dropped like a bad file
        return None, _why(_verdict(exc, "unreadable extrinsics"))


def read_droid(path: str, camera: str) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """(states (N, 7), extrinsics (N, 6) or None, why the extrinsics were dropped or None) of a DROID
    trajectory.h5, as the official loader."""
    def read(cart, grip, extr, dropped):
        states = np.concatenate([np.asarray(cart, dtype=np.float64),
                                 np.asarray(grip, dtype=np.float64).reshape(-1, 1)], axis=1)
        if extr is not None:
            extr, dropped = _read_extrinsics(extr)
        return states, extr, dropped
    states, extr, dropped = _with_h5(path, camera, read)
    return _finite(states, "states"), extr, dropped


# ----------------------------------------------------------------------------- per-episode reading

def _check_dim(arr: np.ndarray | None, expected: int | None, role: str) -> None:
    if arr is not None and expected is not None and arr.shape[1] != expected:
        raise MediaError(f"wrong {SINGULAR[role]} dimension", f"{arr.shape[1]} (expected {expected})")


def _why(exc: MediaError) -> str:
    return f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason


def read_episode(traj: dict) -> EpisodeArrays:
    """The arrays of one episode (``traj``: a SourceItem's ``extra["trajectory"]``), validated:
    numeric, finite, at most 2-D, of the dimensions discovery recorded. Raises MediaError; extrinsics
    that discovery dropped are not read, and extrinsics that fail these checks are dropped
    (``extrinsics_dropped``), the episode kept."""
    dropped = traj.get("extrinsics_dropped")
    if traj["layout"] == "droid":
        states, extrinsics, why = read_droid(traj["h5"], traj["camera"])
        arrays = EpisodeArrays(actions=None, states=states, extrinsics=extrinsics, extrinsics_dropped=why)
    else:
        loaded = {role: load_side(traj[role], role) if traj.get(role) else None for role in ("actions", "states")}
        arrays = EpisodeArrays(**loaded, extrinsics=None)
        if traj.get("extrinsics") and not dropped:
            try:
                arrays.extrinsics = load_side(traj["extrinsics"], "extrinsics")
            except MediaError as exc:
                arrays.extrinsics_dropped = _why(exc)
    if dropped:
        arrays.extrinsics, arrays.extrinsics_dropped = None, dropped
    for role in ("actions", "states"):
        _check_dim(getattr(arrays, role), traj.get(f"{SINGULAR[role]}_dim"), role)
    try:
        _check_dim(arrays.extrinsics, traj.get("extrinsics_dim"), "extrinsics")
    except MediaError as exc:
        arrays.extrinsics, arrays.extrinsics_dropped = None, _why(exc)
    return arrays


def row_tolerance(num_frames: int) -> int:
    """How many rows the per-frame arrays may differ from the video's frame count by (a recorder's
    last frame or two): max(2, 1 % of the frames)."""
    return max(2, num_frames // 100)


class LengthFit(NamedTuple):
    """An episode's arrays fitted to its video by :func:`check_lengths`."""

    arrays: EpisodeArrays  # states / extrinsics: ``frames`` rows; actions: ``frames`` or ``frames - 1``
    frames: int  # the usable frames: the first ``frames`` of the video
    trimmed: dict | None  # {"frames": video frames dropped, "rows": reference rows dropped}, None if none


def check_lengths(arrays: EpisodeArrays, num_frames: int, rule: str) -> LengthFit:
    """Fit the rows to ``num_frames`` video frames. The reference is the states' row count R (without
    states: the actions' count + 1, or the count itself when the video is not longer); when
    ``|R - num_frames| <= row_tolerance(num_frames)`` the first ``min(R, num_frames)`` frames and rows
    are used (the longer side is trimmed), a larger difference is a MediaError ("state / frame count
    mismatch", "action / frame count mismatch"). Actions follow the states (R or R - 1 of them) and
    then the N / N - 1 rule on the fitted N frames (actions[t] leads from frame t to t + 1; an N-th
    action is unused). Extrinsics that are shorter than N or out of the tolerance are dropped."""
    actions, states, extrinsics = arrays.actions, arrays.states, arrays.extrinsics
    if rule != "pose_delta":
        if actions is None:
            raise MediaError("missing actions", f"the {rule} rule needs recorded actions")
    elif states is None:
        raise MediaError("no states for pose_delta", "pose_delta recomputes actions from the states")
    tol = row_tolerance(num_frames)
    if states is not None:
        ref = len(states)
        if actions is not None and len(actions) not in (ref, ref - 1):
            raise MediaError("action / state count mismatch", f"{len(actions)} actions for {ref} states")
        if abs(ref - num_frames) > tol:
            raise MediaError("state / frame count mismatch", f"{ref} states for {num_frames} frames")
    else:
        ref = len(actions) + 1 if num_frames > len(actions) else len(actions)
        if abs(ref - num_frames) > tol:
            raise MediaError("action / frame count mismatch", f"{len(actions)} actions for {num_frames} frames")
    n = min(ref, num_frames)
    dropped = arrays.extrinsics_dropped
    if extrinsics is not None and (len(extrinsics) < n or abs(len(extrinsics) - num_frames) > tol):
        extrinsics, dropped = None, (f"extrinsics / frame count mismatch: {len(extrinsics)} extrinsics for "
                                     f"{num_frames} frames")
    fitted = replace(arrays, actions=None if actions is None else actions[:n],
                     states=None if states is None else states[:n],
                     extrinsics=None if extrinsics is None else extrinsics[:n], extrinsics_dropped=dropped)
    trimmed = {"frames": num_frames - n, "rows": ref - n} if n < max(ref, num_frames) else None
    return LengthFit(fitted, n, trimmed)


def list_frames(frames_dir: str) -> list[str]:
    """The numbered images of a ``frames/`` folder in frame order (absolute paths). Raises MediaError
    unless their numbers (the digits ending each name, before the extension) are consecutive."""
    numbered = []
    with os.scandir(frames_dir) as it:
        names = sorted(e.name for e in it if not e.name.startswith(".") and e.is_file())
    for name in names:
        if not has_ext(name, FRAME_EXTENSIONS):
            continue
        match = _NUMBER_RE.search(os.path.splitext(name)[0])
        if match is None:
            raise MediaError("unnumbered frame image", name)
        numbered.append((int(match.group(1)), name))
    if not numbered:
        raise MediaError("no video", f"no {'/'.join(FRAME_EXTENSIONS)} images in {frames_dir}")
    numbered.sort()
    first = numbered[0][0]
    for i, (number, name) in enumerate(numbered):
        if number != first + i:
            problem = "repeated" if number == numbered[i - 1][0] else f"{first + i} missing"
            raise MediaError("frame numbers not consecutive", f"{name}: frame {problem}")
    return [os.path.join(frames_dir, name) for _, name in numbered]


def side_role(name: str) -> str | None:
    """The role of a side-file name (``actions.npy`` -> ``actions``), else None."""
    stem, ext = os.path.splitext(name)
    return stem if stem in ROLES and ext.lower() in SIDE_EXTENSIONS else None


__all__ = ["DROID_CARTESIAN", "DROID_EXTRINSICS", "DROID_GRIPPER", "FRAME_EXTENSIONS", "ROLES",
           "SIDE_EXTENSIONS", "EpisodeArrays", "LengthFit", "check_lengths", "droid_shapes", "list_frames",
           "load_side", "read_droid", "read_episode", "row_tolerance", "side_role", "side_shape"]
