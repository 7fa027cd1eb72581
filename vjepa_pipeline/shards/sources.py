"""Shard-builder inputs: turn ``<source>`` (a directory of videos or a manifest) into a
deterministic, validated list of items.

Sources understood by :func:`discover`:

* a directory, walked recursively (sorted, hidden names skipped, symlinked directories followed
  once each, so links cannot loop). Folder-per-class layouts (``root/<class>/<video>``, as
  Kinetics / UCF101 / HMDB51 ship) are labelled by folder name; anything else is unlabelled.
* the official V-JEPA CSV: ``<path> <label>`` per line, no header; the label is the last token,
  so paths may contain spaces.
* a CSV/TSV with a header row naming a ``path`` column (optional ``label``, ``start``, ``end``;
  other columns are kept in ``extra``).
* JSON lines (``.jsonl``/``.ndjson``/``.json``), or a ``.json`` array, of objects with ``path``
  and optional ``label``, ``start``, ``end``; other keys are kept in ``extra``.

Relative manifest paths are resolved against the manifest's directory. Inputs that cannot be used
(missing files, duplicates, unknown labels, unparseable lines, bad time ranges) are listed in
``SourceList.skipped`` with a reason and the rest are kept; mistakes that leave nothing to build
raise :class:`SourceError` (one line; the CLI exits 2). Nothing here opens a video or shells out.

Determinism: the item order is the items sorted by (NFC-normalised relative path, start, end),
shuffled with ``random.Random(seed)`` so classes mix across shards; ``uid`` depends only on the
normalised relative path and the clip range, so it is the same on every machine.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
import re
import stat
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv",
                    ".ts", ".3gp", ".ogv")
JSON_MANIFEST_EXTENSIONS = (".jsonl", ".ndjson", ".json")
TEXT_MANIFEST_EXTENSIONS = (".csv", ".tsv", ".txt")

_RESERVED_COLUMNS = ("path", "label", "start", "end")
_INT_RE = re.compile(r"[+-]?\d+")
_VJEPA_LINE_RE = re.compile(r"(.*\S)\s+(\S+)")
_PARALLEL_STAT_MIN = 64  # manifests longer than this are checked with a thread pool (network filesystems)


class SourceError(ValueError):
    """A user mistake in the shard-builder source (one clear line; the CLI exits 2)."""


@dataclass(frozen=True)
class SourceItem:
    """One input of the shard builder: a whole video, or a clip of it when ``start``/``end`` are set."""

    uid: str  # first 16 hex chars of sha1 over (normalised rel, start, end): stable, safe as a tar key
    path: str  # absolute path on disk
    rel: str  # relative to the source root (directory) or as written in the manifest
    label: int | None
    label_name: str | None
    start: float | None = None  # seconds (manifest only)
    end: float | None = None
    extra: dict = field(default_factory=dict, hash=False)  # extra manifest fields (JSON-safe)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field (for shard metadata)."""
        return asdict(self)


@dataclass
class SourceList:
    items: list[SourceItem]  # sorted, then shuffled with random.Random(seed)
    label_map: dict[str, int]  # label name -> id ({} when unlabelled)
    # {"path": str, "reason": str[, "detail": str]}: reason is short enough to group by (details such
    # as the manifest line go to "detail"); manifests in file order, directories in walk order
    skipped: list[dict]
    ignored_files: int = 0  # directory mode: non-hidden files whose extension is not a video extension
    labelled: bool = False
    kind: str = "directory"  # "directory" | "vjepa_csv" | "csv" | "jsonl" | "json"
    source: str = ""  # absolute path of the directory or manifest

    @property
    def num_classes(self) -> int:
        return max(self.label_map.values()) + 1 if self.label_map else 0

    def summary(self) -> str:
        """One line for logs, e.g. ``120 videos, 3 classes, 2 skipped, 5 other files ignored``."""
        clips = sum(1 for it in self.items if it.start is not None or it.end is not None)
        parts = [f"{len(self.items)} {'items' if clips else 'videos'}"]
        if clips:
            parts.append(f"{clips} clip ranges")
        parts.append(f"{len(self.label_map)} classes" if self.labelled else "unlabelled")
        parts.append(f"{len(self.skipped)} skipped")
        if self.ignored_files:
            parts.append(f"{self.ignored_files} other files ignored")
        return ", ".join(parts)


# ----------------------------------------------------------------------------- small helpers

def normalise_rel(rel: str) -> str:
    """The form of a relative path that ids and ordering use: NFC Unicode, '/' separators, no
    '.' or doubled separators (so ``./a//b.mp4`` and ``a/b.mp4`` are the same)."""
    rel = os.path.normpath(rel)
    if os.sep != "/":
        rel = rel.replace(os.sep, "/")
    return unicodedata.normalize("NFC", rel)


def _time_key(t: float | None) -> str:
    return "" if t is None else repr(float(t) + 0.0)  # + 0.0: -0.0 and 0.0 agree


def make_uid(rel: str, start: float | None = None, end: float | None = None) -> str:
    """First 16 hex chars of sha1 over (normalised rel, start, end); ``1`` and ``1.0`` agree."""
    key = "\0".join((normalise_rel(rel), _time_key(start), _time_key(end)))
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def _normalise_extensions(extensions: Sequence[str]) -> tuple[str, ...]:
    if isinstance(extensions, str):
        extensions = (extensions,)
    out = []
    for ext in extensions:
        if not isinstance(ext, str) or not ext.strip(". "):
            raise SourceError(f"bad video extension {ext!r}")
        ext = ext.strip().lower()
        out.append(ext if ext.startswith(".") else "." + ext)
    if not out:
        raise SourceError("no video extensions given")
    return tuple(dict.fromkeys(out))


def _has_ext(name: str, exts: tuple[str, ...]) -> bool:
    low = name.lower()
    return any(low.endswith(ext) and len(low) > len(ext) for ext in exts)


def _printable(s: str) -> str:
    """A path that may hold undecodable bytes (surrogate escapes), made safe to print/serialise."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _is_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _check_label_dict(mapping: Any, what: str) -> dict[str, int]:
    if not isinstance(mapping, dict):
        raise SourceError(f"{what} must map label names to integer ids")
    if not mapping:
        raise SourceError(f"{what} is empty")
    out: dict[str, int] = {}
    by_id: dict[int, str] = {}
    for name, idx in mapping.items():
        if not isinstance(name, str) or not name.strip():
            raise SourceError(f"{what}: bad label name {name!r}")
        if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
            raise SourceError(f"{what}: label {name!r} needs a non-negative integer id, got {idx!r}")
        key = _nfc(name)
        if key in out:
            raise SourceError(f"{what}: label {name!r} appears twice")
        if idx in by_id:
            raise SourceError(f"{what}: labels {by_id[idx]!r} and {name!r} share id {idx}")
        out[key] = idx
        by_id[idx] = name
    return out


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise SourceError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise SourceError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"cannot read {what} {path}: not UTF-8 text "
                          f"(bad byte at offset {exc.start})") from None


def _lines(text: str) -> list[str]:
    """Physical lines; unlike str.splitlines, U+2028 and friends inside file names do not split."""
    return [line.rstrip("\r") for line in text.split("\n")]


def read_label_file(path: str | os.PathLike) -> dict[str, int]:
    """Read a label map: JSON ``{name: id}`` (or a ``.json`` list of names), or text with one name
    per line (id = index among the non-blank lines, from 0). Names are NFC-normalised."""
    p = os.fspath(path)
    text = _read_text(p, "label file")
    stripped = text.strip()
    if not stripped:
        raise SourceError(f"label file {p} is empty")
    if p.lower().endswith(".json") or stripped.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SourceError(f"label file {p} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
        if isinstance(obj, list):
            if not all(isinstance(n, str) for n in obj):
                raise SourceError(f"label file {p}: a JSON list must hold label names (strings)")
            return _names_to_map(obj, p)
        return _check_label_dict(obj, f"label file {p}")
    return _names_to_map([line.strip() for line in _lines(text) if line.strip()], p)


def _names_to_map(names: list[str], path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in names:
        if _nfc(name) in out:
            raise SourceError(f"label file {path}: label {name!r} appears twice")
        out[_nfc(name)] = len(out)
    return _check_label_dict(out, f"label file {path}")


# ----------------------------------------------------------------------------- candidates

class _RowError(Exception):
    """A manifest row that cannot be parsed; the message completes 'unparseable manifest line N: '."""


@dataclass
class _Candidate:
    rel: str
    path: str  # absolute
    raw_label: int | str | None = None  # int id or (NFC) name
    start: float | None = None
    end: float | None = None
    extra: dict = field(default_factory=dict)
    where: str = ""  # "line 3" / "entry 3" (manifests) or the rel path (directories)
    lineno: int = 0  # manifests: line (or array entry) number, to report skips in file order
    inode: tuple[int, int] | None = None  # (st_dev, st_ino) once checked


def _parse_time(value: Any, name: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise _RowError(f"{name} {value!r} is not a number")
    try:
        t = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise _RowError(f"{name} {value!r} is not a number") from None
    if not math.isfinite(t):
        raise _RowError(f"{name} {value!r} is not a finite number")
    return t


def _parse_label(value: Any, label_map: dict[str, int] | None) -> int | str | None:
    """None, an int id, or an NFC label name. Numeric strings are ids unless the label map has a
    label of that name."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _RowError(f"label {value!r} is neither an integer id nor a name")
    if isinstance(value, float):
        if not value.is_integer():
            raise _RowError(f"label {value!r} is neither an integer id nor a name")
        value = int(value)
    if isinstance(value, int):
        if value < 0:
            raise _RowError(f"label {value} is negative")
        return value
    if not isinstance(value, str):
        raise _RowError(f"label {value!r} is neither an integer id nor a name")
    name = _nfc(value.strip())
    if not name:
        return None
    if label_map is not None and name in label_map:
        return name
    if _INT_RE.fullmatch(name):
        if int(name) < 0:
            raise _RowError(f"label {name} is negative")
        return int(name)
    return name


def _make_candidate(manifest_dir: str, raw_path: Any, label: Any, start: Any, end: Any, extra: dict,
                    lineno: int, unit: str, label_map: dict[str, int] | None) -> _Candidate:
    if not isinstance(raw_path, str) or not raw_path.strip():
        raise _RowError("no path" if raw_path in (None, "") else f"path {raw_path!r} is not a string")
    rel = raw_path.strip()
    path = os.path.normpath(rel if os.path.isabs(rel) else os.path.join(manifest_dir, rel))
    return _Candidate(rel=rel, path=path, raw_label=_parse_label(label, label_map),
                      start=_parse_time(start, "start"), end=_parse_time(end, "end"), extra=extra,
                      where=f"{unit} {lineno}", lineno=lineno)


# ----------------------------------------------------------------------------- manifests

def _manifest_kind(path: str, text: str, exts: tuple[str, ...]) -> tuple[str, str | None]:
    """("jsonl" | "json" | "csv" | "vjepa_csv", csv delimiter)."""
    ext = os.path.splitext(path)[1].lower()
    first = next((line.strip() for line in _lines(text) if line.strip()), "")
    if ext in JSON_MANIFEST_EXTENSIONS or (ext not in TEXT_MANIFEST_EXTENSIONS and first[:1] in ("{", "[")):
        return ("json" if first.startswith("[") else "jsonl"), None
    if ext == ".tsv" or ("," not in first and "\t" in first):
        delimiter = "\t"
    else:
        delimiter = ","
    fields = [f.strip() for f in next(csv.reader([first], delimiter=delimiter), [])]
    if "path" in (f.lower() for f in fields):
        return "csv", delimiter
    m = _VJEPA_LINE_RE.fullmatch(first)
    looks_like_header = (len(fields) >= 2 and delimiter in first
                         and not any(_has_ext(f, exts) for f in fields)
                         and not (m and _has_ext(m.group(1), exts)))
    if looks_like_header:
        raise SourceError(f"manifest {path}: CSV header has no 'path' column (columns: {', '.join(fields)})")
    return "vjepa_csv", None


def _rows_vjepa(text: str, manifest_dir: str, label_map, exts, errors: list) -> list[_Candidate]:
    out = []
    lines = _lines(text)
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if not out and not errors and [t.lower() for t in line.split()] == ["path", "label"]:
            continue  # a 'path label' header line
        m = _VJEPA_LINE_RE.fullmatch(line)
        try:
            if m is None:
                hint = " (comma-separated? add a header row with a 'path' column)" if "," in line else ""
                raise _RowError("expected '<path> <label>'" + hint)
            path, label = m.group(1), m.group(2)
            if _has_ext(label, exts):
                raise _RowError("expected '<path> <label>' (no label after the path?)")
            out.append(_make_candidate(manifest_dir, path, label, None, None, {}, lineno, "line", label_map))
        except _RowError as exc:
            errors.append((lineno, str(exc)))
    return out


def _rows_csv(text: str, manifest_dir: str, delimiter: str, path: str, label_map,
              errors: list) -> list[_Candidate]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    out = []
    prev = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append((prev + 1, f"CSV error: {exc}"))
            prev = reader.line_num
            continue
        lineno, prev = prev + 1, reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if header is None:
            header = [c.strip() for c in row]
            lowered = [c.lower() for c in header]
            if "path" not in lowered:  # only reachable when sniffing was bypassed
                raise SourceError(f"manifest {path}: CSV header has no 'path' column "
                                  f"(columns: {', '.join(header)})")
            for name in sorted(set(lowered)):
                if name and lowered.count(name) > 1:
                    raise SourceError(f"manifest {path}: CSV header has column {name!r} twice")
            continue
        try:
            if len(row) != len(header):
                raise _RowError(f"expected {len(header)} fields, got {len(row)}")
            fields: dict[str, str] = {}
            extra: dict[str, str] = {}
            for name, value in zip(header, row):
                if name.lower() in _RESERVED_COLUMNS:
                    fields[name.lower()] = value
                else:
                    extra[name] = value
            out.append(_make_candidate(manifest_dir, fields.get("path"), fields.get("label"),
                                       fields.get("start"), fields.get("end"), extra, lineno, "line",
                                       label_map))
        except _RowError as exc:
            errors.append((lineno, str(exc)))
    return out


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _row_from_object(obj: Any, manifest_dir: str, lineno: int, unit: str, label_map) -> _Candidate:
    if not isinstance(obj, dict):
        raise _RowError(f"expected a JSON object, got {type(obj).__name__}")
    if "path" not in obj:
        raise _RowError("no 'path' key")
    extra = {k: v for k, v in obj.items() if k not in _RESERVED_COLUMNS}
    return _make_candidate(manifest_dir, obj["path"], obj.get("label"), obj.get("start"), obj.get("end"),
                           extra, lineno, unit, label_map)


def _rows_jsonl(text: str, manifest_dir: str, label_map, errors: list) -> list[_Candidate]:
    out = []
    for lineno, raw in enumerate(_lines(text), 1):
        if not raw.strip():
            continue
        try:
            try:
                obj = json.loads(raw, parse_constant=_reject_constant)
            except ValueError as exc:
                msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise _RowError(f"invalid JSON ({msg})") from None
            out.append(_row_from_object(obj, manifest_dir, lineno, "line", label_map))
        except _RowError as exc:
            errors.append((lineno, str(exc)))
    return out


def _rows_json_array(text: str, path: str, manifest_dir: str, label_map, errors: list) -> list[_Candidate]:
    try:
        arr = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise SourceError(f"manifest {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except ValueError as exc:
        raise SourceError(f"manifest {path} is not valid JSON ({exc})") from None
    if not isinstance(arr, list):
        raise SourceError(f"manifest {path}: expected a JSON array of objects")
    out = []
    for i, obj in enumerate(arr, 1):
        try:
            out.append(_row_from_object(obj, manifest_dir, i, "entry", label_map))
        except _RowError as exc:
            errors.append((i, str(exc)))
    return out


def _stat(path: str) -> os.stat_result | str:
    """os.stat, or the skip reason."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "missing file"
    except PermissionError:
        return "permission denied"
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    if stat.S_ISDIR(st.st_mode):
        return "not a file (a directory)"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return st


def _inode(st: os.stat_result, path: str) -> tuple:
    # Some network/FUSE filesystems report 0 inodes; fall back to the normalised path there.
    return (st.st_dev, st.st_ino) if st.st_ino else ("path", os.path.normcase(path))


# ----------------------------------------------------------------------------- labels and ordering

_Kept = tuple[_Candidate, "int | None", "str | None"]


def _resolve_labels(cands: list[_Candidate], label_map: dict[str, int] | None, labelled: bool,
                    what: str) -> tuple[dict[str, int], list[_Kept], list[tuple[_Candidate, str]]]:
    """Returns (label map, [(cand, label, label_name)] kept, [(cand, reason)] skipped)."""
    kept, bad = [], []
    if not labelled:
        return {}, [(c, None, None) for c in cands], bad
    if label_map is None:
        raw = [c.raw_label for c in cands if c.raw_label is not None]
        ids = {r for r in raw if isinstance(r, int)}
        names = {r for r in raw if isinstance(r, str)}
        if ids and names:
            raise SourceError(f"{what} mixes integer labels and label names; pass a label file "
                              f"(e.g. {sorted(ids)[0]} and {sorted(names)[0]!r})")
        label_map = {str(i): i for i in sorted(ids)} if ids else {n: i for i, n in enumerate(sorted(names))}
    by_id = {i: n for n, i in label_map.items()}
    for c in cands:
        r = c.raw_label
        if r is None:
            bad.append((c, "missing label"))
        elif isinstance(r, int):
            if r in by_id:
                kept.append((c, r, by_id[r]))
            else:
                bad.append((c, f"unknown label {r}"))
        elif r in label_map:
            kept.append((c, label_map[r], r))
        else:
            bad.append((c, f"unknown label {r!r}"))
    return dict(label_map), kept, bad


def _sort_key(item: SourceItem):
    return (normalise_rel(item.rel), -math.inf if item.start is None else item.start,
            math.inf if item.end is None else item.end, item.path)


def _order(items: list[SourceItem], seed: int, skipped: list[dict]) -> list[SourceItem]:
    items = sorted(items, key=_sort_key)
    seen: dict[str, SourceItem] = {}
    unique = []
    for it in items:  # distinct files whose names differ only in Unicode normalisation
        if it.uid in seen:
            skipped.append({"path": it.path,
                            "reason": "name clashes with another after Unicode normalisation",
                            "detail": f"same id as {seen[it.uid].rel!a}"})
            continue
        seen[it.uid] = it
        unique.append(it)
    random.Random(seed).shuffle(unique)
    return unique


def _first_skip(skipped: list[dict]) -> str:
    return f"first: {skipped[0]['path']}: {skipped[0]['reason']}" if skipped else ""


# ----------------------------------------------------------------------------- directories

def _walk(root: str, exts: tuple[str, ...], skipped: list[dict]):
    """Sorted depth-first walk.

    Returns ([(rel parts, abs path, stat result or skip reason)], count of ignored files)."""
    videos: list[tuple[tuple[str, ...], str, Any]] = []
    ignored = 0
    st = os.stat(root)
    visited = {(st.st_dev, st.st_ino)}
    stack: list[tuple[str, tuple[str, ...]]] = [(root, ())]
    while stack:
        directory, parts = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skipped.append({"path": _printable(directory),
                            "reason": f"unreadable directory: {exc.strerror or exc}"})
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                is_dir = False
            if is_dir:
                try:
                    dst = entry.stat()
                except OSError as exc:
                    skipped.append({"path": _printable(entry.path),
                                    "reason": f"unreadable directory: {exc.strerror or exc}"})
                    continue
                key = (dst.st_dev, dst.st_ino)
                if key in visited:
                    skipped.append({"path": _printable(entry.path),
                                    "reason": "directory already visited (symlink loop or repeated link)"})
                    continue
                visited.add(key)
                subdirs.append((entry.path, parts + (entry.name,)))
                continue
            if not _has_ext(entry.name, exts):
                ignored += 1
                continue
            try:
                is_file = entry.is_file()
            except OSError:
                is_file = False
            if is_file:
                try:
                    info: Any = entry.stat()
                except OSError as exc:
                    info = f"cannot stat: {exc.strerror or exc}"
            else:
                info = "broken symlink" if entry.is_symlink() else "not a regular file"
            videos.append((parts + (entry.name,), entry.path, info))
        stack.extend(reversed(subdirs))
    return videos, ignored


def _discover_directory(root: str, exts, label_map, labelled, seed) -> SourceList:
    skipped: list[dict] = []
    videos, ignored = _walk(root, exts, skipped)
    if not videos:
        raise SourceError(f"no videos found under {root} (searched {', '.join(exts)}; "
                          f"{ignored} other file{'s' if ignored != 1 else ''} ignored)")
    if labelled is None:
        labelled = {len(parts) for parts, _, _ in videos} == {2}
    if labelled and label_map is None:  # ids from every class folder holding a video file, readable or not
        names = {_nfc(parts[0]) for parts, _, _ in videos if len(parts) >= 2 and _is_utf8(parts[0])}
        label_map = {name: i for i, name in enumerate(sorted(names))}
    cands: list[_Candidate] = []
    for parts, path, info in videos:
        rel = "/".join(parts)
        if not _is_utf8(rel):
            skipped.append({"path": _printable(path), "reason": "file name is not valid UTF-8"})
            continue
        if isinstance(info, str):
            skipped.append({"path": path, "reason": info})
            continue
        if labelled and len(parts) < 2:
            skipped.append({"path": path, "reason": "no class folder"})
            continue
        cands.append(_Candidate(rel=rel, path=path, raw_label=_nfc(parts[0]) if labelled else None,
                                where=rel, inode=_inode(info, path)))
    label_map, kept, bad = _resolve_labels(cands, label_map, labelled, f"directory {root}")
    skipped.extend({"path": c.path, "reason": reason} for c, reason in bad)
    items, first_at = [], {}
    for c, label, name in kept:
        if c.inode in first_at:
            skipped.append({"path": c.path, "reason": f"duplicate of {first_at[c.inode]}"})
            continue
        first_at[c.inode] = c.rel
        items.append(SourceItem(uid=make_uid(c.rel), path=c.path, rel=c.rel, label=label, label_name=name))
    if not items:
        raise SourceError(f"no usable videos under {root}: {len(videos)} found, "
                          f"all skipped ({_first_skip(skipped)})")
    return SourceList(items=_order(items, seed, skipped), label_map=label_map, skipped=skipped,
                      ignored_files=ignored, labelled=bool(labelled), kind="directory", source=root)


# ----------------------------------------------------------------------------- manifests

def _discover_manifest(path: str, exts, label_map, labelled, seed) -> SourceList:
    text = _read_text(path, "manifest")
    if not text.strip():
        raise SourceError(f"manifest {path} is empty")
    kind, delimiter = _manifest_kind(path, text, exts)
    manifest_dir = os.path.dirname(path)
    errors: list[tuple[int, str]] = []
    if kind == "jsonl":
        cands = _rows_jsonl(text, manifest_dir, label_map, errors)
    elif kind == "json":
        cands = _rows_json_array(text, path, manifest_dir, label_map, errors)
    elif kind == "csv":
        cands = _rows_csv(text, manifest_dir, delimiter, path, label_map, errors)
    else:
        cands = _rows_vjepa(text, manifest_dir, label_map, exts, errors)
    unit = "entry" if kind == "json" else "line"
    skips: list[tuple[int, dict]] = [(n, {"path": path, "reason": f"unparseable manifest {unit} {n}: {msg}"})
                                     for n, msg in errors]

    def skip(c: _Candidate, reason: str, detail: str | None = None) -> None:
        entry = {"path": c.path, "reason": reason}
        if detail:
            entry["detail"] = detail
        skips.append((c.lineno, entry))

    total = len(cands) + len(errors)

    # time ranges
    timed = []
    for c in cands:
        if c.start is not None and c.start < 0:
            skip(c, "bad time range: negative time", f"{c.where}: start {c.start:g}")
        elif c.end is not None and c.end < 0:
            skip(c, "bad time range: negative time", f"{c.where}: end {c.end:g}")
        elif c.start is not None and c.end is not None and c.start >= c.end:
            skip(c, "bad time range: start >= end", f"{c.where}: start {c.start:g}, end {c.end:g}")
        else:
            timed.append(c)

    # labels: a manifest is labelled when any row carries a label (or labels / labelled=True say so)
    if labelled is None:
        labelled = any(c.raw_label is not None for c in cands)
    label_map, kept, bad = _resolve_labels(timed, label_map, labelled, f"manifest {path}")
    for c, reason in bad:
        skip(c, reason, c.where)

    # existence (threaded: manifests of millions of rows live on network filesystems)
    paths = [c.path for c, _, _ in kept]
    if len(paths) >= _PARALLEL_STAT_MIN:
        with ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 4) * 4)) as pool:
            stats = list(pool.map(_stat, paths, chunksize=64))
    else:
        stats = [_stat(p) for p in paths]

    items, first_at = [], {}
    for (c, label, name), st in zip(kept, stats):
        if isinstance(st, str):
            skip(c, st, c.where)
            continue
        key = (_inode(st, c.path), c.start, c.end)
        if key in first_at:
            skip(c, f"duplicate of {first_at[key]}")
            continue
        first_at[key] = c.where
        items.append(SourceItem(uid=make_uid(c.rel, c.start, c.end), path=c.path, rel=c.rel, label=label,
                                label_name=name, start=c.start, end=c.end, extra=c.extra))
    skipped = [d for _, d in sorted(skips, key=lambda s: s[0])]  # file order (stable within a line)
    if not items:
        detail = f"{total} rows, all skipped ({_first_skip(skipped)})" if total else "no rows"
        raise SourceError(f"manifest {path} has no usable rows: {detail}")
    return SourceList(items=_order(items, seed, skipped), label_map=label_map, skipped=skipped,
                      ignored_files=0, labelled=bool(labelled), kind=kind, source=path)


# ----------------------------------------------------------------------------- entry point

def discover(source: str | os.PathLike, *, labels: str | os.PathLike | dict[str, int] | None = None,
             extensions: Sequence[str] = VIDEO_EXTENSIONS, seed: int = 0,
             labelled: bool | None = None) -> SourceList:
    """List the shard builder's inputs from a directory or a manifest.

    ``labels``: a label map (dict or file, see :func:`read_label_file`); when given it is
    authoritative (items with other labels are skipped) and implies ``labelled=True`` unless
    ``labelled=False``. ``labelled``: None detects (folder-per-class layout / labels present in the
    manifest), True requires labels (items without one are skipped), False drops all labels.
    ``extensions`` filters directory walks only; manifest rows are taken as listed.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    src = os.fspath(source)
    if isinstance(src, bytes):
        src = os.fsdecode(src)
    exts = _normalise_extensions(extensions)
    label_map = None
    if labels is not None:
        label_map = (_check_label_dict(labels, "label map") if isinstance(labels, dict)
                     else read_label_file(labels))
        if labelled is None:
            labelled = True
    if labelled is False:
        label_map = None
    if not src:
        raise SourceError("source is empty: give a directory of videos or a manifest")
    if not os.path.exists(src):
        raise SourceError(f"source {src} does not exist")
    src = os.path.abspath(src)
    if os.path.isdir(src):
        return _discover_directory(src, exts, label_map, labelled, seed)
    if not os.path.isfile(src):
        raise SourceError(f"source {src} is neither a directory nor a manifest file")
    if _has_ext(os.path.basename(src), exts):
        raise SourceError(f"source {src} is a video; give its directory or a manifest listing it")
    return _discover_manifest(src, exts, label_map, labelled, seed)


__all__ = [
    "VIDEO_EXTENSIONS",
    "SourceError",
    "SourceItem",
    "SourceList",
    "discover",
    "make_uid",
    "normalise_rel",
    "read_label_file",
]
