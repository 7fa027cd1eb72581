"""The shard format: what ``vjepa shards build`` writes and what every reader of shards reads.

A shard folder holds ``index.json``, the shards ``<prefix>-NNNNNN.tar`` and, next to each, its
``<prefix>-NNNNNN.stats.json``. A shard is a WebDataset tar: per sample, consecutive members
``<key>.mp4`` (the video), ``<key>.json`` (metadata, REQUIRED_FIELDS at least), ``<key>.cls``
(the integer label, only when labelled) and ``<key>.npz`` (trajectory shards only: the sample's
actions / states / extrinsics, read with ``allow_pickle=False``; see :mod:`.trajectory_build`). The writer is :mod:`.tario`; this module owns the rest:

- the ``.npz`` member: :func:`npz_bytes` writes it (deterministic bytes), :func:`read_npz` is the one
  reader of it (never unpickles);

- the index: :data:`INDEX_FORMAT` / :data:`INDEX_VERSION`, and :func:`read_index`, the one reader
  and validator of ``index.json``;
- the one tar reader, :func:`iter_groups`, and its two faces: :func:`iter_shard` (one local shard,
  parsed) and :func:`iter_url_groups` (a stream of shard URLs: local paths, ``pipe:`` commands,
  remote URLs read by the program webdataset's ``gopen`` runs for them, under a stall bound);
- :func:`read_file_list`: the other dataset on disk, a plain list of video files (a manifest).

What the tar reader guarantees, whoever calls it:

- one pass, front to back, in tarfile's stream mode (works on pipes; compressed tars are read
  transparently); nothing is extracted to disk;
- members are grouped as WebDataset groups them: a run of consecutive members whose base names
  share the part before the first dot is one sample;
- member names are never used as paths: the key is the base name, so absolute or ``../`` names
  point nowhere; such names and non-file members are reported (``odd``), never followed;
- only the first ``.mp4`` / ``.json`` / ``.cls`` / ``.npz`` of a sample is read into memory, any other member
  is skipped unread;
- nothing is unpickled or decoded here: payloads are bytes, parsed (JSON, int) only by callers
  that want them;
- a tar that breaks off ends the iteration with :class:`TarBroken`, after yielding the sample it
  broke in (marked ``truncated`` when the break was inside one of its members);
- no header makes it spin: a member that declares more bytes than the rest of a local file (or a
  sample member above :data:`MAX_MEMBER_BYTES`) breaks the tar at once, and a stream that is read
  on after its end (a pipe, a compressed tar) breaks after :data:`EOF_READS` empty reads.

webdataset's own grouping (``tar_file_iterator`` + ``group_by_keys``) is not used: it drops
non-file members silently, raises on a repeated member, keeps directory prefixes in keys and
lowercases suffixes, and cannot tell where a tar broke; ``vjepa shards inspect`` must report each
of those. Its ``gopen`` scheme table says which program reads a remote URL.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from .items import SourceError, SourceItem
from .sources import discover

INDEX_NAME = "index.json"
INDEX_FORMAT, INDEX_VERSION = "vjepa-shards", 1
SUPPORTED_VERSIONS = (INDEX_VERSION,)
SAMPLE_SUFFIXES = ("mp4", "json", "cls", "npz")  # the members of a sample, in the order they are written
# Fields every sample's .json must carry (what loaders and statistics rely on).
REQUIRED_FIELDS = ("key", "source", "clip_start", "clip_end", "fps", "num_frames", "width", "height",
                   "duration", "label", "label_name")
# What a broken tar (or a failing pipe) raises while it is read.
TAR_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError)
# A sample member (.mp4 / .json / .cls) is read into memory; one declaring more than this is a
# corrupt header, not a video (the builder's clips are megabytes).
MAX_MEMBER_BYTES = 16 << 30
# Empty reads tolerated once a tar stream has ended (tarfile itself reads past the end once or twice).
EOF_READS = 4


class ShardFormatError(Exception):
    """Data on disk that is not a dataset this package reads: no such folder, no index.json, not
    a shard index, an unusable file list. One clear line."""


class TarBroken(Exception):
    """A tar that could not be read to its end; the message says why."""


# ---- the index -------------------------------------------------------------------------------
def shard_name(prefix: str, number: int) -> str:
    return f"{prefix}-{number:06d}.tar"


def stats_name(shard: str) -> str:
    """The statistics file written next to shard ``shard``."""
    return f"{shard[:-4] if shard.endswith('.tar') else shard}.stats.json"


def index_file(path: str | os.PathLike) -> Path | None:
    """The index.json ``path`` names: itself, or the one in the folder ``path``; None otherwise."""
    p = Path(path)
    return p / INDEX_NAME if p.is_dir() else p if p.name == INDEX_NAME else None


def read_index(shard_dir: str | os.PathLike) -> tuple[Path, dict]:
    """(folder, index) of a shard folder (or of its index.json), validated: the index names this
    format and a supported version and lists shards by plain file names inside the folder (an
    index never points a reader elsewhere). Raises ShardFormatError otherwise. The entries' other
    fields and the totals are not checked here (``vjepa shards inspect`` reports each bad one)."""
    d = Path(shard_dir).expanduser()
    if d.name == INDEX_NAME and d.is_file():
        d = d.parent
    if not d.exists():
        raise ShardFormatError(f"{d} does not exist")
    if not d.is_dir():
        raise ShardFormatError(f"{d} is not a folder")
    path = d / INDEX_NAME
    if not path.is_file():
        hint = " (an unfinished build: re-run `vjepa shards build`)" if (d / ".work").is_dir() else ""
        raise ShardFormatError(f"{d} has no index.json; not a shard folder written by "
                               f"`vjepa shards build`{hint}")
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ShardFormatError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise ShardFormatError(f"{path} is not a {INDEX_FORMAT} index (no \"format\": \"{INDEX_FORMAT}\")")
    if index.get("version") not in SUPPORTED_VERSIONS:
        raise ShardFormatError(f"{path} has index version {index.get('version')!r}; this tool reads "
                               f"version {', '.join(map(str, SUPPORTED_VERSIONS))}")
    if not isinstance(index.get("shards"), list):
        raise ShardFormatError(f"{path} has no list of shards")
    for entry in index["shards"]:  # an index never points a reader outside its own folder
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise ShardFormatError(f"{path} lists a shard without a name: {str(entry)[:80]}")
        if (name in ("", ".", "..") or PurePosixPath(name).name != name or Path(name).name != name
                or "\\" in name or "\0" in name):
            raise ShardFormatError(f"{path} names shard {name[:80]!r}, not a plain file name inside {d}")
    return d, index


def shard_paths(shard_dir: Path, index: dict) -> list[Path]:
    """The shards an index lists, in index order."""
    return [shard_dir / entry["name"] for entry in index["shards"]]


# ---- the tar reader --------------------------------------------------------------------------
def iter_groups(fileobj, odd: list[str] | None = None, wanted: tuple[str, ...] = SAMPLE_SUFFIXES,
                skip_over: int | None = None, fold_case: bool = False) -> Iterator[dict]:
    """Yield one dict per sample (run of consecutive members sharing a key) of the tar streamed
    from ``fileobj``: ``{'key', 'suffixes': [every member's suffix, in order], 'mp4'|'json'|'cls':
    bytes}``. Odd members (not files, names with folders) are described in ``odd`` when given.
    A read error yields the sample it happened in, with ``'truncated'`` (True when inside one of
    its members), then raises TarBroken.

    ``wanted``: the suffixes read into memory; ``fold_case``: suffixes are lowercased first (image
    shards: ``.JPG``). ``skip_over``: a wanted member larger than this (but within the tar) is
    skipped, not read, its suffix listed in the group's ``'oversized'``."""
    current: dict | None = None
    in_data = False  # True while a member's bytes are read (an error then truncates ``current``)
    size = _bytes_left(fileobj)
    try:
        with tarfile.open(fileobj=_EndGuard(fileobj), mode="r|*") as tar:
            plain = getattr(tar.fileobj, "comptype", None) == "tar"  # offsets are file offsets
            for member in tar:
                if not member.isfile():
                    if odd is not None:
                        odd.append(f"non-file member {member.name!r}")
                    continue
                path = PurePosixPath(member.name)
                if len(path.parts) != 1 and odd is not None:
                    odd.append(f"member in a subfolder {member.name!r}")
                key, _, suffix = path.name.partition(".")
                if fold_case:
                    suffix = suffix.lower()
                if current is None or current["key"] != key:
                    if current is not None:
                        yield current
                    current = {"key": key, "suffixes": []}
                current["suffixes"].append(suffix)
                if plain and size is not None and member.offset_data + member.size > size:
                    # A header that lies about its size: fail now, not after a long skip.
                    in_data = suffix in wanted and suffix not in current
                    raise tarfile.ReadError(f"member {member.name!r} declares {member.size} bytes, but only "
                                            f"{max(0, size - member.offset_data)} follow in the file")
                if suffix in wanted and suffix not in current:
                    if skip_over is not None and skip_over < member.size <= MAX_MEMBER_BYTES:
                        current.setdefault("oversized", []).append(suffix)
                        continue
                    if member.size > MAX_MEMBER_BYTES:
                        in_data = True
                        raise tarfile.ReadError(f"member {member.name!r} declares {member.size} bytes, more than a "
                                                f"sample member may hold ({MAX_MEMBER_BYTES})")
                    in_data = True
                    current[suffix] = tar.extractfile(member).read()
                    in_data = False
    except TAR_ERRORS as exc:
        if current is not None:
            current["truncated"] = in_data
            yield current
        raise TarBroken(str(exc) or type(exc).__name__) from None
    if current is not None:
        yield current


def _bytes_left(fileobj) -> int | None:
    """Bytes from the current position to the end of a seekable ``fileobj``; None for pipes."""
    try:
        if not fileobj.seekable():
            return None
        here = fileobj.tell()
        end = fileobj.seek(0, os.SEEK_END)
        fileobj.seek(here)
        return end - here
    except (AttributeError, OSError, ValueError):
        return None


class _EndGuard:
    """The read side of a tar stream, failing once it keeps being read after its end. tarfile skips
    a member in stream mode by reading block after block; a header that declares more bytes than
    the stream holds (100 GB in a 1 MB shard) would otherwise spin through millions of empty reads."""

    def __init__(self, fileobj):
        self._fileobj, self._empty = fileobj, 0

    def read(self, size: int = -1) -> bytes:
        data = self._fileobj.read(size)
        if not data and size:
            self._empty += 1
            if self._empty > EOF_READS:
                raise EOFError("the tar ends inside a member: its header declares more bytes than the tar holds")
        return data


def iter_shard(path: str | os.PathLike) -> Iterator[dict]:
    """Yield one dict per sample of the local shard ``path``: {'key', 'mp4': bytes, 'json': dict,
    'cls': int | None, 'npz': bytes | None, 'members': [suffixes]}. A broken tar raises TarBroken (the sample it broke
    in is not yielded)."""
    with open(path, "rb") as fh:
        for group in iter_groups(fh):
            if "truncated" in group:
                continue  # TarBroken follows
            yield {"key": group["key"], "mp4": group.get("mp4"),
                   "json": json.loads(group["json"]) if "json" in group else None,
                   "cls": int(group["cls"]) if "cls" in group else None, "npz": group.get("npz"),
                   "members": group["suffixes"]}


def _open_url(url: str):
    """A binary stream of a shard URL, after webdataset's ``GOPEN_REWRITE``: a local path is opened
    directly; ``pipe:<command>`` and the remote schemes webdataset reads with a program (curl for http(s) / sftp / ftps / scp / hf,
    gsutil, ais) as a bounded :class:`~.pipe_url.PipeCommand`; ``file:`` and schemes with a handler of the user's own through webdataset's gopen."""
    from webdataset.gopen import gopen, rewrite_url

    from .pipe_url import PipeCommand, remote_command

    rewritten = rewrite_url(url)  # the URL itself unless GOPEN_REWRITE is set
    if not urlparse(rewritten).scheme:
        return open(rewritten, "rb")
    if rewritten.startswith("pipe:"):
        return PipeCommand(rewritten[len("pipe:"):])
    remote = remote_command(rewritten)
    if remote is not None:  # the program gopen would run, with the stall bound, no shell
        command, ok_status, stdin = remote
        return PipeCommand(command, ok_status=ok_status, stdin=stdin, target=rewritten)
    return gopen(url, "rb")  # rewrites the URL itself


def iter_url_groups(urls: Iterable[str], on_error: Callable[[str, Exception], None],
                    wanted: tuple[str, ...] = SAMPLE_SUFFIXES, skip_over: int | None = None,
                    fold_case: bool = False) -> Iterator[dict]:
    """iter_groups over each URL in turn (``wanted``, ``skip_over``, ``fold_case`` as there). A URL that cannot be
    opened or read is reported to ``on_error(url, exc)`` and the next one is read; the groups read
    before a break are yielded."""
    for url in urls:
        try:
            stream = _open_url(url)
        except (OSError, ValueError) as exc:
            on_error(url, exc)
            continue
        try:
            yield from iter_groups(stream, wanted=wanted, skip_over=skip_over, fold_case=fold_case)
            finish = getattr(stream, "finish", None)  # a pipe: command's tail and exit status
            if finish is not None:
                finish()
        except TarBroken as exc:
            why = getattr(stream, "exit_problem", lambda: None)()  # a failed command: say so
            on_error(url, TarBroken(f"{exc} ({why})") if why else exc)
        except OSError as exc:  # the command failed after its shard was read
            on_error(url, exc)
        finally:
            with suppress(*TAR_ERRORS):  # gopen's pipes check their exit status while read
                stream.close()


# ---- trajectory arrays: the .npz member ------------------------------------------------------
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def npz_bytes(arrays: dict) -> bytes:
    """An ``.npz`` that ``np.load(allow_pickle=False)`` reads, byte-identical for identical arrays
    (``np.savez`` stamps the current time into the zip)."""
    import numpy as np

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME), member.getvalue())
    return buf.getvalue()


def read_npz(data: bytes) -> dict:
    """The arrays (name -> numpy array) of a sample's ``.npz`` member (never unpickled); ValueError
    when it is not one."""
    import numpy as np

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"not a trajectory npz: {exc}") from None


# ---- plain file lists ------------------------------------------------------------------------
def read_file_list(path: str | os.PathLike) -> list[SourceItem]:
    """The videos a plain file list names (official V-JEPA CSV ``path label``, or any manifest
    the shard builder reads), sorted by their path as written. Raises ShardFormatError."""
    try:
        found = discover(path, seed=0)
    except SourceError as exc:
        raise ShardFormatError(str(exc)) from None
    return sorted(found.items, key=lambda i: i.rel)


__all__ = ["INDEX_FORMAT", "INDEX_NAME", "INDEX_VERSION", "REQUIRED_FIELDS", "SAMPLE_SUFFIXES",
           "ShardFormatError", "TarBroken", "index_file", "iter_groups", "iter_shard", "iter_url_groups",
           "npz_bytes", "read_file_list", "read_index", "read_npz", "shard_name", "shard_paths", "stats_name"]
