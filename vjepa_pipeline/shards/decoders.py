"""Frame decoding from in-memory video bytes: one interface, three backends.

``get_decoder(name)`` returns a :class:`VideoDecoder` whose ``decode(data, indices, num_frames)``
gives a ``uint8`` array ``(len(indices), H, W, 3)`` in RGB for the requested frame indices (any
order, repeats allowed). Backends:

- ``decord`` (default): ``decord.VideoReader`` on an ``io.BytesIO`` + ``get_batch``. Unmaintained
  (known to hang when a container over-reports its frame count), so indices are clamped with the
  true count *before* decord sees them, and files with edit-list pre-roll frames (negative timestamps:
  decord counts and returns those frames, the other backends drop them, and its sequential and
  seeking paths then disagree with each other) are rejected with a :class:`DecodeError`. It also
  returns wrong frames for most seeks in MPEG-TS; shards are MP4, where it is exact.
- ``torchcodec``: ``VideoDecoder(..., seek_mode="exact").get_frames_at`` (keep torch at one
  intra-op thread in workers, see :class:`TorchCodecDecoder`).
- ``pyav``: demuxes the packet table once (no decoding) to map presentation timestamps to frame
  indices, seeks to the keyframe at or before the first wanted frame, decodes forward and stops
  after the last wanted one; falls back to decoding from the start when seeking is not exact.

All three use FFmpeg's decoders and swscale's default YUV->RGB conversion; on 8-bit H.264 (the
shard format) they return bit-identical frames. Each decodes on one thread: parallelism comes
from many loader workers. Failures become :class:`DecodeError` with a short ``reason`` for
per-reason counters; a backend that cannot be loaded raises :class:`DecoderUnavailable`.

Frame indices follow presentation order over the frames a normal player shows (edit-list
pre-roll packets excluded), the same definition as the packet count stored in shard metadata.
"""

from __future__ import annotations

import io
import traceback
from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEFAULT_DECODER",
    "REASONS",
    "DecodeError",
    "DecoderUnavailable",
    "DecordDecoder",
    "PyAVDecoder",
    "TorchCodecDecoder",
    "VideoDecoder",
    "available_decoders",
    "get_decoder",
]

DEFAULT_DECODER = "decord"

# Short categories carried in DecodeError.reason (stable strings: used as counter keys).
UNREADABLE = "unreadable"  # empty input, not a container, header cannot be parsed
NO_VIDEO = "no video stream"
NO_FRAMES = "no frames"
DECODER_ERROR = "decoder error"  # opened, but packets fail to demux/decode (truncated, corrupt)
REASONS = (UNREADABLE, NO_VIDEO, NO_FRAMES, DECODER_ERROR)


class DecodeError(Exception):
    """A sample whose frames cannot be decoded. ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = "", backend: str | None = None):
        prefix = f"[{backend}] " if backend else ""
        super().__init__(f"{prefix}{reason}: {detail}" if detail else f"{prefix}{reason}")
        self.reason, self.detail, self.backend = reason, detail, backend


class DecoderUnavailable(RuntimeError):
    """The backend is not installed or its native libraries cannot be loaded."""


_INSTALL_HINTS = {
    "decord": "install it with `pip install decord` (binary wheels for x86_64 Linux/Windows/macOS "
              "bundle their own FFmpeg; other platforms must build it from source)",
    "torchcodec": "install it with `pip install torchcodec` (matching your torch version) and provide the "
                  "FFmpeg shared libraries it links against (a major version your torchcodec release "
                  "supports), e.g. FFmpeg 5 on Debian/Ubuntu: `apt-get install libavcodec59 libavformat59 "
                  "libavutil57 libswscale6 libavdevice59 libavfilter8 libswresample4`, "
                  "or `conda install ffmpeg`",
    "pyav": "install it with `pip install av` (the wheels bundle FFmpeg)",
}


def _check_data(data, backend: str) -> bytes:
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise TypeError(f"expected video bytes, got {type(data).__name__}")
    if not data:
        raise DecodeError(UNREADABLE, "empty input", backend)
    return data


def _check_indices(indices: Sequence[int]) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError(f"indices must be a non-empty 1-D sequence of ints, got shape {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer):
        if np.issubdtype(idx.dtype, np.floating) and np.all(idx == np.round(idx)):
            idx = idx.astype(np.int64)
        else:
            raise ValueError(f"indices must be integers, got dtype {idx.dtype}")
    return idx.astype(np.int64, copy=False)


def _clamp(idx: np.ndarray, available: int, num_frames: int | None, backend: str) -> np.ndarray:
    """Clamp to [0, n-1] with n the stored count when given (never more than the backend found)."""
    if num_frames is not None:
        num_frames = int(num_frames)
        if num_frames < 1:
            raise DecodeError(NO_FRAMES, f"num_frames={num_frames}", backend)
        limit = min(num_frames, available)
    else:
        limit = available
    if limit < 1:
        raise DecodeError(NO_FRAMES, "no decodable frames", backend)
    return np.clip(idx, 0, limit - 1)


class VideoDecoder:
    """Decode selected frames of an in-memory video. Stateless; safe to share across calls."""

    name: str = "base"

    def decode(self, data: bytes, indices: Sequence[int], num_frames: int | None = None) -> np.ndarray:
        """uint8 array (len(indices), H, W, 3) RGB for the given frame indices (may repeat, any order).

        Decodes from the in-memory bytes (never temp files). If ``num_frames`` (the true count
        stored in shard metadata) is given, indices are clamped to [0, num_frames-1] (and never past
        the last frame the backend can find) without trusting the container's own frame count; if
        None, the backend counts frames. Negative indices clamp to 0. Raises DecodeError."""
        raise NotImplementedError

    def count_frames(self, data: bytes) -> int:
        """Number of frames in the first video stream, from the packet table (not the header)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _release(exc: DecodeError) -> None:
    """Let go of the frames a DecodeError's traceback holds: the backend's frames (and ours) keep the
    decoder, with its copy of the video, alive for as long as the error is kept (a sample's failure
    record, a log)."""
    exc.__context__ = None
    traceback.clear_frames(exc.__traceback__)


class _RandomAccessDecoder(VideoDecoder):
    """A backend that opens a video from bytes, counts its frames and fetches a sorted list of frame
    indices in one call (decord, torchcodec): the checks, clamping and reordering around those three
    steps are the same for both. Subclasses give ``_open(data)``, ``_count(handle)`` and
    ``_fetch(handle, indices) -> uint8 (N, H, W, 3)`` (raising DecodeError for a backend failure)."""

    def count_frames(self, data: bytes) -> int:
        handle = self._open(_check_data(data, self.name))
        try:
            return self._count(handle)
        except DecodeError as exc:
            _release(exc)
            raise
        finally:
            del handle

    def decode(self, data: bytes, indices: Sequence[int], num_frames: int | None = None) -> np.ndarray:
        idx = _check_indices(indices)
        data = _check_data(data, self.name)
        if num_frames is not None and int(num_frames) < 1:
            raise DecodeError(NO_FRAMES, f"num_frames={num_frames}", self.name)
        handle = self._open(data)
        try:
            clamped = _clamp(idx, self._count(handle), num_frames, self.name)
            uniq, inverse = np.unique(clamped, return_inverse=True)
            frames = self._fetch(handle, uniq.tolist())
        except DecodeError as exc:
            _release(exc)
            raise
        finally:
            del handle
        return _arrange(frames, uniq, inverse, clamped, self.name)


# --------------------------------------------------------------------------------------- decord


def _import_decord():
    try:
        import decord
    except Exception as exc:  # ImportError, or OSError from the bundled libraries
        raise DecoderUnavailable(f"decord cannot be imported ({type(exc).__name__}: {exc}); "
                                 f"{_INSTALL_HINTS['decord']}") from exc
    return decord


class _NativeBridge:
    """Run decord calls with the 'native' bridge (decord NDArray out) and restore the caller's
    bridge afterwards, so a process that set e.g. the torch bridge is left as it was."""

    def __init__(self, decord):
        self._bridge = decord.bridge
        self._prev = None

    def __enter__(self):
        current = getattr(self._bridge, "_CURRENT_BRIDGE", None)
        self._prev = getattr(current, "type", None) if current is not None else None
        if self._prev != "native":
            self._bridge.set_bridge("native")
        return self

    def __exit__(self, *exc):
        if self._prev is None:  # this thread had no bridge set: unset it again
            current = getattr(self._bridge, "_CURRENT_BRIDGE", None)
            if current is not None and hasattr(current, "type"):
                del current.type
        elif self._prev != "native":
            self._bridge.set_bridge(self._prev)
        return False


def _to_numpy(arr) -> np.ndarray:
    if hasattr(arr, "asnumpy"):  # decord NDArray
        return arr.asnumpy()
    if hasattr(arr, "numpy"):  # torch tensor (another bridge slipped through)
        return arr.numpy()
    return np.asarray(arr)


def _decord_reason(exc: BaseException) -> str:
    msg = str(exc)
    if "video stream" in msg:
        return NO_VIDEO
    if "Error reading" in msg or "ERROR opening" in msg:
        return UNREADABLE
    if "Invalid frame count" in msg:
        return NO_FRAMES
    return DECODER_ERROR


class DecordDecoder(_RandomAccessDecoder):
    name = "decord"

    def __init__(self):
        self._decord = _import_decord()

    def _open(self, data: bytes):
        decord = self._decord
        try:
            return decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
        except MemoryError:
            raise
        except Exception as exc:  # decord raises DECORDError (an Exception), RuntimeError, AssertionError
            raise DecodeError(_decord_reason(exc), _short(exc), self.name) from None

    def _count(self, vr) -> int:
        """Frames decord can address: the smaller of its header-based length and its packet table.
        Rejects files with edit-list pre-roll (negative timestamps), which decord mis-indexes."""
        n = len(vr)
        get_pts = getattr(self._decord.video_reader, "_CAPI_VideoReaderGetFramePTS", None)
        if get_pts is not None:
            try:
                pts = get_pts(vr._handle).asnumpy()
            except Exception as exc:
                raise DecodeError(DECODER_ERROR, _short(exc), self.name) from None
            if pts.ndim == 2 and len(pts):
                if float(pts[:, 0].min()) < 0:
                    raise DecodeError(DECODER_ERROR, "edit-list pre-roll frames (negative timestamps): "
                                      "decord mis-indexes such files; use the pyav or torchcodec decoder",
                                      self.name)
                n = min(n, len(pts))
        if n < 1:
            raise DecodeError(NO_FRAMES, "no frames", self.name)
        return n

    def _fetch(self, vr, indices: list[int]) -> np.ndarray:
        try:
            with _NativeBridge(self._decord):
                batch = vr.get_batch(indices)
            return _to_numpy(batch)
        except MemoryError:
            raise
        except Exception as exc:  # DECORDError, IndexError, ...
            raise DecodeError(DECODER_ERROR, _short(exc), self.name) from None


def _arrange(frames: np.ndarray, uniq: np.ndarray, inverse: np.ndarray, clamped: np.ndarray,
             backend: str) -> np.ndarray:
    """Frames for sorted unique indices -> frames in the requested order (repeats copied)."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != len(uniq) or frames.shape[-1] != 3:
        raise DecodeError(DECODER_ERROR, f"backend returned {frames.dtype} {frames.shape}", backend)
    if len(uniq) == len(clamped) and np.array_equal(uniq, clamped):
        return np.ascontiguousarray(frames)
    return frames[inverse.reshape(-1)]


# ----------------------------------------------------------------------------------- torchcodec


def _import_torchcodec():
    try:
        from torchcodec.decoders import VideoDecoder as TCVideoDecoder
    except Exception as exc:  # ImportError, or RuntimeError/OSError when FFmpeg libraries are missing
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise DecoderUnavailable(f"torchcodec cannot be loaded ({type(exc).__name__}: {first}); "
                                 f"{_INSTALL_HINTS['torchcodec']}") from exc
    return TCVideoDecoder


def _torchcodec_reason(exc: BaseException) -> str:
    msg = str(exc)
    if "video stream" in msg:
        return NO_VIDEO
    if "open input" in msg or "buffer length" in msg or "find stream info" in msg:
        return UNREADABLE
    if "no frames" in msg.lower() or "num_frames" in msg:
        return NO_FRAMES
    return DECODER_ERROR


class TorchCodecDecoder(_RandomAccessDecoder):
    """torchcodec in exact seek mode, one FFmpeg thread.

    torchcodec copies each decoded frame into the batch with a torch op that uses torch's intra-op
    thread pool; on a busy machine with ``torch.get_num_threads() > 1`` that copy was measured 30x
    slower (OpenMP threads waiting on descheduled peers): 7 instead of 84 clips/s. Run loader
    workers with one torch thread (DataLoader worker processes do this themselves;
    ``OMP_NUM_THREADS=1`` or ``torch.set_num_threads(1)`` elsewhere). Process-global torch state
    is not changed here."""

    name = "torchcodec"

    def __init__(self):
        self._cls = _import_torchcodec()

    def _open(self, data: bytes):
        try:
            return self._cls(data, num_ffmpeg_threads=1, dimension_order="NHWC", seek_mode="exact")
        except MemoryError:
            raise
        except Exception as exc:  # RuntimeError / ValueError from the C++ core
            raise DecodeError(_torchcodec_reason(exc), _short(exc), self.name) from None

    def _count(self, dec) -> int:
        meta = dec.metadata
        n = getattr(meta, "num_frames_from_content", None)
        if n is None:
            n = len(dec)
        if not n or n < 1:
            raise DecodeError(NO_FRAMES, "no frames", self.name)
        return int(n)

    def _fetch(self, dec, indices: list[int]) -> np.ndarray:
        try:
            batch = dec.get_frames_at(indices)
        except MemoryError:
            raise
        except Exception as exc:
            raise DecodeError(_torchcodec_reason(exc), _short(exc), self.name) from None
        return batch.data.numpy()


# ----------------------------------------------------------------------------------------- PyAV


def _import_av():
    try:
        import av
    except Exception as exc:
        raise DecoderUnavailable(f"PyAV cannot be imported ({type(exc).__name__}: {exc}); "
                                 f"{_INSTALL_HINTS['pyav']}") from exc
    return av


class PyAVDecoder(VideoDecoder):
    """PyAV with an exact timestamp->index map taken from the packet table (no decoding), a seek
    to the keyframe at or before the first wanted frame, and an early stop after the last one."""

    name = "pyav"

    def __init__(self, seek: bool = True):
        self._av = _import_av()
        self.seek = seek  # False: always decode from the start (reference behaviour for tests)
        self._sws_threads_kwarg = True

    def __repr__(self) -> str:
        return f"PyAVDecoder(seek={self.seek})"

    # -- container helpers
    def _open(self, data: bytes):
        try:
            container = self._av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
        except Exception as exc:  # av.error.FFmpegError (InvalidDataError, EOFError, ...), UnicodeDecodeError
            raise DecodeError(UNREADABLE, _short(exc), self.name) from None
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            container.close()
            raise DecodeError(NO_VIDEO, f"streams: {', '.join(kinds)}", self.name)
        stream = container.streams.video[0]
        ctx = stream.codec_context
        try:
            ctx.thread_type = "NONE"
            ctx.thread_count = 1
        except Exception:  # pragma: no cover - older PyAV spellings
            stream.thread_type = "NONE"
        return container, stream

    def _scan(self, container, stream) -> list[tuple[int | None, bool]]:
        """(pts, is_keyframe) per frame packet in demux order: flush and pre-roll (discard) packets
        are left out, so the count matches what decoders output and the shard metadata."""
        entries = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or getattr(packet, "is_discard", False):
                    continue
                entries.append((packet.pts, bool(packet.is_keyframe)))
        except MemoryError:
            raise
        except Exception as exc:  # av.error.FFmpegError and friends
            raise DecodeError(DECODER_ERROR, f"demux failed after {len(entries)} packets: {_short(exc)}",
                              self.name) from None
        if not entries:
            raise DecodeError(NO_FRAMES, "no video packets", self.name)
        return entries

    def count_frames(self, data: bytes) -> int:
        data = _check_data(data, self.name)
        container, stream = self._open(data)
        with container:
            return len(self._scan(container, stream))

    def decode(self, data: bytes, indices: Sequence[int], num_frames: int | None = None) -> np.ndarray:
        idx = _check_indices(indices)
        data = _check_data(data, self.name)
        if num_frames is not None and int(num_frames) < 1:
            raise DecodeError(NO_FRAMES, f"num_frames={num_frames}", self.name)
        container, stream = self._open(data)
        with container:
            entries = self._scan(container, stream)
            clamped = _clamp(idx, len(entries), num_frames, self.name)
            want = set(np.unique(clamped).tolist())
            pts = [p for p, _ in entries]
            index_of = None
            if all(p is not None for p in pts) and len(set(pts)) == len(pts):
                order = sorted(pts)
                index_of = {p: i for i, p in enumerate(order)}
            got: dict[int, np.ndarray] = {}
            if self.seek and index_of is not None:
                first = min(want)
                key_ranks = sorted(index_of[p] for p, key in entries if key)
                start = max((k for k in key_ranks if k <= first), default=None)
                if start is not None and start > 0:  # mid-file: seek, decode forward, verify by pts
                    try:
                        container.seek(order[start], stream=stream, backward=True, any_frame=False)
                    except self._av.error.FFmpegError:
                        pass  # unseekable: decode from the start below
                    else:
                        got = self._run(container, stream, want, index_of, must_start_by=first)
        if len(got) == len(want):
            return np.stack([got[i] for i in clamped.tolist()])
        # From the start (first wanted frame in the first GOP, no usable timestamps, or a seek that
        # landed after the wanted frames): a fresh container, decoding in order.
        container, stream = self._open(data)
        with container:
            got = self._run(container, stream, want, index_of)
        missing = sorted(want - got.keys())
        if missing:
            raise DecodeError(DECODER_ERROR, f"{len(missing)} wanted frames not decoded (first {missing[0]})",
                              self.name)
        return np.stack([got[i] for i in clamped.tolist()])

    def _to_rgb(self, frame) -> np.ndarray:
        # threads=1: FFmpeg 8's swscale otherwise starts a thread pool per frame (threads=auto).
        if self._sws_threads_kwarg:
            try:
                return frame.to_ndarray(format="rgb24", threads=1)
            except TypeError:  # PyAV without the `threads` argument
                self._sws_threads_kwarg = False
        return frame.to_ndarray(format="rgb24")

    def _run(self, container, stream, want: set[int], index_of: dict | None,
             must_start_by: int | None = None) -> dict[int, np.ndarray]:
        """Decode forward from the container's position; frames map to indices by pts (or by output
        order from the start when timestamps are unusable). Stops after the last wanted index, or
        at once (returning nothing) if the first frame lies after ``must_start_by``: the seek
        overshot, and the caller decodes from the start instead."""
        last = max(want)
        got: dict[int, np.ndarray] = {}
        position = -1
        try:
            for frame in container.decode(stream):
                if index_of is not None:
                    i = index_of.get(frame.pts)
                    if i is None:  # pre-roll / unknown timestamp: not a frame of the index
                        continue
                else:
                    position += 1
                    i = position
                if must_start_by is not None:
                    if i > must_start_by:
                        return {}
                    must_start_by = None
                if i in want and i not in got:
                    got[i] = self._to_rgb(frame)
                if i >= last:
                    break
        except MemoryError:
            raise
        except Exception as exc:  # av.error.FFmpegError (e.g. avcodec_send_packet on truncated data)
            raise DecodeError(DECODER_ERROR, _short(exc), self.name) from None
        return got


# ------------------------------------------------------------------------------------- registry

_BACKENDS = {"decord": DecordDecoder, "torchcodec": TorchCodecDecoder, "pyav": PyAVDecoder}
_CHOICES = tuple(_BACKENDS)
_available_cache: dict[str, bool] = {}


def get_decoder(name: str = DEFAULT_DECODER) -> VideoDecoder:
    """A decoder by name: "decord" (default), "torchcodec" or "pyav". Unknown name -> ValueError;
    backend not installed or not loadable -> DecoderUnavailable (the message says how to get it)."""
    key = (name or DEFAULT_DECODER).strip().lower()
    key = {"av": "pyav", "tc": "torchcodec"}.get(key, key)
    if key not in _BACKENDS:
        raise ValueError(f"unknown decoder {name!r}; choose one of: {', '.join(_CHOICES)}")
    return _BACKENDS[key]()


def available_decoders() -> list[str]:
    """Names of the backends that load in this process (import is attempted once per name)."""
    out = []
    for name in _CHOICES:
        if name not in _available_cache:
            try:
                get_decoder(name)
                _available_cache[name] = True
            except DecoderUnavailable:
                _available_cache[name] = False
        if _available_cache[name]:
            out.append(name)
    return out


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:limit]
