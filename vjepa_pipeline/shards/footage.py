"""Difficult footage, made with ffmpeg: files with the defects real cameras and archives produce
(rotated phone video, non-square pixels, interlacing, variable frame rate, sparse or resetting
timestamps, bitrate-guessed durations, open GOPs, program streams, a damaged frame, sizes decord
misreads, containers outside the usual few). The tests and ``bench/footage.py`` build shards from
them; every file is deterministic for a given ffmpeg and needs no download.

Each maker writes one file (``path`` names it) from lavfi's moving test pattern and returns the
path. ``make_all(folder)`` writes the whole set, one file per defect, named after it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from .media import ffmpeg_exe

H264 = ("-c:v", "libx264", "-pix_fmt", "yuv420p")


def ffmpeg(*args: str) -> None:
    """Run the bundled ffmpeg quietly; a failure raises CalledProcessError with its stderr."""
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *args], check=True, capture_output=True)


def pattern(path: Path, size: str = "160x96", rate: float = 25, seconds: float = 2.0, *output: str) -> Path:
    """lavfi's moving test pattern, encoded with the ``output`` options."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:d={seconds}", *output, str(path))
    return path


def h264(path: Path, *filters: str, size: str = "160x96", rate: float = 25, seconds: float = 2.0) -> Path:
    """A clean H.264 file, through the ``filters`` given."""
    vf = ("-vf", ",".join(filters)) if filters else ()
    return pattern(path, size, rate, seconds, *vf, *H264)


def rotated(path: Path, degrees: int = 90) -> Path:
    """A portrait phone clip: 320x176 coded, with a display matrix rotating it by ``degrees``."""
    plain = h264(path.with_name(f".{path.stem}.plain.mp4"), size="320x176")
    ffmpeg("-display_rotation", str(degrees), "-i", str(plain), "-c", "copy", str(path))
    plain.unlink()
    return path


def anamorphic(path: Path) -> Path:
    """160x96 coded with 64:45 pixels (a PAL widescreen DVD's), shown 228x96."""
    return h264(path, "setsar=64/45")


def interlaced(path: Path) -> Path:
    """MPEG-2 with fields from a 50 fps scene woven into 25 fps frames: a bar moving 8 px a field."""
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=160x96:r=50:d=2[bg];color=c=white:s=20x96:r=50:d=2[bar];"
           "[bg][bar]overlay=x='mod(t*400,140)':y=0,tinterlace=mode=interleave_top,setfield=tff[out0]",
           "-c:v", "mpeg2video", "-flags", "+ilme+ildct", "-b:v", "3M", str(path))
    return path


def variable_rate(path: Path) -> Path:
    """1 s at 25 fps, then 4 s at 12.5 fps: 75 frames in 5 s, timestamps kept as they are."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:d=3", "-vf",
           "setpts='if(lt(N,25),N/25,1+(N-25)/12.5)/TB'", "-fps_mode", "vfr", *H264, str(path))
    return path


def sparse_avi(path: Path) -> Path:
    """An AVI keeping its timing with empty packets: the header counts 58 frames, 40 carry a picture."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x96:rate=10:d=4", "-vf",
           "setpts='if(lt(N,20),N/10,2+(N-20)/5)/TB'", "-fps_mode", "vfr", "-c:v", "mpeg4", "-f", "avi", str(path))
    return path


def mpeg1_elementary(path: Path) -> Path:
    """A raw MPEG-1 stream: 162 frames at 30 fps, for which FFmpeg guesses 0.06 s and 25 fps."""
    return pattern(path, "160x96", 30, 5.4, "-c:v", "mpeg1video", "-q:v", "2", "-f", "mpeg1video")


def timestamps_reset(path: Path) -> Path:
    """Two 3 s MPEG-TS recordings concatenated byte for byte: the timestamps start again halfway."""
    parts = [pattern(path.with_name(f".{path.stem}.{i}.ts"), "160x96", 25, 3.0, *flip, *H264, "-f", "mpegts")
             for i, flip in enumerate(((), ("-vf", "hflip")))]
    path.write_bytes(b"".join(p.read_bytes() for p in parts))
    for p in parts:
        p.unlink()
    return path


def audio_longer(path: Path) -> Path:
    """Matroska whose audio runs 0.5 s past its 3 s of video (the container says 3.5 s)."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:d=3", "-f", "lavfi", "-i", "sine=d=3.5", *H264,
           "-c:a", "aac", str(path))
    return path


def open_gop(path: Path, seconds: float = 12.0) -> Path:
    """H.264 with open GOPs: a keyframe's leading frames refer to the previous GOP."""
    return pattern(path, "160x96", 25, seconds, *H264, "-x264-params", "open-gop=1:keyint=50:min-keyint=50:bframes=3")


def program_stream(path: Path) -> Path:
    """MPEG-2 in an MPEG program stream (DVD .vob style), where input seeks are inexact."""
    return pattern(path, "160x96", 25, 6.0, "-c:v", "mpeg2video", "-b:v", "2M", "-g", "15", "-f", "vob")


def damaged(path: Path, frames: int = 3, flipped: int = 16, seconds: float = 18.0) -> Path:
    """18 s of H.264 with ``flipped`` bytes inverted inside each of ``frames`` inter frames (from the
    100th): a few decoder errors, the rest intact."""
    import av

    pattern(path, "320x176", 25, seconds, *H264, "-g", "25")
    with av.open(str(path)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size > 4 * flipped and not p.is_keyframe]
    data = bytearray(path.read_bytes())
    for pos, size in packets[100:100 + frames] if frames else packets:
        for k in range(pos + size // 4, pos + size // 4 + flipped):
            data[k] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def narrow(path: Path) -> Path:
    """48x64 H.264: PyAV reads it, decord does not ("DECORDArrayCopyFromTo: The size must exactly match")."""
    return h264(path, size="48x64")


def asf(path: Path) -> Path:
    """Windows Media video in an ASF container."""
    return pattern(path, "160x96", 25, 1.0, "-c:v", "wmv2")


def dv(path: Path) -> Path:
    """PAL DV: interlaced, 720x576 with 16:15 pixels."""
    return pattern(path, "720x576", 25, 1.0, "-c:v", "dvvideo", "-pix_fmt", "yuv420p", "-f", "dv")


# name -> (file name, maker): one file per defect
MAKERS: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "rotated phone video": ("rotated.mp4", rotated),
    "non-square pixels": ("anamorphic.mp4", anamorphic),
    "interlaced MPEG-2": ("interlaced.mpg", interlaced),
    "variable frame rate": ("vfr.mp4", variable_rate),
    "sparse AVI timestamps": ("sparse.avi", sparse_avi),
    "MPEG-1 bitrate-guessed duration": ("old.m1v", mpeg1_elementary),
    "timestamps reset mid-file": ("reset.ts", timestamps_reset),
    "audio past the last video frame": ("audio_longer.mkv", audio_longer),
    "open GOPs": ("open_gop.mp4", open_gop),
    "MPEG program stream": ("dvd.vob", program_stream),
    "a few damaged frames": ("damaged.mp4", damaged),
    "48 px wide": ("narrow.mp4", narrow),
    "ASF container": ("windows.asf", asf),
    "DV": ("camcorder.dv", dv),
}


def make_all(folder: Path) -> dict[str, Path]:
    """Write one file per defect into ``folder`` (created); {defect: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    return {defect: maker(folder / name) for defect, (name, maker) in MAKERS.items()}
