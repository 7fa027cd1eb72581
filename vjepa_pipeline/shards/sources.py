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

The walk is :mod:`.discovery`, the manifest formats :mod:`.manifests`, label files and maps
:mod:`.labels`; the item types, ids and the order they share are in :mod:`.items`.

Relative manifest paths are resolved against the manifest's directory. Inputs that cannot be used
(missing files, duplicates, unknown labels, unparseable lines, bad time ranges) are listed in
``SourceList.skipped`` with a reason and the rest are kept; mistakes that leave nothing to build
raise :class:`SourceError` (one line; the CLI exits 2). Nothing here opens a video or shells out.

Determinism: the item order is the items sorted by (NFC-normalised relative path, start, end),
shuffled with ``random.Random(seed)`` so classes mix across shards; ``uid`` depends only on the
normalised relative path and the clip range, so it is the same on every machine.
"""

from __future__ import annotations

import os
from typing import Sequence

from .discovery import discover_directory
from .items import SourceError, SourceList, has_ext
from .labels import check_label_map, read_label_file
from .manifests import discover_manifest

# Containers that carry video (probing judges the content; a file without a video stream is a listed
# skip). Other files in a source folder are listed in the index as ignored, with their extension.
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".qt", ".m4v", ".mpg", ".mpeg", ".mpe", ".m1v",
                    ".m2v", ".mp2", ".vob", ".wmv", ".asf", ".flv", ".f4v", ".ts", ".mts", ".m2ts", ".m2t",
                    ".tod", ".mod", ".3gp", ".3g2", ".ogv", ".ogm", ".dv", ".dif", ".rm", ".rmvb", ".mxf",
                    ".divx", ".xvid", ".nut", ".y4m", ".mj2", ".gif")


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
        label_map = (check_label_map(labels, "label map") if isinstance(labels, dict)
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
        return discover_directory(src, exts, label_map, labelled, seed)
    if not os.path.isfile(src):
        raise SourceError(f"source {src} is neither a directory nor a manifest file")
    if has_ext(os.path.basename(src), exts):
        raise SourceError(f"source {src} is a video; give its directory or a manifest listing it")
    return discover_manifest(src, exts, label_map, labelled, seed)


__all__ = ["VIDEO_EXTENSIONS", "discover"]
