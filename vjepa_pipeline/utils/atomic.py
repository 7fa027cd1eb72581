"""Atomic file writes: write to a temporary file in the same directory, fsync, then rename, so a
reader (or a resumed job) only ever sees a whole file or none. ``jsonable`` makes any record
(tensors, numpy values, NaN) plain JSON for every JSON / JSONL writer."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_json(path: str | os.PathLike, obj, *, indent: int | None = None, sort_keys: bool = False,
               ensure_ascii: bool = True, allow_nan: bool = True, default=None, newline: bool = True) -> Path:
    """Write ``obj`` as a JSON file atomically; returns the path. The keywords are ``json.dumps``'s
    (same defaults); ``newline`` ends the file with a line break."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii, allow_nan=allow_nan,
                      default=default)
    atomic_write_text(path, text + "\n" if newline else text)
    return Path(path)


def jsonable(x: Any) -> Any:
    """Plain JSON types: NaN/inf -> None, numpy scalars/arrays -> Python, tuples -> lists, keys -> str."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    tolist = getattr(x, "tolist", None)  # numpy arrays/scalars, torch tensors
    if callable(tolist):
        return jsonable(tolist())
    if isinstance(x, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in x]
    item = getattr(x, "item", None)
    if callable(item):
        return jsonable(item())
    try:
        return jsonable(float(x))
    except (TypeError, ValueError):
        return str(x)
