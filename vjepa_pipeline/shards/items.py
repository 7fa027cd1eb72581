"""Shard-builder inputs, the shared part: the item types, stable ids, text reading and the
deterministic order (see :mod:`.sources` for what a source may be).

A manifest row or a found video file is first a :class:`Candidate`; the checks of
:mod:`.discovery` / :mod:`.manifests` and the labels of :mod:`.labels` turn it into a
:class:`SourceItem` or a skip.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any


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
    # directory mode: non-hidden files whose extension is not a video extension ({"path", "reason"})
    ignored: list[dict] = field(default_factory=list)
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
        if self.ignored:
            parts.append(f"{len(self.ignored)} other files ignored")
        return ", ".join(parts)


# ----------------------------------------------------------------------------- ids and text

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


def nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def printable(s: str) -> str:
    """A path that may hold undecodable bytes (surrogate escapes), made safe to print/serialise."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def is_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def has_ext(name: str, exts: tuple[str, ...]) -> bool:
    low = name.lower()
    return any(low.endswith(ext) and len(low) > len(ext) for ext in exts)


def read_text(path: str, what: str) -> str:
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


def text_lines(text: str) -> list[str]:
    """Physical lines; unlike str.splitlines, U+2028 and friends inside file names do not split."""
    return [line.rstrip("\r") for line in text.split("\n")]


# ----------------------------------------------------------------------------- candidates and ordering

@dataclass
class Candidate:
    rel: str
    path: str  # absolute
    raw_label: int | str | None = None  # int id or (NFC) name
    start: float | None = None
    end: float | None = None
    extra: dict = field(default_factory=dict)
    where: str = ""  # "line 3" / "entry 3" (manifests) or the rel path (directories)
    lineno: int = 0  # manifests: line (or array entry) number, to report skips in file order
    inode: tuple[int, int] | None = None  # (st_dev, st_ino) once checked


def file_id(st: os.stat_result, path: str) -> tuple:
    # Some network/FUSE filesystems report 0 inodes; fall back to the normalised path there.
    return (st.st_dev, st.st_ino) if st.st_ino else ("path", os.path.normcase(path))


def _sort_key(item: SourceItem):
    return (normalise_rel(item.rel), -math.inf if item.start is None else item.start,
            math.inf if item.end is None else item.end, item.path)


def order_items(items: list[SourceItem], seed: int, skipped: list[dict]) -> list[SourceItem]:
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


def first_skip(skipped: list[dict]) -> str:
    return f"first: {skipped[0]['path']}: {skipped[0]['reason']}" if skipped else ""
