"""The shard builder on footage that is messier than our test clips: rotated phone video, non-square
pixels, interlacing, variable frame rate, sparse timestamps, containers whose duration runs past
the last video frame, and folders holding files that are not videos. Every file is made here
with ffmpeg (lavfi's moving test pattern), so each case is exact and needs no download."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import av
import numpy as np
import pytest

from vjepa_pipeline.config.schema import ShardsConfig
from vjepa_pipeline.shards import footage
from vjepa_pipeline.shards.build import ShardBuilder
from vjepa_pipeline.shards.footage import h264
from vjepa_pipeline.shards.media import EncodeSettings, encode_clip, probe

FULL_SIZE = EncodeSettings(short_side=None)


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24").astype(np.float32) for f in c.decode(video=0)]


def luma(frame: np.ndarray) -> np.ndarray:
    return frame @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def build(src: Path, out: Path, **opts) -> dict:
    cfg = ShardsConfig(**{"short_side": 64, "samples_per_shard": 4, **opts})
    return ShardBuilder(src, out, cfg, log=lambda *a, **k: None).run(progress=False)


def metas(out: Path) -> list[dict]:
    import tarfile

    found = []
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            found += [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
    return found


# ---- geometry --------------------------------------------------------------------------------
def test_a_rotated_phone_video_comes_out_upright_and_unsquashed(tmp_path):
    plain = h264(tmp_path / "plain.mp4", size="320x176")
    rotated = footage.rotated(tmp_path / "rotated.mp4")  # a portrait phone clip
    info = probe(rotated)
    assert (info.rotation, info.display_size) == (90, (176, 320))
    out = encode_clip(str(rotated), str(tmp_path / "out.mp4"), info, FULL_SIZE)
    assert (out.width, out.height, out.rotation) == (176, 320, 0)  # portrait pixels, nothing left to rotate
    got, source = frames_of(tmp_path / "out.mp4")[0], frames_of(plain)[0]
    upright = np.abs(got - np.rot90(source, k=1)).mean()  # 90 degrees counter-clockwise
    upside_down = np.abs(got - np.rot90(source, k=3)).mean()
    assert upright < 12 and upright < upside_down / 3
    # scaled: the short side of what the viewer sees, not of the coded frame
    small = encode_clip(str(rotated), str(tmp_path / "small.mp4"), info, EncodeSettings(short_side=64))
    assert (small.width, small.height) == (64, 116)


def test_non_square_pixels_are_made_square_at_the_display_aspect(tmp_path):
    anamorphic = footage.anamorphic(tmp_path / "sar.mp4")  # a PAL widescreen DVD's pixels
    info = probe(anamorphic)
    assert info.sar == pytest.approx(64 / 45) and info.display_size == (228, 96)
    out = encode_clip(str(anamorphic), str(tmp_path / "out.mp4"), info, FULL_SIZE)
    assert (out.width, out.height) == (228, 96) and out.sar == 1.0
    small = encode_clip(str(anamorphic), str(tmp_path / "small.mp4"), info, EncodeSettings(short_side=64))
    assert small.width / small.height == pytest.approx(160 * 64 / 45 / 96, rel=0.02) and small.sar == 1.0


def _comb_energy(frames: list[np.ndarray]) -> float:
    """How far each line sits from the mean of its neighbours (which belong to the other field, a
    moment apart in interlaced video): high along moving edges of combed frames, low once deinterlaced."""
    return float(np.mean([np.abs(luma(f)[1:-1] - (luma(f)[:-2] + luma(f)[2:]) / 2).mean() for f in frames]))


def test_interlaced_video_is_deinterlaced(tmp_path):
    src = footage.interlaced(tmp_path / "interlaced.mpg")  # a bar moving 8 px per field, fields woven
    info = probe(src)
    assert info.interlaced
    woven = encode_clip(str(src), str(tmp_path / "woven.mp4"), dataclasses.replace(info, interlaced=False),
                        FULL_SIZE)
    clean = encode_clip(str(src), str(tmp_path / "clean.mp4"), info, FULL_SIZE)
    assert woven.num_frames == clean.num_frames == 50
    assert _comb_energy(frames_of(tmp_path / "clean.mp4")) < 0.5 * _comb_energy(frames_of(tmp_path / "woven.mp4"))
    assert not probe(h264(tmp_path / "progressive.mp4")).interlaced


# ---- time --------------------------------------------------------------------------------------
def _intervals(path: Path) -> set[float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pts = sorted(p.pts for p in c.demux(s) if p.size > 0)
        return {round(float((b - a) * s.time_base), 4) for a, b in zip(pts, pts[1:])}


def test_variable_frame_rate_becomes_constant_at_the_true_mean_rate(tmp_path):
    src = footage.variable_rate(tmp_path / "vfr.mp4")  # 1 s at 25 fps, then 4 s at 12.5 fps: 75 frames in 5 s
    info = probe(src)
    assert info.variable_rate and info.num_frames == 75
    assert info.duration == pytest.approx(5.0, abs=0.1) and info.fps == pytest.approx(15.0, rel=0.03)
    out = encode_clip(str(src), str(tmp_path / "out.mp4"), info, FULL_SIZE)
    assert len(_intervals(tmp_path / "out.mp4")) == 1  # one frame interval: constant rate
    assert out.duration == pytest.approx(info.duration, abs=0.15)
    assert out.num_frames == pytest.approx(75, abs=2) and not out.variable_rate
    steady = probe(h264(tmp_path / "cfr.mp4"))
    assert not steady.variable_rate and steady.fps == 25.0


def test_sparse_timestamps_are_not_a_truncation(tmp_path):
    """An AVI keeps its timing with empty packets: the header counts 58 frames, 40 carry a picture.
    The file is complete (its frames cover the whole duration); it used to be skipped as truncated."""
    (tmp_path / "videos").mkdir()
    src = footage.sparse_avi(tmp_path / "videos" / "sparse.avi")
    with av.open(str(src)) as c:
        assert c.streams.video[0].frames == 58  # what the header declares
    info = probe(src)
    assert info.num_frames == 40 and info.duration == pytest.approx(5.8, abs=0.05)
    index = build(tmp_path / "videos", tmp_path / "out")
    assert not index["skipped"] and index["totals"]["sharded"] == 1


def test_truncated_files_are_still_refused(tmp_path):
    whole = h264(tmp_path / "whole.mkv", seconds=6.0)
    data = whole.read_bytes()
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "cut.mkv").write_bytes(data[: len(data) // 3])  # a third of a 6 s file: ~2 s readable
    (folder / "whole.mkv").write_bytes(data)
    index = build(folder, tmp_path / "out")
    assert [(s["path"], s["reason"]) for s in index["skipped"]] == [("cut.mkv", "truncated or corrupt")]
    assert index["totals"]["sharded"] == 1


def test_a_container_running_past_the_last_video_frame_keeps_every_clip(tmp_path):
    """Matroska has no per-stream duration; the audio runs 0.5 s past the video. The last clip range
    used to be empty, and its failure dropped the whole video (3 good clips)."""
    folder = tmp_path / "videos"
    folder.mkdir()
    footage.audio_longer(folder / "a.mkv")
    with av.open(str(folder / "a.mkv")) as c:
        assert c.duration / 1e6 > 3.3  # the container says 3.5 s
    assert probe(folder / "a.mkv").duration == pytest.approx(3.0, abs=0.05)
    index = build(folder, tmp_path / "out", max_clip_seconds=1.0)
    assert not index["skipped"] and index["totals"]["samples"] == 3
    assert all(m["num_frames"] >= 23 for m in metas(tmp_path / "out"))


def test_every_clip_records_its_expected_frames_and_the_source_geometry(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    h264(folder / "a.mp4", seconds=3.0)
    build(folder, tmp_path / "out", max_clip_seconds=1.0)
    for meta in metas(tmp_path / "out"):
        assert meta["num_frames"] == pytest.approx(meta["frames_expected"], abs=1)
        src = meta["source_video"]
        assert (src["rotation"], src["sar"], src["interlaced"], src["variable_rate"], src["timestamps_reset"]) == (
            0, 1.0, False, False, False)


# ---- what is not a video -----------------------------------------------------------------------
def test_other_containers_are_found_and_every_ignored_file_is_listed(tmp_path, capsys):
    from vjepa_pipeline.cli.main import main

    folder = tmp_path / "videos"
    folder.mkdir()
    h264(folder / "a.mp4")
    footage.asf(folder / "b.asf")  # these used to be ignored without a word
    footage.dv(folder / "c.dv")
    (folder / "notes.txt").write_text("not a video")
    (folder / "thumb.jpg").write_bytes(b"\xff\xd8\xff")
    assert main(["shards", "build", str(folder), str(tmp_path / "out"), "--short-side", "64",
                 "--samples-per-shard", "4", "--unlabelled", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert sorted(m["source"] for m in metas(tmp_path / "out")) == ["a.mp4", "b.asf", "c.dv"]
    assert sorted(i["path"] for i in index["ignored"]) == ["notes.txt", "thumb.jpg"]
    assert "3 samples from 3 of 3 videos" in printed
    assert "ignored 2 other files (not video extensions): .jpg x1, .txt x1" in printed


def test_the_summary_counts_sharded_videos_not_videos_minus_skips(tmp_path, capsys):
    from vjepa_pipeline.cli.main import main

    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        h264(folder / name)
    os.link(folder / "a.mp4", folder / "c.mp4")  # the same file twice: rejected at discovery
    assert main(["shards", "build", str(folder), str(tmp_path / "out"), "--short-side", "64",
                 "--samples-per-shard", "4", "--unlabelled", "--no-progress"]) == 0
    assert "2 samples from 2 of 3 videos" in capsys.readouterr().out


# ---- cuts and damaged frames -------------------------------------------------------------------
def _nearest_source_frame(clip_first: np.ndarray, source: list[np.ndarray]) -> int:
    return int(np.argmin([np.abs(clip_first - f).mean() for f in source]))


def test_clips_of_an_open_gop_file_cut_exactly_without_decoder_errors_counting_against_them(tmp_path):
    src = footage.open_gop(tmp_path / "open.mp4")
    info = probe(src)
    source = frames_of(src)
    for start in (2.0, 8.0):  # 8 s: the fast seek lands on a keyframe whose leading frames do not decode
        out = encode_clip(str(src), str(tmp_path / f"c{start}.mp4"), info, FULL_SIZE, start, start + 2.0)
        assert out.num_frames == 50 and out.decoder_errors <= 4
        assert _nearest_source_frame(frames_of(tmp_path / f"c{start}.mp4")[0], source) == round(start * 25)


def test_a_clip_cut_inside_an_mpeg_program_stream_starts_where_it_says(tmp_path):
    src = footage.program_stream(tmp_path / "ps.mpg")
    info = probe(src)
    out = encode_clip(str(src), str(tmp_path / "c.mp4"), info, FULL_SIZE, 2.0, 4.0)
    assert out.num_frames == 50  # the inexact input seek used to start 8 frames late
    assert _nearest_source_frame(frames_of(tmp_path / "c.mp4")[0], frames_of(src)) == 50


def test_a_damaged_frame_is_counted_not_a_reason_to_drop_the_video(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    footage.damaged(folder / "damaged.mp4")  # 16 bytes flipped inside each of 3 inter frames
    index = build(folder, tmp_path / "out")
    assert not index["skipped"]
    (meta,) = metas(tmp_path / "out")
    assert 1 <= meta["decoder_errors"] <= 9 and meta["num_frames"] == 450
    # damage in every frame is still a corrupt stream, not a tolerated blemish
    many = tmp_path / "many"
    many.mkdir()
    h264(many / "good.mp4")
    footage.damaged(many / "bad.mp4", frames=0, flipped=8, seconds=4.0)  # every inter frame damaged
    index = build(many, tmp_path / "out_many")
    assert [(s["path"], s["reason"]) for s in index["skipped"]] == [("bad.mp4", "corrupt stream")]


def test_timestamps_that_reset_mid_file_lose_no_frames(tmp_path):
    """Two recordings concatenated byte for byte (a camera's MPEG-TS segments): the second half's
    timestamps start again. Its length comes from the frame count, and every clip is kept whole."""
    folder = tmp_path / "videos"
    folder.mkdir()
    footage.timestamps_reset(folder / "reset.ts")
    info = probe(folder / "reset.ts")
    assert info.num_frames == 150 and info.duration == pytest.approx(6.0) and info.timestamps_reset
    index = build(folder, tmp_path / "out", max_clip_seconds=2.0)
    assert not index["skipped"] and index["totals"]["samples"] == 3 and index["totals"]["frames"] == 150


def test_an_mpeg1_stream_with_a_bitrate_guessed_duration_is_not_too_short(tmp_path):
    """A raw MPEG-1 stream (.m1v) has no container timing: FFmpeg guesses 0.06 s from the bitrate
    and 25 fps by default. Its 162 frames at 30 fps used to be skipped as "too short (0.06 s)"."""
    folder = tmp_path / "videos"
    folder.mkdir()
    footage.mpeg1_elementary(folder / "old.m1v")
    with av.open(str(folder / "old.m1v")) as c:
        assert c.duration / 1e6 < 1.0  # the guess
    info = probe(folder / "old.m1v")
    assert info.num_frames == 162 and info.fps == pytest.approx(30.0) and info.duration > 5.3
    index = build(folder, tmp_path / "out", max_clip_seconds=2.0)
    assert not index["skipped"] and index["totals"]["frames"] == pytest.approx(162, abs=2)


# ---- the loader's decoder ----------------------------------------------------------------------
def test_a_width_decord_cannot_read_is_widened_slightly(tmp_path):
    """decord fails on 48 px wide frames ("DECORDArrayCopyFromTo: The size must exactly match")
    where PyAV reads them: the builder checks every clip with the loader's decoder."""
    from vjepa_pipeline.shards.decoders import DecodeError, get_decoder

    folder = tmp_path / "videos"
    folder.mkdir()
    h264(folder / "narrow.mp4", size="96x128")  # short side 48 at --short-side 48 -> 48x64
    index = build(folder, tmp_path / "out", short_side=48)
    (meta,) = metas(tmp_path / "out")
    assert not index["skipped"] and (meta["width"], meta["height"]) == (50, 64)
    plain = encode_clip(str(folder / "narrow.mp4"), str(tmp_path / "48.mp4"), probe(folder / "narrow.mp4"),
                        EncodeSettings(short_side=48))
    assert plain.width == 48
    with pytest.raises(DecodeError):  # what the loader would have met
        get_decoder("decord").decode((tmp_path / "48.mp4").read_bytes(), [0, 1], plain.num_frames)


def test_passthrough_reencodes_what_the_loader_cannot_read(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    h264(folder / "fine.mp4", size="128x96")
    footage.narrow(folder / "narrow.mp4")
    build(folder, tmp_path / "out", reencode=False)
    by_source = {m["source"]: m for m in metas(tmp_path / "out")}
    assert by_source["fine.mp4"]["encoder"] == "passthrough" and "passthrough_fallback" not in by_source["fine.mp4"]
    narrow = by_source["narrow.mp4"]
    assert narrow["encoder"] != "passthrough" and "decord" in narrow["passthrough_fallback"]
    assert narrow["width"] != 48


def test_inspect_reads_every_video_with_the_loaders_decoder(tmp_path, monkeypatch):
    """A shard that PyAV reads but decord does not (a 48 px wide clip written by an older build) is
    a problem for `vjepa shards inspect`, not a pass."""
    import vjepa_pipeline.shards.build as build_mod
    from vjepa_pipeline.shards.inspect import inspect_shards

    folder = tmp_path / "videos"
    folder.mkdir()
    footage.narrow(folder / "narrow.mp4")
    monkeypatch.setattr(build_mod, "loader_problem", lambda *a, **k: None)  # an older build did not check
    build(folder, tmp_path / "out", reencode=False)
    assert inspect_shards(tmp_path / "out", decoder="pyav").ok
    report = inspect_shards(tmp_path / "out")
    assert not report.ok and any("the loader's decoder cannot read it" in p for p in report.problems)
