"""Fault injection for `vjepa shards build`.

- Environmental failures (disk full, I/O error, quota, an encoder killed by a signal, our own
  writer failing) are never recorded as a verdict about the video: nothing is marked done for
  it, the build ends non-zero with one line saying what to do, and re-running the same command
  once the cause is gone retries those videos and ships all of them.
- An output folder that is not ours (a user's .work/, a foreign index.json or shard) is refused
  with one line and left exactly as it was; a staging folder of ours keeps any file we did not
  write.

Faults are injected with a fake ffmpeg ($VJEPA_FFMPEG: a shell script that fails the way ffmpeg
fails on a full disk, or kills itself, for some inputs and runs the real ffmpeg for the rest) and
by patching our own writers to raise OSError(errno).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from vjepa_pipeline.config.schema import ShardsConfig
from vjepa_pipeline.shards import build as build_mod
from vjepa_pipeline.shards.build import BuildError, ShardBuilder
from vjepa_pipeline.shards.media import ffmpeg_exe

QUIET = {"log": lambda *a, **k: None}
OPTS = {"short_side": 32, "samples_per_shard": 2}
FAILING = ("clip_1.mp4", "clip_4.mp4")  # the inputs the fake ffmpeg fails on

# What the fake ffmpeg does for a failing input, after writing a partial output file.
FAULTS = {
    "disk full": ('echo "[out#0/mp4 @ 0x55d0] Error writing trailer: No space left on device" >&2; exit 1',
                  "No space left on device"),
    "i/o error": ('echo "av_interleaved_write_frame(): Input/output error" >&2; exit 1',
                  "Input/output error"),
    "killed": ("kill -KILL $$", "killed"),
}


def build(src, out, **opts) -> dict:
    return ShardBuilder(src, out, ShardsConfig(**{**OPTS, **opts}), **QUIET).run(progress=False)


def shard_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tar"))}


def fake_ffmpeg(folder: Path, action: str) -> Path:
    """An ffmpeg that fails with ``action`` when its input is one of FAILING, else runs the real one."""
    cases = "|".join(f"*/{name}" for name in FAILING)
    script = folder / "ffmpeg-faulty"
    script.write_text(f"""#!/bin/sh
for out; do :; done
for arg; do
  case "$arg" in
    {cases})
      printf 'partial mp4 bytes' > "$out"
      {action}
      ;;
  esac
done
exec "{ffmpeg_exe()}" "$@"
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def done_records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / ".work" / "done").glob("*.json"))]


def sources_in(records: list[dict]) -> set[str]:
    return {Path(s["meta"]["source"]).name for r in records for s in r["samples"]}


@pytest.fixture(scope="module")
def reference(generated_clips, tmp_path_factory) -> Path:
    """An uninterrupted build: what every recovered build must equal, byte for byte."""
    out = tmp_path_factory.mktemp("faults") / "reference"
    build(generated_clips, out)
    return out


# ---- item 3: environmental failures are retried, never recorded ------------------------------
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_environmental_ffmpeg_failure_is_retried_on_rerun(fault, generated_clips, reference, tmp_path,
                                                          monkeypatch):
    action, reason = FAULTS[fault]
    out = tmp_path / "out"
    monkeypatch.setenv("VJEPA_FFMPEG", str(fake_ffmpeg(tmp_path, action)))
    with pytest.raises(BuildError) as err:
        build(generated_clips, out)
    message = str(err.value)
    assert "\n" not in message and "environmental" in message and reason in message
    assert "re-run the same command" in message
    assert not (out / "index.json").exists()
    records = done_records(out)
    assert all(r["skipped"] is None for r in records), "an environmental failure was recorded as a skip"
    assert not sources_in(records) & set(FAILING)
    assert len(records) < 6
    units = out / ".work" / "units"
    staged = {p.name for p in units.iterdir()} if units.exists() else set()
    assert staged <= {r["uid"] for r in records}  # partial outputs of the failed videos are gone

    monkeypatch.delenv("VJEPA_FFMPEG")  # the disk has space again
    index = build(generated_clips, out)
    assert index["totals"]["samples"] == 6 and index["totals"]["skipped"] == 0 and not index["skipped"]
    assert shard_digests(out) == shard_digests(reference)
    assert json.loads((out / "index.json").read_text()) == json.loads((reference / "index.json").read_text())


def test_parallel_workers_stop_on_environmental_failure_and_rerun_completes(generated_clips, reference,
                                                                            tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("VJEPA_FFMPEG", str(fake_ffmpeg(tmp_path, FAULTS["disk full"][0])))
    with pytest.raises(BuildError, match="No space left on device"):
        build(generated_clips, out, workers=2)
    records = done_records(out)
    assert all(r["skipped"] is None for r in records) and not sources_in(records) & set(FAILING)
    monkeypatch.delenv("VJEPA_FFMPEG")
    build(generated_clips, out, workers=2)
    assert shard_digests(out) == shard_digests(reference)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EROFS, errno.EACCES])
def test_our_writer_failing_is_environmental(code, generated_clips, tmp_path, monkeypatch):
    """Passthrough copies the source with shutil.copyfile: that write failing is about our disk."""
    real_copy = shutil.copyfile

    def failing_copy(src, dst, *a, **k):
        if Path(src).name in FAILING:
            Path(dst).write_bytes(b"partial")
            raise OSError(code, os.strerror(code), str(dst))
        return real_copy(src, dst, *a, **k)

    out = tmp_path / "out"
    monkeypatch.setattr(shutil, "copyfile", failing_copy)
    with pytest.raises(BuildError) as err:
        build(generated_clips, out, reencode=False)
    assert os.strerror(code) in str(err.value) and "\n" not in str(err.value)
    records = done_records(out)
    assert all(r["skipped"] is None for r in records) and not sources_in(records) & set(FAILING)
    monkeypatch.setattr(shutil, "copyfile", real_copy)
    index = build(generated_clips, out, reencode=False)
    assert index["totals"]["samples"] == 6 and not index["skipped"]


def test_memory_error_is_environmental(generated_clips, tmp_path, monkeypatch):
    from vjepa_pipeline.shards import media as media_mod

    real_encode = media_mod.encode_clip  # called through media.encode_readable

    def encode(src, *a, **k):
        if Path(src).name in FAILING:
            raise MemoryError()
        return real_encode(src, *a, **k)

    out = tmp_path / "out"
    monkeypatch.setattr(media_mod, "encode_clip", encode)
    with pytest.raises(BuildError, match="environmental"):
        build(generated_clips, out)
    assert all(r["skipped"] is None for r in done_records(out))
    monkeypatch.setattr(media_mod, "encode_clip", real_encode)
    assert build(generated_clips, out)["totals"]["samples"] == 6
    assert not (out / ".work" / "units").exists()  # and that re-run redid nothing


def test_disk_full_while_packing_is_one_line_and_resumes(generated_clips, reference, tmp_path, monkeypatch):
    real_write = build_mod.write_shard

    def write_shard(path, samples):
        if Path(path).name == "shard-000001.tar":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write(path, samples)

    out = tmp_path / "out"
    monkeypatch.setattr(build_mod, "write_shard", write_shard)
    with pytest.raises(BuildError) as err:
        build(generated_clips, out)
    assert "No space left on device" in str(err.value) and "re-run the same command" in str(err.value)
    assert "\n" not in str(err.value) and not (out / "index.json").exists()
    monkeypatch.setattr(build_mod, "write_shard", real_write)
    build(generated_clips, out)
    assert shard_digests(out) == shard_digests(reference)


class Killed(BaseException):
    """Stands in for SIGKILL: no handler of ours runs, so nothing is cleaned up."""


def test_temporaries_a_killed_pack_left_are_removed_on_resume(generated_clips, reference, tmp_path, monkeypatch):
    real_write = build_mod.write_shard

    def killed_mid_write(path, samples):
        if Path(path).name == "shard-000001.tar":
            (Path(path).parent / ".shard-000001.tar.k1ll3d.tmp").write_bytes(b"half a tar")
            raise Killed
        return real_write(path, samples)

    out = tmp_path / "out"
    monkeypatch.setattr(build_mod, "write_shard", killed_mid_write)
    with pytest.raises(Killed):
        build(generated_clips, out)
    (out / ".index.json.k1ll3d.tmp").write_text("{")  # as if killed while writing the index
    monkeypatch.setattr(build_mod, "write_shard", real_write)
    build(generated_clips, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
    assert shard_digests(out) == shard_digests(reference)


def test_cli_exits_non_zero_with_one_line_then_rerun_ships_everything(generated_clips, tmp_path, monkeypatch,
                                                                      capsys):
    from vjepa_pipeline.cli.main import main

    out = tmp_path / "out"
    args = ["shards", "build", str(generated_clips), str(out), "--short-side", "32",
            "--samples-per-shard", "2", "--no-progress"]
    monkeypatch.setenv("VJEPA_FFMPEG", str(fake_ffmpeg(tmp_path, FAULTS["disk full"][0])))
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "failed for environmental reasons (No space left on device" in err and "free space" in err
    monkeypatch.delenv("VJEPA_FFMPEG")
    assert main(args) == 0
    captured = capsys.readouterr().out
    assert "6 samples from 6 of 6 videos" in captured
    assert not (out / ".work").exists()


def test_disk_full_verdict_recorded_by_an_older_version_is_retried(generated_clips, reference, tmp_path):
    """Staging folders written before this fix may hold 'ffmpeg failed: No space left on device'
    skip records; a resume treats them as not done."""
    out = tmp_path / "out"
    builder = ShardBuilder(generated_clips, out, ShardsConfig(**OPTS), **QUIET)
    plan = builder.plan()
    item = plan["items"][0]
    (out / ".work" / "done").mkdir(parents=True, exist_ok=True)
    (out / ".work" / "done" / f"{item['uid']}.json").write_text(json.dumps(
        {"uid": item["uid"], "samples": [], "seconds": 0.0,
         "skipped": {"path": item["rel"], "reason": "ffmpeg failed",
                     "detail": "[out#0/mp4 @ 0x1] Error writing trailer: No space left on device"}}))
    index = ShardBuilder(generated_clips, out, ShardsConfig(**OPTS), **QUIET).run(progress=False)
    assert index["totals"]["samples"] == 6 and not index["skipped"]
    assert shard_digests(out) == shard_digests(reference)


def test_a_bad_video_is_still_a_verdict(generated_clips, tmp_path):
    """Control: a real ffmpeg failure about the input stays a recorded skip (not retried forever)."""
    src = tmp_path / "src"
    shutil.copytree(generated_clips, src)
    data = (src / "left" / "clip_1.mp4").read_bytes()
    (src / "left" / "clip_1.mp4").write_bytes(data[: len(data) // 2])
    index = build(src, tmp_path / "out")
    assert [s["reason"] for s in index["skipped"]] == ["truncated or corrupt"]
    assert index["totals"]["samples"] == 5


def test_ffmpeg_crashing_on_an_input_is_a_verdict(generated_clips, tmp_path, monkeypatch):
    """Control: a crash (SIGSEGV) is deterministic for an input, so it is recorded, not retried
    forever; only kills (SIGKILL, SIGTERM, ...) are environmental."""
    monkeypatch.setenv("VJEPA_FFMPEG", str(fake_ffmpeg(tmp_path, "ulimit -c 0; kill -SEGV $$")))
    index = build(generated_clips, tmp_path / "out")
    assert sorted(s["reason"] for s in index["skipped"]) == ["ffmpeg crashed", "ffmpeg crashed"]
    assert index["totals"]["samples"] == 4


# ---- item 4: never write into (or delete from) a folder that is not ours -------------------
def snapshot(folder: Path) -> dict[str, tuple]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def users_folder(root: Path) -> Path:
    out = root / "mine"
    (out / ".work").mkdir(parents=True)
    (out / ".work" / "thesis-notes.txt").write_text("three years of notes\n")
    (out / "index.json").write_text(json.dumps({"my": "own index", "shards": ["shard-000000.tar"]}))
    (out / "shard-000000.tar").write_bytes(os.urandom(4096))
    return out


def test_foreign_folder_with_work_dir_is_refused_untouched(generated_clips, tmp_path):
    out = users_folder(tmp_path)
    before = snapshot(out)
    with pytest.raises(BuildError) as err:
        build(generated_clips, out)
    assert "\n" not in str(err.value) and str(out) in str(err.value)
    assert snapshot(out) == before


def test_non_empty_foreign_folder_is_refused_untouched(generated_clips, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(os.urandom(1000))
    (out / "shard-000000.tar").write_bytes(os.urandom(2048))
    before = snapshot(out)
    with pytest.raises(BuildError, match="not empty"):
        build(generated_clips, out)
    assert snapshot(out) == before


def test_foreign_work_dir_alone_is_refused_untouched(generated_clips, tmp_path):
    out = tmp_path / "o"
    (out / ".work" / "done").mkdir(parents=True)
    (out / ".work" / "done" / "keep.json").write_text("{}")
    (out / ".work" / "plan.json").write_text('{"not": "our plan"}')
    before = snapshot(out)
    with pytest.raises(BuildError, match=".work"):
        build(generated_clips, out)
    with pytest.raises(BuildError, match=".work"):  # the paths the SLURM tasks take
        ShardBuilder(generated_clips, out, ShardsConfig(**OPTS), **QUIET).plan()
    assert snapshot(out) == before


def test_cli_refuses_a_foreign_folder_with_exit_code_2(generated_clips, tmp_path, capsys):
    from vjepa_pipeline.cli.main import main

    out = users_folder(tmp_path)
    before = snapshot(out)
    assert main(["shards", "build", str(generated_clips), str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and str(out) in err
    assert snapshot(out) == before


def test_existing_empty_folder_is_fine_and_unknown_files_in_our_staging_survive(generated_clips, reference,
                                                                               tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    builder = ShardBuilder(generated_clips, out, ShardsConfig(**OPTS), **QUIET)
    plan = builder.plan()
    builder.encode(plan, task_index=0, num_tasks=2, progress=False)
    (out / ".work" / "my-notes.txt").write_text("written by a person mid-build")
    index = ShardBuilder(generated_clips, out, ShardsConfig(**OPTS), **QUIET).run(progress=False)
    assert index["totals"]["samples"] == 6 and shard_digests(out) == shard_digests(reference)
    assert (out / ".work" / "my-notes.txt").read_text() == "written by a person mid-build"
    # only what the build wrote is gone; the marker stays with the person's file, so the folder is
    # still recognised as ours (a re-run says "already complete" instead of refusing it)
    left = sorted(p.name for p in (out / ".work").iterdir())
    assert left == sorted(["my-notes.txt", build_mod.WORK_MARKER])
    assert build(generated_clips, out)["totals"]["samples"] == 6
    assert not (out / ".work" / "units").exists()  # and that re-run redid nothing


def test_unmarked_staging_of_an_older_build_still_resumes(generated_clips, reference, tmp_path):
    """A staging folder started before the marker existed (plan.json, done/, units/ of ours) resumes."""
    out = tmp_path / "old"
    builder = ShardBuilder(generated_clips, out, ShardsConfig(**OPTS), **QUIET)
    plan = builder.plan()
    builder.encode(plan, task_index=1, num_tasks=2, progress=False)
    marker = out / ".work" / getattr(build_mod, "WORK_MARKER", "no-marker-in-this-version")
    if marker.exists():
        marker.unlink()
    build(generated_clips, out)
    assert shard_digests(out) == shard_digests(reference) and not (out / ".work").exists()


def test_a_source_without_videos_leaves_no_output_folder_behind(tmp_path):
    src = tmp_path / "notes"
    src.mkdir()
    (src / "a.txt").write_text("not a video")
    with pytest.raises(Exception, match="no videos found"):
        build(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
