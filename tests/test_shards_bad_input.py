"""Every kind of bad input is skipped with a reason while the build goes on; wrong arguments are
one-line errors (exit code 2)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vjepa_pipeline.config.schema import ShardsConfig
from vjepa_pipeline.shards import media
from vjepa_pipeline.shards.build import ShardBuilder
from vjepa_pipeline.shards.format import iter_shard
from vjepa_pipeline.shards.media import MediaError, ffmpeg_exe, probe, write_video

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def messy_tree(tmp_path_factory, generated_clips) -> Path:
    """A flat folder: good clips (with unicode and spaces in names) plus every kind of bad file."""
    root = tmp_path_factory.mktemp("messy")
    good = sorted(generated_clips.rglob("*.mp4"))
    shutil.copy(good[0], root / "good one.mp4")
    shutil.copy(good[1], root / "vidéo_日本語 ✓.mp4")
    data = good[2].read_bytes()
    (root / "zero_bytes.mp4").write_bytes(b"")
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 3: len(corrupt) // 3 + 2000] = os.urandom(2000)
    (root / "corrupt_middle.mp4").write_bytes(bytes(corrupt))
    (root / "not_a_video.mp4").write_text("this is a text file, not a video\n")
    (root / "corrupt.mkv").write_bytes(bytes(corrupt[:48]) + os.urandom(4000))
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=d=1",
                    "-c:a", "aac", str(root / "audio_only.mp4")], check=True)
    write_video(root / "tiny_8px.mp4", np.zeros((10, 8, 8, 3), np.uint8), fps=10)
    (root / "notes.txt").write_text("ignored: not a video extension")
    return root


EXPECTED_REASONS = {
    "zero_bytes.mp4": "empty file",
    "truncated.mp4": "truncated or corrupt",
    "not_a_video.mp4": "not a readable video container",
    "corrupt_middle.mp4": "corrupt stream",
    "corrupt.mkv": "no video stream",
    "audio_only.mp4": "no video stream",
    "tiny_8px.mp4": "absurd dimensions",
}


def test_bad_files_are_skipped_with_reasons_and_good_ones_kept(messy_tree, tmp_path):
    out = tmp_path / "out"
    index = ShardBuilder(messy_tree, out, ShardsConfig(short_side=32, samples_per_shard=4),
                         log=lambda *a: None).run(progress=False)
    reasons = {Path(s["path"]).name: s["reason"] for s in index["skipped"]}
    assert reasons == EXPECTED_REASONS
    sources = {s["json"]["source"] for e in index["shards"] for s in iter_shard(out / e["name"])}
    assert sources == {"good one.mp4", "vidéo_日本語 ✓.mp4"}
    assert index["totals"]["samples"] == 2 and index["totals"]["skipped"] == len(EXPECTED_REASONS)


def test_cli_summary_lists_skips_and_exit_code_is_zero(messy_tree, tmp_path):
    out = run_cli("shards", "build", str(messy_tree), str(tmp_path / "o"), "--short-side", "32", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "2 samples from 2 of 9 videos" in out.stdout
    assert "absurd dimensions x1" in out.stdout and "truncated.mp4: truncated or corrupt" in out.stdout


def test_unreadable_file_is_skipped(tmp_path, generated_clips, monkeypatch):
    # Root ignores file permissions, so simulate the OS refusing to open the file.
    target = tmp_path / "locked.mp4"
    shutil.copy(next(generated_clips.rglob("*.mp4")), target)
    real_open = open

    def guarded_open(path, *args, **kwargs):
        if str(path) == str(target):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded_open)
    with pytest.raises(MediaError) as err:
        probe(target)
    assert err.value.reason == "unreadable" and "permission" in err.value.detail


def test_zero_fps_is_rejected(generated_clips, monkeypatch):
    import av

    real_open = av.open

    class ZeroRate:
        def __init__(self, container):
            self._c = container

        def __getattr__(self, name):
            return getattr(self._c, name)

        def __enter__(self):
            self._c.__enter__()
            stream = self._c.streams.video[0]
            fake = type("S", (), {"codec_context": stream.codec_context, "average_rate": 0, "guessed_rate": None})
            self.streams = type("Streams", (), {"video": [fake()]})()
            return self

        def __exit__(self, *exc):
            return self._c.__exit__(*exc)

    monkeypatch.setattr(av, "open", lambda *a, **k: ZeroRate(real_open(*a, **k)))
    with pytest.raises(MediaError) as err:
        probe(next(generated_clips.rglob("*.mp4")))
    assert err.value.reason == "zero or invalid fps"


def test_manifest_duplicates_missing_paths_and_unknown_labels(generated_clips, tmp_path):
    clips = sorted(generated_clips.rglob("*.mp4"))
    manifest = tmp_path / "train.csv"
    lines = [f"{clips[0]} left", f"{clips[1]} right", f"{clips[0]} left", f"{tmp_path / 'gone.mp4'} left",
             f"{clips[2]} upward"]
    manifest.write_text("\n".join(lines) + "\n")
    labels = tmp_path / "labels.txt"
    labels.write_text("left\nright\n")
    out = tmp_path / "out"
    index = ShardBuilder(manifest, out, ShardsConfig(short_side=32, labels=str(labels)),
                         log=lambda *a: None).run(progress=False)
    reasons = sorted(s["reason"] for s in index["skipped"])
    assert len(reasons) == 3
    assert any(r.startswith("duplicate") for r in reasons)
    assert any(r.startswith("missing") for r in reasons)
    assert any("unknown label" in r for r in reasons)
    assert index["totals"]["samples"] == 2 and index["label_map"] == {"left": 0, "right": 1}


def test_short_videos_are_dropped_by_min_seconds(generated_clips, tmp_path):
    index = ShardBuilder(generated_clips, tmp_path / "o", ShardsConfig(short_side=32, min_seconds=3.0),
                         log=lambda *a: None)
    with pytest.raises(Exception, match="no usable videos"):
        index.run(progress=False)
    skipped = [p for p in (tmp_path / "o" / ".work" / "done").glob("*.json")]
    assert len(skipped) == 6 and all('"too short"' in p.read_text() for p in skipped)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "vjepa_pipeline", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_wrong_arguments_are_one_line_errors(tmp_path, generated_clips):
    missing = run_cli("shards", "build", str(tmp_path / "nope"), str(tmp_path / "out"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and "Traceback" not in missing.stderr
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    unwritable = run_cli("shards", "build", str(generated_clips), str(blocker / "out"))
    assert unwritable.returncode == 2 and "not writable" in unwritable.stderr
    assert "Traceback" not in unwritable.stderr
    bad_opt = run_cli("shards", "build", str(generated_clips), str(tmp_path / "o2"), "--preset", "turbo")
    assert bad_opt.returncode == 2 and "shards.preset" in bad_opt.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    none = run_cli("shards", "build", str(empty), str(tmp_path / "o3"))
    assert none.returncode == 2 and "Traceback" not in none.stderr


def test_filenames_never_reach_a_shell(tmp_path, generated_clips):
    evil = tmp_path / "$(touch pwned); `id`; x.mp4"
    shutil.copy(next(generated_clips.rglob("*.mp4")), evil)
    info = probe(evil)
    cmd = media.encode_command(str(evil), str(tmp_path / "o.mp4"), info, media.EncodeSettings(short_side=32))
    assert str(evil) in cmd  # passed as one argv element
    media.encode_clip(str(evil), str(tmp_path / "o.mp4"), info, media.EncodeSettings(short_side=32))
    assert not (Path.cwd() / "pwned").exists() and not (tmp_path / "pwned").exists()
