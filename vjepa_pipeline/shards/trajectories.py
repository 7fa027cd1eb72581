"""Trajectory sources of the shard builder (world models, V-JEPA 2-AC): episodes of video with
per-frame actions, states and camera extrinsics, in three layouts.

* ``episodes`` (any robot): a folder tree; an episode folder directly holds ``actions.<ext>`` or
  ``states.<ext>`` (ext: npy, npz, csv, jsonl; see :mod:`.trajectory_files`), an optional
  ``extrinsics.<ext>``, the video (exactly one video file, or a ``frames/`` folder of numbered
  ``.png``/``.jpg`` images) and an optional ``episode.json`` (``fps``, ``video``, ``start_frame``,
  ``end_frame``; ``fps`` is required for ``frames/``, ``video`` names one of several videos).
* ``manifest``: JSON lines, one episode per line: ``{"video": path (or "frames": folder), "actions":
  path, "states"?, "extrinsics"?, "fps"?, "start_frame"?, "end_frame"?}``; relative paths are against
  the manifest's folder.
* ``droid``: the official DROID raw layout as vjepa2's ``app/vjepa_droid`` reads it: a CSV of episode
  folders (the first space-separated field of each line), or a directory whose folders holding
  ``trajectory.h5`` are the episodes. Per episode the first metadata ``*.json`` (sorted) names the
  recording under the key ``shards.droid_camera``; states and extrinsics come from the h5; DROID has
  no recorded actions (rule ``pose_delta``: recomputed from the states).

What an episode must hold, across a source:

* actions: every episode, unless the rule is ``pose_delta`` (recomputed from the states, which it
  then requires: "no states for pose_delta").
* states: the predictor always takes a state token. If *no* episode of the source has a states file,
  the build writes zero states, one column, one row per frame, and records ``states_recorded: false``
  (train with ``world_model.state_dim=1``). If *some* episodes have states, those without are skipped
  ("missing states file", "other episodes have states").
* extrinsics: optional and unused unless asked for, so never a reason to drop an episode: extrinsics
  that cannot be read, are not finite, have another dimension than most episodes' or a row count that
  does not fit the video are dropped from that episode (``extrinsics_dropped``: why, in the
  trajectory record and the samples' metadata), the episode kept.
* frame rate: an ``fps`` in ``episode.json`` or on a manifest line is the recording rate (required for
  ``frames/``); for a video file it replaces the container's rate in the samples' ``fps``, their
  timestamps and the clip-length cuts (``fps_source``: "episode" or "container").
* row counts: states (the reference) may differ from the video's frame count by a frame or two
  (``max(2, 1 %)``); the build then uses the first ``min(rows, frames)`` of both (``trimmed``), see
  :func:`~.trajectory_files.check_lengths`.

Walks are sorted and depth-first, skip hidden names, follow each symlinked folder once, and do not
descend into an episode folder. Discovery reads only shapes; episodes that cannot be used are listed
in ``SourceList.skipped`` (``{"path", "reason", "detail"}``, reasons short enough to group by) and a
source that leaves nothing raises :class:`SourceError`. The side arrays are read later, per episode,
by :func:`read_episode`; the actions of a training window follow :func:`window_actions` (the
alignment rule, in :mod:`.actions`).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .actions import ACTION_RULES, POSE_DIM, pose_deltas, window_actions
from .items import (SourceError, SourceItem, SourceList, first_skip, has_ext, is_utf8, make_uid, order_items,
                    printable, read_text, text_lines)
from .media import MediaError, environmental
from .sources import VIDEO_EXTENSIONS
from .trajectory_files import (ROLES, SINGULAR, EpisodeArrays, check_lengths, droid_shapes, list_frames,
                               read_episode, side_role, side_shape)

H5_NAME = "trajectory.h5"
MANIFEST_EXTENSIONS = (".jsonl", ".ndjson")
EPISODE_JSON_KEYS = ("fps", "video", "start_frame", "end_frame")
MANIFEST_KEYS = ("video", "frames", "actions", "states", "extrinsics", "fps", "start_frame", "end_frame")
_PARALLEL_MIN = 64  # more episodes than this are checked with a thread pool (network filesystems)


def _skip(path: str, reason: str, detail: str = "") -> dict:
    return {"path": path, "reason": reason, "detail": detail}


# ----------------------------------------------------------------------------- the walk

def _folder_kind(entries: dict[str, bool]) -> str | None:
    """"droid" / "episodes" for an episode folder (from its entry names), else None."""
    if H5_NAME in entries:
        return "droid"
    if any(side_role(name) in ("actions", "states") for name in entries):
        return "episodes"
    return None


def _list_dir(directory: str) -> dict[str, bool]:
    """Non-hidden entry names -> is a directory (symlinks followed), sorted by name."""
    with os.scandir(directory) as it:
        entries = sorted(it, key=lambda e: e.name)
    out = {}
    for e in entries:
        if e.name.startswith("."):
            continue
        try:
            out[e.name] = e.is_dir()
        except OSError:
            out[e.name] = False
    return out


def _walk(root: str, skipped: list[dict]) -> Iterator[tuple[str, str, dict[str, bool], str]]:
    """Sorted depth-first walk yielding (rel, abs folder, entries, kind) of each episode folder
    (see :func:`_folder_kind`); episode folders are not descended into."""
    st = os.stat(root)
    visited = {(st.st_dev, st.st_ino)}
    stack: list[tuple[str, str]] = [(root, ".")]
    while stack:
        directory, rel = stack.pop()
        try:
            entries = _list_dir(directory)
        except OSError as exc:
            skipped.append(_skip(printable(directory), "unreadable directory", exc.strerror or str(exc)))
            continue
        kind = _folder_kind(entries)
        if kind is not None and not is_utf8(rel):
            skipped.append(_skip(printable(directory), "file name is not valid UTF-8"))
            continue
        if kind is not None:
            yield rel, directory, entries, kind
            continue
        subdirs = []
        for name, is_dir in entries.items():
            if not is_dir:
                continue
            path = os.path.join(directory, name)
            try:
                st = os.stat(path)
            except OSError as exc:
                skipped.append(_skip(printable(path), "unreadable directory", exc.strerror or str(exc)))
                continue
            if (st.st_dev, st.st_ino) in visited:
                skipped.append(_skip(printable(path), "directory already visited",
                                     "symlink loop or repeated link"))
                continue
            visited.add((st.st_dev, st.st_ino))
            subdirs.append((path, name if rel == "." else f"{rel}/{name}"))
        stack.extend(reversed(subdirs))


# ----------------------------------------------------------------------------- layout detection

def _first_line(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            for line in f:
                if line.strip():
                    return line.strip()
    except OSError:
        return None
    return None


def _droid_csv_folder(line: str, csv_path: str) -> str:
    """The episode folder of a DROID CSV line (the official reader's first space-separated field)."""
    return os.path.normpath(os.path.join(os.path.dirname(csv_path), line.split()[0]))


def detect_layout(source: str) -> str:
    """"videos" | "episodes" | "manifest" | "droid" (see the module docstring): a DROID CSV or
    directory holding ``trajectory.h5`` is droid, a JSON-lines file whose first object has "actions" or
    "states" is a manifest, a directory with ``actions.*`` / ``states.*`` folders is episodes."""
    src = os.path.abspath(os.fspath(source))
    if os.path.isdir(src):
        found = None
        for _, _, _, kind in _walk(src, []):
            if kind == "droid":
                return "droid"  # decided: DROID wins, stop walking
            found = kind
        return found or "videos"
    low = src.lower()
    line = _first_line(src) if os.path.isfile(src) else None
    if line is None:
        return "videos"
    if low.endswith(".csv"):
        folder = _droid_csv_folder(line, src)
        return "droid" if os.path.isfile(os.path.join(folder, H5_NAME)) else "videos"
    if low.endswith(MANIFEST_EXTENSIONS):
        try:
            obj = json.loads(line)
        except ValueError:
            return "videos"
        return "manifest" if isinstance(obj, dict) and ("actions" in obj or "states" in obj) else "videos"
    return "videos"


# ----------------------------------------------------------------------------- shared checks

@dataclass
class _Episode:
    """An episode that passed its own checks; dims are decided across episodes afterwards."""

    rel: str
    path: str  # the video file or the frames/ folder
    traj: dict
    dims: dict = field(default_factory=dict)  # role -> dim (present side files only)
    uid: str = ""


def _number(value, key: str, where: str, integer: bool) -> float | int | None:
    if value is None:
        return None
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    if not ok or not math.isfinite(value) or value < 0 or (value == 0 and not integer):
        what = "a non-negative integer" if integer else "a positive number"
        raise MediaError(f"bad {where}", f"{key} must be {what}, got {value!r}")
    return value


def _frame_range(meta: dict, where: str) -> tuple[int | None, int | None]:
    start = _number(meta.get("start_frame"), "start_frame", where, integer=True)
    end = _number(meta.get("end_frame"), "end_frame", where, integer=True)
    if start is not None and end is not None and end <= start:
        raise MediaError(f"bad {where}", f"end_frame {end} is not after start_frame {start}")
    return start, end


def _side_dims(sides: dict, rule: str, missing_where: str) -> tuple[dict, str | None]:
    """Check the side files an episode needs and read their shapes: (role -> dim, why the extrinsics
    were dropped or None). Row counts against the video are the build's (``check_lengths``)."""
    if rule == "pose_delta":
        sides["actions"] = None  # recomputed from the states; a recorded file is not read
        if sides.get("states") is None:
            raise MediaError("no states for pose_delta", missing_where)
    elif sides.get("actions") is None:
        raise MediaError("missing actions file", missing_where)
    shapes = {role: side_shape(path, role) for role, path in sides.items()
              if path is not None and role != "extrinsics"}
    dropped = None
    if sides.get("extrinsics") is not None:  # optional: a bad file drops the extrinsics, not the episode
        try:
            shapes["extrinsics"] = side_shape(sides["extrinsics"], "extrinsics")
        except MediaError as exc:
            dropped = f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason
    states = shapes.get("states")
    if states is not None and "actions" in shapes and shapes["actions"][0] not in (states[0], states[0] - 1):
        raise MediaError("action / state count mismatch",
                         f"{shapes['actions'][0]} actions for {states[0]} states")
    return {role: shape[1] for role, shape in shapes.items()}, dropped


def _traj(layout: str, episode: str, rule: str, *, video=None, frames_dir=None, fps=None, sides=None,
          h5=None, camera=None, start=None, end=None, extrinsics_dropped=None) -> dict:
    sides = sides or {}
    return {"layout": layout, "episode": episode, "video": video, "frames_dir": frames_dir,
            "fps": None if fps is None else float(fps), "actions": sides.get("actions"),
            "states": sides.get("states"), "extrinsics": sides.get("extrinsics"), "h5": h5, "camera": camera,
            "start_frame": start, "end_frame": end, "action_rule": rule,
            "action_dim": None, "state_dim": None, "extrinsics_dim": None,
            "states_recorded": True, "extrinsics_dropped": extrinsics_dropped}


# ----------------------------------------------------------------------------- episodes layout

def _episode_json(folder: str, entries: dict[str, bool]) -> dict:
    if "episode.json" not in entries:
        return {}
    try:
        meta = json.loads(read_text(os.path.join(folder, "episode.json"), "episode.json"))
    except (SourceError, ValueError) as exc:
        raise MediaError("bad episode.json", str(exc)[:200]) from None
    if not isinstance(meta, dict):
        raise MediaError("bad episode.json", "not a JSON object")
    unknown = sorted(set(meta) - set(EPISODE_JSON_KEYS))
    if unknown:
        known = ", ".join(EPISODE_JSON_KEYS)
        raise MediaError("bad episode.json", f"unknown key {unknown[0]!r} (known: {known})")
    video = meta.get("video")
    if video is not None and (not isinstance(video, str) or not video or os.path.isabs(video)
                              or ".." in video.replace("\\", "/").split("/")):
        raise MediaError("bad episode.json", f"video must name a file in the episode folder, got {video!r}")
    _number(meta.get("fps"), "fps", "episode.json", integer=False)
    _frame_range(meta, "episode.json")
    return meta


def _episode_video(folder: str, entries: dict[str, bool], meta: dict) -> tuple[str | None, str | None]:
    """(video file, frames folder): one of them."""
    if meta.get("video"):
        path = os.path.join(folder, meta["video"])
        if not os.path.isfile(path):
            raise MediaError("missing video", f"episode.json names {meta['video']!r}")
        return path, None
    videos = [name for name, is_dir in entries.items() if not is_dir and has_ext(name, VIDEO_EXTENSIONS)]
    if len(videos) > 1:
        raise MediaError("several videos: name one in episode.json", ", ".join(videos[:4]))
    if videos:
        if not os.path.isfile(os.path.join(folder, videos[0])):
            raise MediaError("missing video", f"{videos[0]} is not a regular file (a broken link?)")
        return os.path.join(folder, videos[0]), None
    if entries.get("frames"):
        frames_dir = os.path.join(folder, "frames")
        list_frames(frames_dir)
        if meta.get("fps") is None:
            raise MediaError("no fps for frames/", 'a frames/ folder needs "fps" in episode.json')
        return None, frames_dir
    raise MediaError("no video", "no video file and no frames/ folder")


def _episode_sides(folder: str, entries: dict[str, bool]) -> dict:
    sides: dict = {}
    for name, is_dir in entries.items():
        role = side_role(name)
        if role is None or is_dir:
            continue
        if sides.get(role):
            raise MediaError(f"several {role} files", f"{os.path.basename(sides[role])}, {name}")
        sides[role] = os.path.join(folder, name)
    return {role: sides.get(role) for role in ROLES}


def _generic_episode(rel: str, folder: str, entries: dict[str, bool], rule: str) -> _Episode:
    meta = _episode_json(folder, entries)
    sides = _episode_sides(folder, entries)
    video, frames_dir = _episode_video(folder, entries, meta)
    dims, dropped = _side_dims(sides, rule, folder)
    start, end = _frame_range(meta, "episode.json")
    traj = _traj("episodes", folder, rule, video=video, frames_dir=frames_dir, fps=meta.get("fps"),
                 sides=sides, start=start, end=end, extrinsics_dropped=dropped)
    return _Episode(rel=rel, path=video or frames_dir, traj=traj, dims=dims, uid=make_uid(rel))


# ----------------------------------------------------------------------------- manifest layout

def _manifest_row(line: str) -> dict:
    try:
        row = json.loads(line)
    except ValueError:
        raise MediaError("bad manifest line", "not JSON") from None
    if not isinstance(row, dict):
        raise MediaError("bad manifest line", "not a JSON object")
    unknown = sorted(set(row) - set(MANIFEST_KEYS))
    if unknown:
        raise MediaError("bad manifest line", f"unknown key {unknown[0]!r}")
    if ("video" in row) == ("frames" in row):
        raise MediaError("bad manifest line", 'give exactly one of "video" and "frames"')
    for key in ("video", "frames", *ROLES):
        if key in row and row[key] is not None and (not isinstance(row[key], str) or not row[key]):
            raise MediaError("bad manifest line", f"{key} must be a path, got {row[key]!r}")
    _number(row.get("fps"), "fps", "manifest line", integer=False)
    return row


def _manifest_episode(row: dict, manifest: str, rule: str) -> _Episode:
    base = os.path.dirname(manifest)

    def resolve(p: str) -> str:
        return os.path.normpath(os.path.join(base, p))

    rel = row.get("video") or row["frames"]
    video = frames_dir = None
    if "video" in row:
        video = resolve(row["video"])
        if not os.path.isfile(video):
            raise MediaError("missing video", video)
    else:
        frames_dir = resolve(row["frames"])
        if not os.path.isdir(frames_dir):
            raise MediaError("missing frames folder", frames_dir)
        list_frames(frames_dir)
        if row.get("fps") is None:
            raise MediaError("no fps for frames/", 'a "frames" line needs "fps"')
    sides = {role: resolve(row[role]) if row.get(role) else None for role in ROLES}
    for role in ("actions", "states"):
        path = sides[role]
        if path is not None and not os.path.isfile(path) and not (role == "actions" and rule == "pose_delta"):
            raise MediaError(f"missing {role} file", path)
    dims, dropped = _side_dims(sides, rule, "no path given")
    start, end = _frame_range(row, "manifest line")
    traj = _traj("manifest", manifest, rule, video=video, frames_dir=frames_dir, fps=row.get("fps"),
                 sides=sides, start=start, end=end, extrinsics_dropped=dropped)
    return _Episode(rel=rel, path=video or frames_dir, traj=traj, dims=dims, uid=make_uid(rel, start, end))


def _manifest_episodes(manifest: str, rule: str, skipped: list[dict]) -> tuple[list[_Episode], int]:
    episodes, seen, total = [], {}, 0
    text = read_text(manifest, "manifest")
    lines = [(n, line) for n, line in enumerate(text_lines(text), 1) if line.strip()]

    def check(job):
        n, line = job
        return n, _verdict(lambda: _manifest_episode(_manifest_row(line), manifest, rule))

    for n, result in _map(check, lines):
        total += 1
        if isinstance(result, MediaError):
            skipped.append(_skip(manifest, result.reason, f"line {n}: {result.detail}"))
        elif result.uid in seen:
            skipped.append(_skip(manifest, "duplicate line", f"line {n}: same as line {seen[result.uid]}"))
        else:
            seen[result.uid] = n
            episodes.append(result)
    return episodes, total


# ----------------------------------------------------------------------------- DROID layout

def _droid_metadata(folder: str) -> tuple[dict, str]:
    """The official ``get_json``: the first ``*.json`` that parses (here: in sorted order)."""
    names = [n for n, is_dir in _list_dir(folder).items() if not is_dir and n.endswith(".json")]
    for name in names:
        try:
            meta = json.loads(read_text(os.path.join(folder, name), "metadata"))
        except (SourceError, ValueError):
            continue
        if isinstance(meta, dict):
            return meta, name
    if names:
        raise MediaError("unreadable metadata json", ", ".join(names[:3]))
    raise MediaError("no metadata json", folder)


def _droid_episode(rel: str, folder: str, camera_key: str) -> _Episode:
    h5 = os.path.join(folder, H5_NAME)
    if not os.path.isfile(h5):
        raise MediaError("missing trajectory.h5", folder)
    meta, meta_name = _droid_metadata(folder)
    value = meta.get(camera_key)
    if not isinstance(value, str) or not value:
        raise MediaError("camera not in metadata", f"no {camera_key!r} in {meta_name}")
    mp4_name = value.split("recordings/MP4/")[-1]
    if not mp4_name or "/" in mp4_name or "\\" in mp4_name or mp4_name in (".", ".."):
        raise MediaError("bad recording path", f"{camera_key} = {value[:120]!r}")
    camera = mp4_name.split(".")[0]  # as the official loader names the extrinsics
    video = os.path.join(folder, "recordings", "MP4", mp4_name)
    if not os.path.isfile(video):
        raise MediaError("missing recording", f"recordings/MP4/{mp4_name}")
    _, state_dim, extrinsics_dim, dropped = droid_shapes(h5, camera)
    dims = {"states": state_dim} | ({} if extrinsics_dim is None else {"extrinsics": extrinsics_dim})
    traj = _traj("droid", folder, "pose_delta", video=video, h5=h5, camera=camera, extrinsics_dropped=dropped)
    return _Episode(rel=rel, path=video, traj=traj, dims=dims, uid=make_uid(rel))


def _droid_csv_folders(csv_path: str, skipped: list[dict]) -> list[tuple[str, str]]:
    folders, seen = [], {}
    for n, line in enumerate(text_lines(read_text(csv_path, "DROID CSV")), 1):
        if not line.strip():
            continue
        folder, rel = _droid_csv_folder(line, csv_path), line.split()[0]
        if folder in seen:
            skipped.append(_skip(folder, "duplicate episode", f"line {n}: same as line {seen[folder]}"))
        elif not os.path.isdir(folder):
            skipped.append(_skip(folder, "missing episode folder", f"line {n}"))
        else:
            seen[folder] = n
            folders.append((rel, folder))
    return folders


# ----------------------------------------------------------------------------- discovery

def _map(fn: Callable, jobs: list) -> list:
    if len(jobs) <= _PARALLEL_MIN:
        return [fn(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(fn, jobs))


def _verdict(fn: Callable, *args):
    """``fn(*args)``, or the MediaError it raised; an unreadable folder is a verdict too, unless the
    machine failed (I/O error, memory: raised)."""
    try:
        return fn(*args)
    except MediaError as exc:
        return exc
    except OSError as exc:
        env = environmental(exc, ours=False)
        if env is not None:
            raise env from exc
        return MediaError("unreadable episode folder", exc.strerror or str(exc))


def _check_each(fn: Callable[..., _Episode], jobs: list[tuple], skipped: list[dict]) -> list[_Episode]:
    """``fn(rel, folder, ...)`` per job; verdicts become skips, in job order."""
    def run(job):
        return _verdict(fn, *job)

    episodes = []
    for job, result in zip(jobs, _map(run, jobs)):
        if isinstance(result, MediaError):
            skipped.append(_skip(job[1], result.reason, result.detail))
        else:
            episodes.append(result)
    return episodes


def _where(ep: _Episode) -> str:
    return ep.path if ep.traj["layout"] == "manifest" else ep.traj["episode"]


def _decide_dims(episodes: list[_Episode], role: str, wanted: int | None,
                 skipped: list[dict]) -> list[_Episode]:
    """Keep the episodes whose ``role`` dim is ``wanted`` (None: the most common, ties -> smallest).
    Extrinsics are optional: another dimension drops the episode's extrinsics, not the episode."""
    counts = Counter(ep.dims[role] for ep in episodes if role in ep.dims)
    if wanted is None and counts:
        wanted = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    kept = []
    for ep in episodes:
        dim = ep.dims.get(role)
        if dim is not None and dim != wanted:
            reason, detail = f"wrong {SINGULAR[role]} dimension", f"{dim} (expected {wanted})"
            if role != "extrinsics":
                skipped.append(_skip(_where(ep), reason, detail))
                continue
            ep.traj["extrinsics_dropped"], dim = f"{reason}: {detail}", None
        ep.traj[f"{SINGULAR[role]}_dim"] = dim
        kept.append(ep)
    return kept


def _states_rule(episodes: list[_Episode], wanted: int | None, skipped: list[dict]) -> list[_Episode]:
    """No episode with states: all are kept, ``states_recorded`` False (the build writes zero states,
    one column). Some with states: those without are skipped."""
    if not episodes:
        return episodes
    if not any("states" in ep.dims for ep in episodes):
        if wanted not in (None, 1):
            raise SourceError(f"no episode has a states file, so the build writes 1-dimensional zero states: "
                              f"shards.state_dim {wanted} cannot be met (unset it)")
        for ep in episodes:
            ep.traj["states_recorded"] = False
        return episodes
    kept = []
    for ep in episodes:
        if "states" in ep.dims:
            kept.append(ep)
        else:
            skipped.append(_skip(_where(ep), "missing states file", "other episodes have states"))
    return kept


def _kind(src: str, layout: str) -> str:
    if layout == "videos":
        raise SourceError("shards.layout is videos: not a trajectory source")
    if layout == "auto":
        kind = detect_layout(src)
        if kind == "videos":
            raise SourceError(f"source {src} holds no trajectories (no {H5_NAME}, no folder with "
                              "actions.* or states.*, no DROID CSV or trajectory manifest)")
        return kind
    if layout not in ("episodes", "droid"):
        raise SourceError(f"unknown shards.layout {layout!r} (expected auto, videos, episodes or droid)")
    if os.path.isdir(src):
        return layout
    low = src.lower()
    if layout == "droid" and low.endswith(".csv"):
        return "droid"
    if layout == "episodes" and low.endswith(MANIFEST_EXTENSIONS):
        return "manifest"
    want = "a .csv of episode folders" if layout == "droid" else "a .jsonl manifest"
    raise SourceError(f"source {src} is not a directory or {want} (shards.layout: {layout})")


def _rule(kind: str, opts) -> str:
    rule = opts.action_rule or ("pose_delta" if kind == "droid" else "sum")
    if rule not in ACTION_RULES:
        raise SourceError(f"unknown shards.action_rule {rule!r} (expected one of {', '.join(ACTION_RULES)})")
    if kind == "droid" and rule != "pose_delta":
        raise SourceError("DROID trajectories have no recorded actions: "
                          "shards.action_rule must be pose_delta (or unset)")
    if rule == "pose_delta" and opts.state_dim not in (None, POSE_DIM):
        raise SourceError(f"shards.action_rule pose_delta needs {POSE_DIM}-dimensional states (xyz, "
                          f"Euler xyz, gripper), got shards.state_dim {opts.state_dim}")
    return rule


def _episodes_of(src: str, kind: str, rule: str, opts, skipped: list[dict]) -> tuple[list[_Episode], int]:
    """The episodes that passed their own checks, and how many were found."""
    if kind == "manifest":
        return _manifest_episodes(src, rule, skipped)
    if kind == "droid":
        if os.path.isdir(src):
            jobs = [(rel, folder) for rel, folder, _, k in _walk(src, skipped) if k == "droid"]
        else:
            jobs = _droid_csv_folders(src, skipped)
        jobs = [(rel, folder, opts.droid_camera) for rel, folder in jobs]
        return _check_each(_droid_episode, jobs, skipped), len(jobs)
    found = _walk(src, skipped)
    jobs = [(rel, folder, entries, rule) for rel, folder, entries, k in found if k == "episodes"]
    return _check_each(_generic_episode, jobs, skipped), len(jobs)


def discover_trajectories(source: str | os.PathLike, opts) -> SourceList:
    """The trajectory episodes of ``source`` (``opts``: a ShardsConfig; ``layout``, ``action_rule``,
    ``action_dim``, ``state_dim``, ``droid_camera``, ``seed``). Each item's ``extra["trajectory"]``
    says where its video and side files are and what the build reads (see the module docstring)."""
    src = os.fspath(source)
    if not src:
        raise SourceError("source is empty: give an episode folder tree, a trajectory manifest "
                          "or a DROID CSV")
    if not os.path.exists(src):
        raise SourceError(f"source {src} does not exist")
    src = os.path.abspath(src)
    for key in ("action_dim", "state_dim"):
        value = getattr(opts, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SourceError(f"shards.{key} must be a positive integer, got {value!r}")
    kind = _kind(src, opts.layout)
    rule = _rule(kind, opts)
    skipped: list[dict] = []
    episodes, found = _episodes_of(src, kind, rule, opts, skipped)
    if not found:
        raise SourceError(f"no trajectory episodes found in {src} ({kind} layout)")
    if rule != "pose_delta":
        episodes = _decide_dims(episodes, "actions", opts.action_dim, skipped)
        episodes = _states_rule(episodes, opts.state_dim, skipped)
    episodes = _decide_dims(episodes, "states", POSE_DIM if rule == "pose_delta" else opts.state_dim, skipped)
    episodes = _decide_dims(episodes, "extrinsics", None, skipped)
    items = [SourceItem(uid=ep.uid, path=ep.path, rel=ep.rel, label=None, label_name=None,
                        extra={"trajectory": ep.traj}) for ep in episodes]
    if not items:
        raise SourceError(f"no usable trajectories in {src}: {found} episodes found, all skipped "
                          f"({first_skip(skipped)})")
    return SourceList(items=order_items(items, opts.seed, skipped), label_map={}, skipped=skipped,
                      labelled=False, kind=kind, source=src)


__all__ = ["EpisodeArrays", "check_lengths", "detect_layout", "discover_trajectories", "list_frames",
           "pose_deltas", "read_episode", "window_actions"]
