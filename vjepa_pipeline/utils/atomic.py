"""Atomic file writes: write to a temporary file in the same directory, fsync, then rename, so a
reader (or a resumed job) only ever sees a whole file or none. The file gets the mode a plain
``open(path, "w")`` would give it (0666 less the process umask: 0644 under the usual umask 022),
not mkstemp's private 0600, so teammates on a shared cluster can read shards, indexes, exports
and run directories. ``jsonable`` makes any record (tensors, numpy values, NaN) plain JSON for
every JSON / JSONL writer."""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the kernel tells (Linux: the ``Umask:``
    line of /proc/self/status); elsewhere by setting and restoring it under a lock, with a
    restrictive value in between, so a file another thread creates meanwhile is at worst private."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o077)
        os.umask(old)
    return old


def file_mode() -> int:
    """The mode a newly created regular file gets: 0666 less the umask."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically, with the
    mode of a newly created file (0666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())  # mkstemp made it 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(folder: str | os.PathLike, name: str) -> int:
    """Remove the temporary files (``.<name>.*.tmp``) that a process killed inside ``atomic_path``
    for ``folder/name`` left behind (SIGKILL runs no clean-up); ``name`` itself stays. Only the
    writer of ``name`` should call this, when no other process writes it. Returns the count."""
    removed = 0
    for path in Path(folder).glob(f".{glob.escape(name)}.*.tmp"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


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
