"""`vjepa shards build` on real footage and generated clips: contents, determinism, resume."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from vjepa_pipeline.config.schema import ShardsConfig
from vjepa_pipeline.shards.build import BuildError, ShardBuilder, clip_ranges
from vjepa_pipeline.shards.format import iter_shard
from vjepa_pipeline.shards.media import EncodeSettings, encode_clip, probe

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(log=lambda *a, **k: None)


def build(src, out, **opts) -> dict:
    return ShardBuilder(src, out, ShardsConfig(**opts), **QUIET).run(progress=False)


def shard_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tar"))}


def decode_pyav(data_or_path) -> np.ndarray:
    import av

    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else str(data_or_path)
    with av.open(src) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_clip_ranges():
    assert clip_ranges(10.0, 25, None, None, None, 0.0) == [(0.0, 10.0)]
    assert clip_ranges(5.28, 25, None, None, 2.0, 0.0) == [(0.0, 2.0), (2.0, 4.0), (4.0, 5.28)]
    # A sliver under two frames at the end is dropped; min_seconds drops short pieces.
    assert clip_ranges(4.004, 30, None, None, 2.0, 0.0) == [(0.0, 2.0), (2.0, 4.0)]
    assert clip_ranges(5.28, 25, None, None, 2.0, 1.5) == [(0.0, 2.0), (2.0, 4.0)]
    assert clip_ranges(10.0, 25, 1.0, 4.0, None, 0.0) == [(1.0, 4.0)]
    assert clip_ranges(1.0, 25, None, None, None, 2.0) == []


def test_real_footage_build_index_and_metadata(real_footage, tmp_path):
    out = tmp_path / "shards"
    index = build(real_footage, out, short_side=64, max_clip_seconds=2.0, samples_per_shard=3)
    # bigbuckbunny 5.28 s -> 3 clips, bikes 10 s -> 5, carphone 4.0 s -> 2.
    assert index["totals"]["samples"] == 10 and index["totals"]["videos"] == 3 and not index["skipped"]
    assert [s["samples"] for s in index["shards"]] == [3, 3, 3, 1]
    assert index["label_map"] == {"animation": 0, "phone": 1, "street": 2}
    assert index["build_config"]["short_side"] == 64
    seen_keys, seconds, frames = set(), 0.0, 0
    for entry in index["shards"]:
        path = out / entry["name"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        stats = json.loads((out / entry["name"].replace(".tar", ".stats.json")).read_text())
        assert stats["samples"] == entry["samples"]
        for sample in iter_shard(path):
            meta = sample["json"]
            assert sample["members"] == ["mp4", "json", "cls"]
            assert sample["cls"] == meta["label"] == index["label_map"][meta["label_name"]]
            assert min(meta["width"], meta["height"]) == 64 and meta["keyframe_interval"] == round(meta["fps"])
            assert 0 <= meta["clip_start"] < meta["clip_end"] <= meta["source_video"]["duration"] + 1e-6
            assert meta["clip_end"] - meta["clip_start"] <= 2.0 + 1e-6
            assert meta["source"].endswith(".mp4") and meta["encoder"]["crf"] == 23
            assert decode_pyav(sample["mp4"]).shape[0] == meta["num_frames"]
            seen_keys.add(sample["key"])
            seconds += meta["duration"]
            frames += meta["num_frames"]
    assert len(seen_keys) == 10
    assert frames == index["totals"]["frames"] and seconds == pytest.approx(index["totals"]["seconds"], abs=1e-2)
    assert not (out / ".work").exists()  # staging removed after a complete build


def test_stored_video_matches_a_reference_encode(real_footage, tmp_path):
    """The bytes in the shard are exactly ffmpeg's encode of the source; decord decoding them from
    memory gives the same frames as PyAV decoding the reference file."""
    decord = pytest.importorskip("decord")
    out = tmp_path / "shards"
    build(real_footage / "street", out, short_side=64, samples_per_shard=8, labelled=False)
    sample = next(iter_shard(next(out.glob("*.tar"))))
    src = real_footage / "street" / "bikes.mp4"
    ref = tmp_path / "ref.mp4"
    encode_clip(str(src), str(ref), probe(src), EncodeSettings(short_side=64))
    assert sample["mp4"] == ref.read_bytes()
    reader = decord.VideoReader(io.BytesIO(sample["mp4"]), num_threads=1)
    frames = reader.get_batch(list(range(len(reader)))).asnumpy()
    reference = decode_pyav(ref)
    assert frames.shape == reference.shape == (sample["json"]["num_frames"], 64, sample["json"]["width"], 3)
    assert np.abs(frames.astype(int) - reference.astype(int)).mean() < 1.0


def test_generated_clips_passthrough_keeps_bytes(generated_clips, tmp_path):
    out = tmp_path / "pass"
    index = build(generated_clips, out, reencode=False, samples_per_shard=4)
    assert index["totals"]["samples"] == 6 and index["build_config"]["reencode"] is False
    originals = {p.read_bytes() for p in generated_clips.rglob("*.mp4")}
    for entry in index["shards"]:
        for sample in iter_shard(out / entry["name"]):
            assert sample["mp4"] in originals
            assert sample["json"]["encoder"] == "passthrough" and sample["json"]["num_frames"] == 32


def test_deterministic_and_seeded(generated_clips, tmp_path):
    a = build(generated_clips, tmp_path / "a", short_side=32, samples_per_shard=2, seed=0)
    b = build(generated_clips, tmp_path / "b", short_side=32, samples_per_shard=2, seed=0)
    c = build(generated_clips, tmp_path / "c", short_side=32, samples_per_shard=2, seed=1)
    assert shard_digests(tmp_path / "a") == shard_digests(tmp_path / "b")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert shard_digests(tmp_path / "a") != shard_digests(tmp_path / "c")
    assert a["totals"] == c["totals"]


def test_parallel_workers_give_the_same_shards(generated_clips, tmp_path):
    build(generated_clips, tmp_path / "one", short_side=32, samples_per_shard=4)
    build(generated_clips, tmp_path / "two", short_side=32, samples_per_shard=4, workers=2)
    assert shard_digests(tmp_path / "one") == shard_digests(tmp_path / "two")


def test_target_shard_size_sets_samples_per_shard(generated_clips, tmp_path):
    whole = build(generated_clips, tmp_path / "probe", short_side=32, samples_per_shard=6)
    with tarfile.open(tmp_path / "probe" / whole["shards"][0]["name"]) as tar:  # members with their headers and padding
        mean = sum(512 + -(-m.size // 512) * 512 for m in tar.getmembers()) / 6
    index = build(generated_clips, tmp_path / "sized", short_side=32, target_shard_mb=3.2 * mean / 2**20)
    assert index["samples_per_shard"] == 3
    counts = [s["samples"] for s in index["shards"]]
    assert all(n == counts[0] for n in counts[:-1]) and sum(counts) == 6


def test_rerun_of_a_complete_build_does_nothing_and_other_settings_are_refused(generated_clips, tmp_path):
    out = tmp_path / "s"
    build(generated_clips, out, short_side=32, samples_per_shard=4)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    build(generated_clips, out, short_side=32, samples_per_shard=4)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    with pytest.raises(BuildError, match="other settings"):
        build(generated_clips, out, short_side=48, samples_per_shard=4)


def test_resume_after_partial_encode_and_partial_pack(generated_clips, tmp_path):
    ref = tmp_path / "ref"
    build(generated_clips, ref, short_side=32, samples_per_shard=2)
    out = tmp_path / "resumed"
    opts = ShardsConfig(short_side=32, samples_per_shard=2)
    builder = ShardBuilder(generated_clips, out, opts, **QUIET)
    plan = builder.plan()
    builder.encode(plan, task_index=0, num_tasks=3, progress=False)  # a third of the units
    with pytest.raises(BuildError, match="not processed yet"):
        builder.pack(plan)
    builder.encode(plan, progress=False)
    builder.pack(plan)
    # Simulate a crash mid-pack: one shard lost, one stats file lost, a stale temp file left.
    (out / "shard-000001.tar").unlink()
    (out / "shard-000002.stats.json").unlink()
    (out / ".shard-000000.tar.abc.tmp").write_bytes(b"partial")
    kept = (out / "shard-000000.tar").stat().st_mtime_ns
    index = ShardBuilder(generated_clips, out, opts, **QUIET).run(progress=False)
    assert shard_digests(out) == shard_digests(ref) and index["totals"]["samples"] == 6
    assert (out / "shard-000000.tar").stat().st_mtime_ns == kept  # finished shards are not redone


def test_sigkill_mid_build_then_rerun_equals_uninterrupted(real_footage, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "killed"
    args = ["shards", "build", str(real_footage), None, "--short-side", "64", "--max-clip-seconds", "1",
            "--samples-per-shard", "4", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def command(dest):
        return [sys.executable, "-m", "vjepa_pipeline", *[str(dest) if a is None else a for a in args]]

    subprocess.run(command(ref), check=True, env=env, capture_output=True, timeout=300)
    proc = subprocess.Popen(command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = out / ".work" / "done"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(done.glob("*.json"))) < 1:
        time.sleep(0.02)
    assert proc.poll() is None, "build finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "index.json").exists()
    rerun = subprocess.run(command(out), env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert shard_digests(out) == shard_digests(ref)
    assert json.loads((out / "index.json").read_text()) == json.loads((ref / "index.json").read_text())


def test_local_job_array_matches_a_single_process_build(generated_clips, tmp_path):
    pytest.importorskip("submitit")
    from vjepa_pipeline.config import load_config
    from vjepa_pipeline.launch.submit import submit_build

    ref = tmp_path / "ref"
    build(generated_clips, ref, short_side=32, samples_per_shard=2)
    cfg = load_config(None, ["shards.short_side=32", "shards.samples_per_shard=2"])
    builder = ShardBuilder(generated_clips, tmp_path / "array", cfg.shards, **QUIET)
    assert submit_build(builder, cfg, num_tasks=3, cluster="local") == 0
    assert shard_digests(tmp_path / "array") == shard_digests(ref)


def test_staging_is_kept_on_request(generated_clips, tmp_path):
    build(generated_clips, tmp_path / "k", short_side=32, samples_per_shard=4, keep_work=True)
    assert (tmp_path / "k" / ".work" / "plan.json").exists()
    shutil.rmtree(tmp_path / "k" / ".work")
