"""Where compressed samples come from: WebDataset shards (local paths, brace patterns, ``pipe:``
URLs for object stores) or a plain file list (official V-JEPA CSV ``path label``).

A compressed sample is a dict ``{"key", "mp4": bytes, "meta": dict | None, "label": int | None}`` (from
shards also ``"npz": bytes | None``, a trajectory's arrays);
decoding happens later, after shuffling.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

from ..errors import LoaderError
from ..shards.format import (ShardFormatError, index_file, iter_url_groups, read_file_list, read_index,
                             shard_paths)


def expand_urls(path: str | os.PathLike) -> tuple[list[str], int | None]:
    """Shard URLs for ``path`` and the number of samples if known.

    ``path`` may be a shard folder or its index.json (from ``vjepa shards build``), a brace
    pattern such as ``/data/k400/shard-{000000..000099}.tar`` or
    ``pipe:aws s3 cp s3://bucket/shard-{000000..000099}.tar -``, or a single tar.
    """
    import braceexpand

    text = str(path)
    if index_file(text) is not None:
        try:
            shard_dir, index = read_index(text)
        except ShardFormatError as exc:
            raise LoaderError(f"{exc}; or give a shard URL pattern") from None
        totals = index.get("totals")
        samples = totals.get("samples") if isinstance(totals, dict) else None
        # the count is only a hint (epoch length); a hand-edited index without it still streams
        known = int(samples) if isinstance(samples, int) and not isinstance(samples, bool) and samples >= 0 else None
        return [str(p) for p in shard_paths(shard_dir, index)], known
    urls = list(braceexpand.braceexpand(text))
    if not urlparse(text).scheme:  # local files are checked here; pipe: and remote URLs when read
        missing = [u for u in urls if not Path(u).exists()]
        if missing:
            raise LoaderError(f"{len(missing)} of {len(urls)} shards do not exist, e.g. {missing[0]}")
    return urls, None


def split_for(urls: list[str], rank: int, world_size: int, role: int, num_roles: int,
              allow_shared: bool) -> list[str]:
    """The explicit node split then worker split of the shard list. Every (rank, worker) needs at
    least one shard of its own, else workers would starve or duplicate each other."""
    need = world_size * num_roles
    if len(urls) < need:
        if not allow_shared:
            raise LoaderError(
                f"{len(urls)} shards for {world_size} ranks x {num_roles} workers = {need} readers: every reader "
                f"needs its own shard. Build more, smaller shards (vjepa shards build --samples-per-shard), lower "
                f"data.num_workers, or set data.allow_shared_shards=true to let readers resample all shards")
        return urls
    return urls[rank::world_size][role::num_roles]


def cycle_samples(urls: list, rng: random.Random, read: Callable[..., Iterator[dict]],
                  on_error: Callable[[str], None], what: str = "shard") -> Iterator[dict]:
    """Endless resampling of ``urls`` (shards, or file-list items) read by ``read(urls, on_error,
    on_unreadable)`` (:func:`tar_samples` or :func:`file_samples`): a fresh random permutation per
    pass, so within a pass no shard repeats (duplicates only come from wrapping around). A pass
    that yields no sample at all raises LoaderError naming what failed: resampling the same dead
    shards would never end."""
    reasons: dict[str, int] = {}  # of the current pass
    unreadable: list[str] = []

    def fail(reason: str) -> None:
        reasons[reason] = reasons.get(reason, 0) + 1
        on_error(reason)

    def unreadable_source(where: str, exc: BaseException) -> None:
        where = str(where)
        name = where if where.startswith("pipe:") or "://" in where else Path(where).name
        unreadable.append(f"{name} ({_one_line(exc)})")

    while True:
        order = list(urls)
        rng.shuffle(order)
        reasons.clear()
        unreadable.clear()
        got = False
        for sample in read(iter(order), fail, unreadable_source):
            got = True
            yield sample
        if not got:
            counts = ", ".join(f"{r} x{n}" for r, n in sorted(reasons.items())) or "no samples in them"
            examples = "; ".join(unreadable[:3]) + ("; ..." if len(unreadable) > 3 else "")
            what_n = f"{len(order)} {what}{'' if len(order) == 1 else 's'}"
            raise LoaderError(f"no sample could be read from any of this reader's {what_n} ({counts})"
                              f"{': ' + examples if examples else ''}. Check the data with `vjepa shards inspect`")


def _one_line(exc: BaseException) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else text or type(exc).__name__


def tar_samples(urls: Iterator[str], on_error: Callable[[str], None],
                on_unreadable: Callable[[str, BaseException], None] | None = None) -> Iterator[dict]:
    """Compressed samples from a stream of shard URLs (local paths, ``pipe:`` commands, remote
    URLs; the shard format's tar reader). Broken tars or members are reported to ``on_error`` and
    skipped; a shard that cannot be opened or read to its end also to ``on_unreadable(url, exc)``."""
    def broken(url: str, exc: BaseException) -> None:
        if on_unreadable is not None:
            on_unreadable(url, exc)
        on_error("unreadable shard")

    for s in iter_url_groups(urls, broken):
        if "mp4" not in s or "truncated" in s:  # the tar broke inside or right after this sample
            on_error("incomplete sample")
            continue
        try:
            meta = json.loads(s["json"]) if "json" in s else None
            label = int(s["cls"]) if "cls" in s else (meta or {}).get("label")
        except (ValueError, TypeError):
            on_error("bad metadata")
            continue
        yield {"key": s["key"], "mp4": s["mp4"], "meta": meta, "label": label, "npz": s.get("npz")}


def file_list_items(path: str | os.PathLike) -> list[dict]:
    """Items of a plain file list (official V-JEPA CSV ``path label``, or any manifest the shard
    builder reads): [{"key", "path", "label"}], in file order."""
    try:
        items = read_file_list(path)
    except ShardFormatError as exc:
        raise LoaderError(str(exc)) from None
    if not items:
        raise LoaderError(f"{path}: no usable videos listed")
    return [{"key": i.uid, "path": i.path, "label": i.label} for i in items]


def file_samples(items: Iterator[dict], on_error: Callable[[str], None],
                 on_unreadable: Callable[[str, BaseException], None] | None = None,
                 member: str = "mp4") -> Iterator[dict]:
    """Compressed samples read from files on disk (no metadata: the decoder counts frames), the bytes
    under ``member`` (``"mp4"`` for videos, ``"image"`` for still images)."""
    for item in items:
        try:
            data = Path(item["path"]).read_bytes()
        except OSError as exc:
            if on_unreadable is not None:
                on_unreadable(item["path"], exc)
            on_error("unreadable file")
            continue
        yield {"key": item["key"], member: data, "meta": None, "label": item["label"]}


def shuffle_buffer(samples: Iterator[dict], size: int, rng: random.Random) -> Iterator[dict]:
    """Shuffle compressed samples through a buffer of ``size`` (memory ~ size x sample bytes)."""
    buf: list[dict] = []
    for s in samples:
        if len(buf) < size:
            buf.append(s)
            continue
        i = rng.randrange(size)
        buf[i], s = s, buf[i]
        yield s
    rng.shuffle(buf)
    yield from buf
