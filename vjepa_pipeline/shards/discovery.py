"""Directory sources of the shard builder: a sorted, loop-safe walk of a folder of videos;
folder-per-class layouts (``root/<class>/<video>``) are labelled by folder name."""

from __future__ import annotations

import os
from typing import Any

from .items import (Candidate, SourceError, SourceItem, SourceList, file_id, first_skip, has_ext, is_utf8,
                    make_uid, nfc, order_items, printable)
from .labels import resolve_labels


def _walk(root: str, exts: tuple[str, ...], skipped: list[dict]):
    """Sorted depth-first walk.

    Returns ([(rel parts, abs path, stat result or skip reason)], [ignored files: path, reason])."""
    videos: list[tuple[tuple[str, ...], str, Any]] = []
    ignored: list[dict] = []
    st = os.stat(root)
    visited = {(st.st_dev, st.st_ino)}
    stack: list[tuple[str, tuple[str, ...]]] = [(root, ())]
    while stack:
        directory, parts = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skipped.append({"path": printable(directory),
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
                    skipped.append({"path": printable(entry.path),
                                    "reason": f"unreadable directory: {exc.strerror or exc}"})
                    continue
                key = (dst.st_dev, dst.st_ino)
                if key in visited:
                    skipped.append({"path": printable(entry.path),
                                    "reason": "directory already visited (symlink loop or repeated link)"})
                    continue
                visited.add(key)
                subdirs.append((entry.path, parts + (entry.name,)))
                continue
            if not has_ext(entry.name, exts):
                ext = os.path.splitext(entry.name)[1].lower() or "no extension"
                ignored.append({"path": printable("/".join(parts + (entry.name,))),
                                "reason": f"not a video file extension ({ext})"})
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


def discover_directory(root: str, exts, label_map, labelled, seed) -> SourceList:
    skipped: list[dict] = []
    videos, ignored = _walk(root, exts, skipped)
    if not videos:
        n = len(ignored)
        raise SourceError(f"no videos found under {root} (searched {', '.join(exts)}; "
                          f"{n} other file{'s' if n != 1 else ''} ignored)")
    if labelled is None:
        labelled = {len(parts) for parts, _, _ in videos} == {2}
    if labelled and label_map is None:  # ids from every class folder holding a video file, readable or not
        names = {nfc(parts[0]) for parts, _, _ in videos if len(parts) >= 2 and is_utf8(parts[0])}
        label_map = {name: i for i, name in enumerate(sorted(names))}
    cands: list[Candidate] = []
    for parts, path, info in videos:
        rel = "/".join(parts)
        if not is_utf8(rel):
            skipped.append({"path": printable(path), "reason": "file name is not valid UTF-8"})
            continue
        if isinstance(info, str):
            skipped.append({"path": path, "reason": info})
            continue
        if labelled and len(parts) < 2:
            skipped.append({"path": path, "reason": "no class folder"})
            continue
        cands.append(Candidate(rel=rel, path=path, raw_label=nfc(parts[0]) if labelled else None,
                               where=rel, inode=file_id(info, path)))
    label_map, kept, bad = resolve_labels(cands, label_map, labelled, f"directory {root}")
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
                          f"all skipped ({first_skip(skipped)})")
    return SourceList(items=order_items(items, seed, skipped), label_map=label_map, skipped=skipped,
                      ignored=ignored, labelled=bool(labelled), kind="directory", source=root)
