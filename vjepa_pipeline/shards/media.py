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

import dataclasses
import errno
import math
import os
import signal
import subprocess
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path

MIN_SIDE, MAX_SIDE = 16, 16384  # outside this a "video" is corrupt metadata or not worth training on
# Containers with a frame index, where an input seek lands exactly; elsewhere (MPEG program and
# transport streams, AVI, ASF, raw streams, ...) clips are cut with a pre-roll
EXACT_SEEK_FORMATS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"})
NO_PTS = -(2**63)  # a packet without a presentation timestamp
PREROLL_SECONDS = 1.0  # decoded and discarded before a clip's start (exact cuts; see encode_command)
# Decoder error lines tolerated per clip: this share of its (and its pre-roll's) frames, at least this many
ERROR_SHARE, MIN_ERROR_BUDGET = 0.02, 4


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
    width: int  # coded size, before rotation and pixel aspect
    height: int
    fps: float  # the true mean rate: frames over their timestamp span for variable-rate video
    duration: float  # seconds: the span of the frames' timestamps where known, else the header's
    num_frames: int  # counted from the demuxed packets, not trusted from the header
    codec: str
    rotation: int = 0  # display rotation, degrees counter-clockwise (0, 90, 180, 270)
    sar: float = 1.0  # sample (pixel) aspect ratio, width / height of one pixel
    interlaced: bool = False  # field-coded frames: deinterlaced when re-encoded
    variable_rate: bool = False  # frame intervals differ: re-encoded to a constant rate
    decoder_errors: int = 0  # an encoded clip: decoder error lines while reading its source range
    timestamps_reset: bool = False  # timestamps jump back mid-file: cut by decoding from the start
    exact_seek: bool = True  # the container has a frame index (MP4, Matroska): input seeks are exact

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as a player shows it: pixel aspect applied, then the rotation."""
        w, h = round(self.width * self.sar), self.height
        return (h, w) if self.rotation % 180 == 90 else (w, h)


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
        # the first plausible of the container's rates (DV's average rate can read 60000)
        rates = [float(r) for r in (stream.average_rate, stream.guessed_rate, getattr(stream, "base_rate", None)) if r]
        fps = next((r for r in rates if math.isfinite(r) and 0 < r <= 1000), 0.0)
        if fps == 0.0:
            raise MediaError("zero or invalid fps", ", ".join(f"{r:g}" for r in rates) or "none declared")
        sar = _aspect(stream.sample_aspect_ratio) or _aspect(ctx.sample_aspect_ratio) or 1.0
        frames, timing = 0, None
        if count_frames:
            pts, durations = array("q"), array("q")
            looks = _FirstFrames()
            try:
                for packet in container.demux(stream):
                    if packet.size > 0:
                        pts.append(NO_PTS if packet.pts is None else packet.pts)
                        durations.append(packet.duration or 0)
                        looks.feed(packet)
            except av.error.FFmpegError as exc:
                _raise_if_environmental(exc)
                raise MediaError("corrupt stream", str(exc)[:160]) from None
            frames = len(pts)
            if frames == 0:
                raise MediaError("no video frames")
            timing = _timing(pts, durations, stream.time_base)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = frames / fps
        span, variable, step = timing if timing is not None else (None, False, None)
        if span is not None:
            _check_complete(frames, span, duration, fps)
            duration = span  # what is there to read: headers may be estimates (MPEG-1 bitrate guesses)
            # the container's rate is a guess for variable-rate files, and a default for elementary
            # streams (25 for an MPEG-1 .m1v whatever its header says): the frames' own rate wins
            if variable:
                fps = frames / span
            elif abs(1 / step - fps) > 0.05 * fps:
                fps = 1 / step
        elif timing is not None:  # timestamps reset mid-file: only the frame count tells the length
            duration = frames / fps
        elif count_frames:  # no timestamps: the header's duration, checked against the frame count
            _check_complete(frames, None, duration, fps)
            if duration <= 0 or not math.isfinite(duration):
                duration = frames / fps
        name = ctx.name or "unknown"
        exact = container.format.name in EXACT_SEEK_FORMATS
    rotation, interlaced = (looks.rotation, looks.interlaced) if count_frames else (0, False)
    return VideoInfo(width, height, fps, duration, frames, name, rotation, sar, interlaced, variable,
                     timestamps_reset=timing is not None and span is None, exact_seek=exact)


def _aspect(ratio) -> float | None:
    """A valid sample aspect ratio as a float, or None (unset: 0/1, 0/0, absurd)."""
    try:
        value = float(ratio) if ratio is not None and ratio.denominator else 0.0
    except (ZeroDivisionError, AttributeError, TypeError):
        return None
    return value if 0.1 <= value <= 10 else None


def _timing(pts: array, durations: array, time_base) -> tuple[float | None, bool, float | None] | None:
    """(span in seconds from the first frame's start to the last frame's end, variable frame rate,
    typical frame interval) from the packets' presentation timestamps in demux order (NO_PTS where
    a packet has none); None when the stream does not carry them, and (None, False, None) when they
    reset mid-file. Arrays, not lists: an hour of 60 fps video is 216,000 packets."""
    import numpy as np

    t = np.frombuffer(pts, dtype=np.int64)
    known = t != NO_PTS
    if time_base is None or known.sum() < max(2, 0.9 * len(t)):
        return None
    tb = float(time_base)
    t, d = t[known], np.frombuffer(durations, dtype=np.int64)[known]
    # timestamps that jump back by more than a second (concatenated recordings, a camera's counter
    # reset) tell nothing about the duration: the caller counts frames instead
    if ((np.maximum.accumulate(t) - t) * tb > 1.0).any():
        return None, False, None
    order = np.sort(t)
    steps = np.diff(order).astype(np.float64) * tb
    steps = steps[steps > 0]
    if steps.size == 0:
        return None
    typical = float(np.sort(steps)[steps.size // 2])
    last = int(d[np.flatnonzero(t == order[-1])[-1]])
    span = float(order[-1] - order[0]) * tb + (last * tb if last > 0 else typical)
    # variable: a sizeable share of intervals far from the typical one (a dropped frame is not)
    odd = int((np.abs(steps - typical) > 0.2 * typical).sum())
    return span, odd > max(2, 0.05 * steps.size), typical


class _FirstFrames:
    """Display rotation and interlacing from the first frames, decoded from the packets the probe
    demuxes anyway (no second pass over the file). Nothing decodable: (0, False); the encoder and
    the build's checks judge such files."""

    FRAMES, PACKETS = 3, 24

    def __init__(self) -> None:
        self.rotation, self.interlaced, self.frames, self.packets = 0, False, 0, 0

    def feed(self, packet) -> None:
        import av

        if self.frames >= self.FRAMES or self.packets >= self.PACKETS:
            return
        self.packets += 1
        try:
            for frame in packet.decode():
                if self.frames == 0:
                    rotation = int(round(frame.rotation or 0)) % 360
                    self.rotation = rotation if rotation in (0, 90, 180, 270) else 0
                self.interlaced |= bool(frame.interlaced_frame)
                self.frames += 1
        except (av.error.FFmpegError, ValueError):
            self.packets = self.PACKETS  # stop trying


def _raise_if_environmental(exc: BaseException) -> None:
    """A read of an input that failed because of the machine (EIO, ENOMEM, ...) is no verdict."""
    env = environmental(exc, ours=False)
    if env is not None:
        raise env from None


def _check_complete(counted: int, span: float | None, duration: float, fps: float) -> None:
    """A file whose frames stop well short of the duration its header declares is truncated or
    corrupt (FFmpeg would otherwise silently hand back a shorter video). Judged on time covered
    (the frames' timestamp span), not on a frame count: sparse timestamps are not missing frames."""
    readable = span if span is not None else counted / fps
    if math.isfinite(duration) and duration > 0 and readable < 0.9 * duration - 1.0:
        raise MediaError("truncated or corrupt", f"{readable:.1f} s of {duration:.1f} s readable")


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
                   start: float | None = None, end: float | None = None,
                   size: tuple[int, int] | None = None, frames: tuple[int, int] | None = None) -> list[str]:
    """The ffmpeg argument list for one clip (deterministic: one encoder thread, no metadata).

    The output is what a player shows, in square pixels at a constant rate: ffmpeg applies the
    display rotation before our filters (so the size is computed from the rotated, aspect-corrected
    size), interlaced sources are deinterlaced, and variable-rate sources are resampled to their
    true mean rate.

    ``frames`` = (a, b): frame-exact mode (trajectories): output frame j is decoded frame a + j, for
    j < b - a, whatever the timestamps say (decoding from the start, no seek, no resampling; the
    output runs at ``settings.fps`` or the source's mean rate). ``start`` / ``end`` are ignored."""
    w, h = size or output_geometry(*info.display_size, settings.short_side)
    fps = settings.fps or info.fps
    gop = max(1, round(fps * settings.gop_seconds))
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    # Containers without a frame index (MPEG program streams, AVI, ...) land input seeks anywhere
    # near: there a fast input seek goes to PREROLL_SECONDS before the clip, then an exact output
    # seek decodes the pre-roll and discards it, so the clip starts where it says.
    if frames is not None:
        start, end = 0.0, None
    start = start or 0.0
    if info.timestamps_reset:  # a time is ambiguous there: decode from the start
        coarse = 0.0
    else:  # an indexed container seeks exactly (as an input seek, FFmpeg decodes from the keyframe before)
        coarse = start if info.exact_seek else max(0.0, start - PREROLL_SECONDS)
    if coarse > 0:
        cmd += ["-ss", f"{coarse:.6f}"]
    cmd += ["-threads", "1", "-i", src]  # one decoder thread: parallelism comes from worker processes
    if start > coarse:
        cmd += ["-ss", f"{start - coarse:.6f}"]
    if end is not None:
        cmd += ["-t", f"{end - start:.6f}"]
    vf = []
    if frames is not None:  # trim counts decoded frames; the new timestamps are their indices at fps
        vf.append(f"trim=start_frame={int(frames[0])}:end_frame={int(frames[1])},settb=AVTB,"
                  f"setpts=N/({fps:.9g}*TB)")
    if info.interlaced:
        vf.append("bwdif=mode=send_frame:deint=interlaced")  # one frame out per frame in
    vf.append(f"scale={w}:{h}:flags=area,setsar=1")  # square pixels (scale would keep the aspect in the SAR)
    if frames is not None:
        cmd += ["-fps_mode", "passthrough"]
    elif settings.fps or info.variable_rate:
        vf.append(f"fps={fps:.6g}")
    cmd += [
        "-map", "0:v:0", "-an", "-sn", "-dn", "-map_metadata", "-1", "-vf", ",".join(vf),
        "-c:v", "libx264", "-preset", settings.preset, "-crf", str(settings.crf), "-pix_fmt", "yuv420p",
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-threads", "1",
        "-x264-params", "threads=1:lookahead-threads=1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
        "-movflags", "+faststart", "-f", "mp4", dst,
    ]
    return cmd


def encode_clip(src: str, dst: str, info: VideoInfo, settings: EncodeSettings, start: float | None = None,
                end: float | None = None, timeout: float | None = None,
                size: tuple[int, int] | None = None, frames: tuple[int, int] | None = None) -> VideoInfo:
    """Re-encode [start, end) of ``src`` (or its frames [a, b), see :func:`encode_command`) into ``dst``
    and return the probed output."""
    if frames is not None:
        start, end = 0.0, frames[1] / info.fps
    span = (end if end is not None else info.duration) - (start or 0.0)
    timeout = timeout if timeout is not None else 120 + 20 * max(span, 0.0)
    try:
        run = subprocess.run(encode_command(src, dst, info, settings, start, end, size, frames), stdin=subprocess.DEVNULL,
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
    # At loglevel error, any output means a frame failed to decode (FFmpeg conceals it). A few are
    # tolerated and counted - a damaged slice, the leading frames of an open GOP in the pre-roll -
    # as long as the clip keeps its frames (the build compares the count with the source's).
    span = (end if end is not None else info.duration) - (start or 0.0) + min(start or 0.0, PREROLL_SECONDS)
    budget = max(MIN_ERROR_BUDGET, ERROR_SHARE * span * info.fps)
    if len(errors) > budget:
        raise MediaError("corrupt stream", f"{len(errors)} decoder errors (tolerated: {budget:.0f}), "
                                           f"first: {errors[0][:160]}")
    try:
        return dataclasses.replace(probe(dst), decoder_errors=len(errors))
    except MediaError as exc:
        if exc.reason in ("empty file", "missing file", "unreadable"):  # our output, gone or unwritten
            raise EnvironmentalError("output lost", f"{exc.reason} after ffmpeg succeeded: {dst}") from None
        raise


def encode_readable(src: str, tmp: str | os.PathLike, info: VideoInfo, settings, start: float | None,
                    end: float | None, frames: tuple[int, int] | None = None) -> VideoInfo:
    """encode_clip, then make sure the loader's decoder reads the result: decord misreads some
    frame widths (48 px among them), so a clip it cannot read is encoded again up to 6 px wider
    (a small stretch on a tiny video) before the input is given up as unreadable."""
    out = encode_clip(src, str(tmp), info, settings, start, end, frames=frames)
    problem = loader_problem(tmp, out.num_frames, whole=False)
    width, height = out.width, out.height
    for extra in (2, 4, 6):
        if problem is None:
            return out
        out = encode_clip(src, str(tmp), info, settings, start, end, size=(width + extra, height), frames=frames)
        problem = loader_problem(tmp, out.num_frames, whole=False)
    if problem is not None:
        raise MediaError("unreadable by the loader's decoder", problem)
    return out


def loader_problem(path: str | os.PathLike, num_frames: int, decoder: str | None = None,
                   whole: bool = True) -> str | None:
    """Why the decoder the loader uses (``data.decoder``, default decord) cannot read this file -
    its first, middle and last frame, or with ``whole=False`` its first frame only (enough for a
    clip we encoded: what decord gets wrong there is the frame size) - or None. A decoder that is
    not installed checks nothing. decord misreads some frame widths (48 px among them) and some
    containers PyAV reads (edit-list pre-roll, MPEG program streams)."""
    from .decoders import DEFAULT_DECODER, DecodeError, DecoderUnavailable, get_decoder

    try:
        backend = get_decoder(decoder or DEFAULT_DECODER)
    except DecoderUnavailable:
        return None
    data = Path(path).read_bytes()
    n = max(1, num_frames)
    wanted = [0, n // 2, n - 1] if whole else [0]
    try:
        frames = backend.decode(data, wanted, n)
    except DecodeError as exc:
        return str(exc)[:200]
    if frames.shape[0] != len(wanted):
        return f"{decoder or DEFAULT_DECODER} returned {frames.shape[0]} of {len(wanted)} frames"
    return None


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
