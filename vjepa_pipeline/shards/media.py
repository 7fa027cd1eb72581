"""Probing and re-encoding video files.

Probing uses PyAV (bundled FFmpeg libraries); re-encoding runs the ffmpeg binary shipped in the
``imageio-ffmpeg`` wheel, always with an argument list (file names never pass through a shell).
Sources are streamed from disk by ffmpeg, so memory stays bounded whatever the file size.

Failures come in two kinds, and a build treats them differently:

- :class:`MediaError`: a verdict about the input (empty, truncated, corrupt, no video stream, too
  small, an encoder that rejects or crashes on it). The build records it as a skip, for good.
- :class:`EnvironmentalError`: a failure of the machine, not of the file (disk full, I/O error,
  quota, read-only or unwritable output, memory exhausted, ffmpeg killed by a signal or unable to
  start). Never recorded: the video is retried when the build is re-run.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

MIN_SIDE, MAX_SIDE = 16, 16384  # outside this a "video" is corrupt metadata or not worth training on


class MediaError(Exception):
    """A file that cannot be used; ``reason`` is a short category for the skipped list."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


class EnvironmentalError(Exception):
    """A failure of the machine rather than of the input (see the module docstring); ``reason`` is
    the system's words for it (``os.strerror``), e.g. "No space left on device"."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


# errno values that say "this machine" whatever file they come from. EACCES / EPERM count as well
# where the file is our output (see ``environmental``); on an input they are the input's verdict.
ENVIRONMENTAL_ERRNOS = frozenset(getattr(errno, name) for name in (
    "ENOSPC", "EIO", "EDQUOT", "EROFS", "ENOMEM", "EMFILE", "ENFILE", "ESTALE", "EAGAIN", "ENOBUFS",
    "ETIMEDOUT", "EFBIG") if hasattr(errno, name))
# The same conditions as ffmpeg prints them (libc's strerror, which av_strerror uses). Not EAGAIN:
# ffmpeg uses it internally, so its words may show up for a bad input.
_ENVIRONMENTAL_TEXTS = tuple(os.strerror(code) for code in sorted(ENVIRONMENTAL_ERRNOS - {errno.EAGAIN}
                                                                   | {errno.EACCES}))
# Signals that mean "someone stopped the encoder" (OOM killer, scheduler, user, file size limit),
# not "the input crashed it"; a crash (SIGSEGV, SIGABRT, ...) is deterministic for an input and is
# a verdict, or a bad file would be retried forever.
_KILL_SIGNALS = frozenset(getattr(signal, name) for name in (
    "SIGKILL", "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGPIPE", "SIGXFSZ", "SIGXCPU", "SIGUSR1",
    "SIGUSR2") if hasattr(signal, name))


def environmental_text(text: str) -> str | None:
    """The environmental condition a message (ffmpeg's stderr, an old skip record) names, if any."""
    for words in _ENVIRONMENTAL_TEXTS:
        if words in text:
            return words
    return None


def environmental(exc: BaseException, ours: bool = True) -> EnvironmentalError | None:
    """``exc`` as an EnvironmentalError when it is one: memory exhausted, or an OSError with an
    environmental errno (plus EACCES / EPERM when the file is ``ours``, i.e. our output)."""
    if isinstance(exc, EnvironmentalError):
        return exc
    if isinstance(exc, MemoryError):
        return EnvironmentalError(os.strerror(errno.ENOMEM), type(exc).__name__)
    if isinstance(exc, OSError) and exc.errno is not None:
        codes = ENVIRONMENTAL_ERRNOS | ({errno.EACCES, errno.EPERM} if ours else set())
        if exc.errno in codes:
            return EnvironmentalError(os.strerror(exc.errno), str(exc.filename or "")[-160:])
    return None


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    duration: float  # seconds
    num_frames: int  # counted from the demuxed packets, not trusted from the header
    codec: str

    def to_dict(self) -> dict:
        return asdict(self)


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary carried by the imageio-ffmpeg wheel (or $VJEPA_FFMPEG)."""
    if os.environ.get("VJEPA_FFMPEG"):
        return os.environ["VJEPA_FFMPEG"]
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def probe(path: str | os.PathLike, count_frames: bool = True) -> VideoInfo:
    """Open ``path`` and validate its first video stream. Raises MediaError with a reason."""
    import av

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise MediaError("empty file")
        with open(path, "rb"):
            pass
    except PermissionError:
        raise MediaError("unreadable", "permission denied") from None
    except FileNotFoundError:
        raise MediaError("missing file") from None
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        _raise_if_environmental(exc)
        raise MediaError("not a readable video container", str(exc)[:160]) from None
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise MediaError("no video stream", f"streams: {', '.join(kinds)}")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
            raise MediaError("absurd dimensions", f"{width}x{height}")
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        if not math.isfinite(fps) or fps <= 0 or fps > 1000:
            raise MediaError("zero or invalid fps", f"{fps}")
        frames = 0
        if count_frames:
            try:
                frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
            except av.error.FFmpegError as exc:
                _raise_if_environmental(exc)
                raise MediaError("corrupt stream", str(exc)[:160]) from None
            if frames == 0:
                raise MediaError("no video frames")
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = frames / fps
        if count_frames:
            _check_complete(frames, int(stream.frames or 0), duration, fps)
            if duration <= 0 or not math.isfinite(duration):
                duration = frames / fps
        return VideoInfo(width, height, fps, duration, frames, ctx.name or "unknown")


def _raise_if_environmental(exc: BaseException) -> None:
    """A read of an input that failed because of the machine (EIO, ENOMEM, ...) is no verdict."""
    env = environmental(exc, ours=False)
    if env is not None:
        raise env from None


def _check_complete(counted: int, declared: int, duration: float, fps: float) -> None:
    """A file whose packets stop well short of what its header declares is truncated or corrupt
    (FFmpeg would otherwise silently hand back a shorter video)."""
    if declared > 0 and counted < 0.98 * declared - 1:
        raise MediaError("truncated or corrupt", f"{counted} of {declared} declared frames readable")
    if declared == 0 and math.isfinite(duration) and duration > 0 and counted / fps < 0.9 * duration - 1.0:
        raise MediaError("truncated or corrupt", f"{counted / fps:.1f} s of {duration:.1f} s readable")


@dataclass(frozen=True)
class EncodeSettings:
    """Training format: H.264 yuv420p, short side ``short_side`` (never upscaled), fixed GOP."""

    short_side: int | None = 256  # None keeps the resolution
    fps: float | None = None  # None keeps the source rate
    crf: int = 23
    preset: str = "veryfast"
    gop_seconds: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def output_geometry(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """Even output size with the short side scaled to ``short_side`` (no upscaling)."""
    if short_side is None or min(width, height) <= short_side:
        w, h = width, height
    elif width <= height:
        w, h = short_side, round(height * short_side / width)
    else:
        w, h = round(width * short_side / height), short_side
    return max(2, w - w % 2), max(2, h - h % 2)


def encode_command(src: str, dst: str, info: VideoInfo, settings: EncodeSettings,
                   start: float | None = None, end: float | None = None) -> list[str]:
    """The ffmpeg argument list for one clip (deterministic: one encoder thread, no metadata)."""
    w, h = output_geometry(info.width, info.height, settings.short_side)
    fps = settings.fps or info.fps
    gop = max(1, round(fps * settings.gop_seconds))
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    if start is not None and start > 0:
        cmd += ["-ss", f"{start:.6f}"]
    cmd += ["-threads", "1", "-i", src]  # one decoder thread: parallelism comes from worker processes
    if end is not None:
        cmd += ["-t", f"{end - (start or 0.0):.6f}"]
    vf = [f"scale={w}:{h}:flags=area"]
    if settings.fps:
        vf.append(f"fps={settings.fps}")
    cmd += [
        "-map", "0:v:0", "-an", "-sn", "-dn", "-map_metadata", "-1", "-vf", ",".join(vf),
        "-c:v", "libx264", "-preset", settings.preset, "-crf", str(settings.crf), "-pix_fmt", "yuv420p",
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-threads", "1",
        "-x264-params", "threads=1:lookahead-threads=1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
        "-movflags", "+faststart", "-f", "mp4", dst,
    ]
    return cmd


def encode_clip(src: str, dst: str, info: VideoInfo, settings: EncodeSettings, start: float | None = None,
                end: float | None = None, timeout: float | None = None) -> VideoInfo:
    """Re-encode [start, end) of ``src`` into ``dst`` and return the probed output."""
    span = (end if end is not None else info.duration) - (start or 0.0)
    timeout = timeout if timeout is not None else 120 + 20 * max(span, 0.0)
    try:
        run = subprocess.run(encode_command(src, dst, info, settings, start, end), stdin=subprocess.DEVNULL,
                             capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:  # a generous limit (20x the clip's length): the input hangs ffmpeg
        raise MediaError("encode timeout", f"ffmpeg ran over {timeout:.0f} s") from None
    except OSError as exc:  # ffmpeg could not be started: missing binary, no memory, no processes left
        raise EnvironmentalError(exc.strerror or type(exc).__name__,
                                 f"cannot start ffmpeg ({exc.filename or ''})") from None
    errors = run.stderr.decode(errors="replace").strip().splitlines()
    if run.returncode < 0 and -run.returncode in _KILL_SIGNALS:
        raise EnvironmentalError("ffmpeg killed", f"by {_signal_name(-run.returncode)}")
    words = environmental_text("\n".join(errors))
    if words is not None:  # disk full, I/O error, ... while writing our output (or reading the input)
        line = next(ln for ln in errors if words in ln)
        raise EnvironmentalError(words, line[:200])
    if run.returncode < 0:
        raise MediaError("ffmpeg crashed", f"{_signal_name(-run.returncode)} on this input")
    if run.returncode != 0:
        raise MediaError("ffmpeg failed", (errors or ["(no message)"])[-1][:200])
    if errors:  # at loglevel error, any output means frames failed to decode
        raise MediaError("corrupt stream", f"{len(errors)} decoder errors, first: {errors[0][:160]}")
    try:
        return probe(dst)
    except MediaError as exc:
        if exc.reason in ("empty file", "missing file", "unreadable"):  # our output, gone or unwritten
            raise EnvironmentalError("output lost", f"{exc.reason} after ffmpeg succeeded: {dst}") from None
        raise


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def write_video(path: str | os.PathLike, frames, fps: float = 25.0, crf: int = 18, gop: int | None = None) -> None:
    """Write uint8 frames (T, H, W, 3), numpy or torch, to an H.264 mp4 by piping raw RGB into
    ffmpeg (even width/height required). Used for generated datasets and test footage."""
    import numpy as np

    arr = np.ascontiguousarray(np.asarray(frames, dtype=np.uint8))
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[1] % 2 or arr.shape[2] % 2:
        raise ValueError(f"expected uint8 frames (T, H, W, 3) with even H and W, got {arr.shape}")
    t, h, w, _ = arr.shape
    gop = gop or max(1, round(fps))
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
           "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "pipe:0", "-an", "-c:v", "libx264",
           "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p", "-g", str(gop),
           "-sc_threshold", "0", "-threads", "1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
           "-movflags", "+faststart", "-f", "mp4", str(path)]
    run = subprocess.run(cmd, input=arr.tobytes(), capture_output=True, timeout=120 + t)
    if run.returncode != 0:
        raise RuntimeError(f"ffmpeg could not write {path}: {run.stderr.decode(errors='replace')[-300:]}")
