"""Label maps of the shard builder: label files (JSON or one name per line), label maps given as
dicts, and the resolution of each input's raw label (id or name) against the map."""

from __future__ import annotations

import json
import os
from typing import Any

from .items import Candidate, SourceError, nfc, read_text, text_lines


def check_label_map(mapping: Any, what: str) -> dict[str, int]:
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
        key = nfc(name)
        if key in out:
            raise SourceError(f"{what}: label {name!r} appears twice")
        if idx in by_id:
            raise SourceError(f"{what}: labels {by_id[idx]!r} and {name!r} share id {idx}")
        out[key] = idx
        by_id[idx] = name
    return out


def read_label_file(path: str | os.PathLike) -> dict[str, int]:
    """Read a label map: JSON ``{name: id}`` (or a ``.json`` list of names), or text with one name
    per line (id = index among the non-blank lines, from 0). Names are NFC-normalised."""
    p = os.fspath(path)
    text = read_text(p, "label file")
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
        return check_label_map(obj, f"label file {p}")
    return _names_to_map([line.strip() for line in text_lines(text) if line.strip()], p)


def _names_to_map(names: list[str], path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in names:
        if nfc(name) in out:
            raise SourceError(f"label file {path}: label {name!r} appears twice")
        out[nfc(name)] = len(out)
    return check_label_map(out, f"label file {path}")


_Kept = tuple[Candidate, "int | None", "str | None"]


def resolve_labels(cands: list[Candidate], label_map: dict[str, int] | None, labelled: bool,
                   what: str) -> tuple[dict[str, int], list[_Kept], list[tuple[Candidate, str]]]:
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
