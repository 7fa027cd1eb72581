"""The shard writer: deterministic, atomic WebDataset tar shards (the format and the one reader
are in :mod:`.format`).

A shard is written to a temporary file and renamed into place, so it is either whole or absent.
Members carry fixed ownership and mtime, so the same samples give byte-identical shards.
Members per sample, in this order: ``<key>.mp4``, ``<key>.json``, ``<key>.cls`` (if labelled),
``<key>.npz`` (trajectories: actions / states / extrinsics, see :mod:`.trajectory_build`).
Nothing pickled is ever written.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass

from ..utils.atomic import atomic_path


@dataclass
class ShardSample:
    key: str
    video_path: str  # staged file streamed into the tar (never read whole)
    meta: dict
    label: int | None = None
    npz_path: str | None = None  # trajectories: the staged arrays file


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_shard(path: str | os.PathLike, samples: Iterable[ShardSample]) -> dict:
    """Write ``samples`` to the tar at ``path`` atomically; returns {samples, bytes}."""
    count = 0
    with atomic_path(path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for s in samples:
                size = os.path.getsize(s.video_path)
                with open(s.video_path, "rb") as fh:
                    tar.addfile(_info(f"{s.key}.mp4", size), fh)
                meta = json.dumps(s.meta, sort_keys=True, ensure_ascii=False).encode()
                tar.addfile(_info(f"{s.key}.json", len(meta)), io.BytesIO(meta))
                if s.label is not None:
                    cls = str(int(s.label)).encode()
                    tar.addfile(_info(f"{s.key}.cls", len(cls)), io.BytesIO(cls))
                if s.npz_path is not None:
                    with open(s.npz_path, "rb") as fh:
                        tar.addfile(_info(f"{s.key}.npz", os.path.getsize(s.npz_path)), fh)
                count += 1
    return {"samples": count, "bytes": os.path.getsize(path)}
