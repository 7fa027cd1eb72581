"""Manifest sources of the shard builder: the official V-JEPA CSV (``<path> <label>``), CSV/TSV
with a header naming a ``path`` column, JSON lines and JSON arrays. Rows that cannot be used are
skipped with a reason, in file order; the files they name are checked with a thread pool."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .items import (Candidate, SourceError, SourceItem, SourceList, file_id, first_skip, has_ext, make_uid,
                    nfc, order_items, read_text, text_lines)
from .labels import resolve_labels

JSON_MANIFEST_EXTENSIONS = (".jsonl", ".ndjson", ".json")
TEXT_MANIFEST_EXTENSIONS = (".csv", ".tsv", ".txt")

_RESERVED_COLUMNS = ("path", "label", "start", "end")
_INT_RE = re.compile(r"[+-]?\d+")
_VJEPA_LINE_RE = re.compile(r"(.*\S)\s+(\S+)")
_PARALLEL_STAT_MIN = 64  # manifests longer than this are checked with a thread pool (network filesystems)


class _RowError(Exception):
    """A manifest row that cannot be parsed; the message completes 'unparseable manifest line N: '."""


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
    name = nfc(value.strip())
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
                    lineno: int, unit: str, label_map: dict[str, int] | None) -> Candidate:
    if not isinstance(raw_path, str) or not raw_path.strip():
        raise _RowError("no path" if raw_path in (None, "") else f"path {raw_path!r} is not a string")
    rel = raw_path.strip()
    path = os.path.normpath(rel if os.path.isabs(rel) else os.path.join(manifest_dir, rel))
    return Candidate(rel=rel, path=path, raw_label=_parse_label(label, label_map),
                     start=_parse_time(start, "start"), end=_parse_time(end, "end"), extra=extra,
                     where=f"{unit} {lineno}", lineno=lineno)


def _manifest_kind(path: str, text: str, exts: tuple[str, ...]) -> tuple[str, str | None]:
    """("jsonl" | "json" | "csv" | "vjepa_csv", csv delimiter)."""
    ext = os.path.splitext(path)[1].lower()
    first = next((line.strip() for line in text_lines(text) if line.strip()), "")
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
                         and not any(has_ext(f, exts) for f in fields)
                         and not (m and has_ext(m.group(1), exts)))
    if looks_like_header:
        raise SourceError(f"manifest {path}: CSV header has no 'path' column (columns: {', '.join(fields)})")
    return "vjepa_csv", None


def _rows_vjepa(text: str, manifest_dir: str, label_map, exts, errors: list) -> list[Candidate]:
    out = []
    lines = text_lines(text)
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
            if has_ext(label, exts):
                raise _RowError("expected '<path> <label>' (no label after the path?)")
            out.append(_make_candidate(manifest_dir, path, label, None, None, {}, lineno, "line", label_map))
        except _RowError as exc:
            errors.append((lineno, str(exc)))
    return out


def _rows_csv(text: str, manifest_dir: str, delimiter: str, path: str, label_map,
              errors: list) -> list[Candidate]:
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


def _row_from_object(obj: Any, manifest_dir: str, lineno: int, unit: str, label_map) -> Candidate:
    if not isinstance(obj, dict):
        raise _RowError(f"expected a JSON object, got {type(obj).__name__}")
    if "path" not in obj:
        raise _RowError("no 'path' key")
    extra = {k: v for k, v in obj.items() if k not in _RESERVED_COLUMNS}
    return _make_candidate(manifest_dir, obj["path"], obj.get("label"), obj.get("start"), obj.get("end"),
                           extra, lineno, unit, label_map)


def _rows_jsonl(text: str, manifest_dir: str, label_map, errors: list) -> list[Candidate]:
    out = []
    for lineno, raw in enumerate(text_lines(text), 1):
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


def _rows_json_array(text: str, path: str, manifest_dir: str, label_map, errors: list) -> list[Candidate]:
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


def discover_manifest(path: str, exts, label_map, labelled, seed) -> SourceList:
    text = read_text(path, "manifest")
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

    def skip(c: Candidate, reason: str, detail: str | None = None) -> None:
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
    label_map, kept, bad = resolve_labels(timed, label_map, labelled, f"manifest {path}")
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
        key = (file_id(st, c.path), c.start, c.end)
        if key in first_at:
            skip(c, f"duplicate of {first_at[key]}")
            continue
        first_at[key] = c.where
        items.append(SourceItem(uid=make_uid(c.rel, c.start, c.end), path=c.path, rel=c.rel, label=label,
                                label_name=name, start=c.start, end=c.end, extra=c.extra))
    skipped = [d for _, d in sorted(skips, key=lambda s: s[0])]  # file order (stable within a line)
    if not items:
        detail = f"{total} rows, all skipped ({first_skip(skipped)})" if total else "no rows"
        raise SourceError(f"manifest {path} has no usable rows: {detail}")
    return SourceList(items=order_items(items, seed, skipped), label_map=label_map, skipped=skipped,
                      labelled=bool(labelled), kind=kind, source=path)
