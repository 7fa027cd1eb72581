"""Curation in `vjepa shards build` (shards/curation.py, shards/dedup.py) on footage made here:
scene cuts land on the change (and on a keyframe), static clips are dropped by the motion filter,
a duplicate (byte copy and a smaller re-encode) is removed once with a deterministic kept copy, the
same build split over 2 array tasks gives the same shards, min / max clip length, index.json and
`vjepa shards inspect` carry the settings and counts, bad settings are one-line errors."""

from __future__ import annotations

import random
import shutil
import subprocess

import numpy as np
import pytest

from vjepa_pipeline.cli.main import main
from vjepa_pipeline.config import load_config
from vjepa_pipeline.config.schema import ShardsConfig
from vjepa_pipeline.errors import ConfigError
from vjepa_pipeline.shards.build import BuildError, ShardBuilder
from vjepa_pipeline.shards.curation import analyse, plan_pieces, score_clip
from vjepa_pipeline.shards.dedup import find_duplicates
from vjepa_pipeline.shards.format import iter_shard
from vjepa_pipeline.shards.inspect import inspect_shards
from vjepa_pipeline.shards.media import ffmpeg_exe, probe, write_video

FPS = 20
CUT_FRAME = 40  # two.mp4: scene 1 = frames 0-39, scene 2 = frames 40-74
CURATE = dict(scene_threshold=0.3, min_motion=1.0, dedup_distance=4)


def scene(frames: int, bg, fg, speed: int, h: int = 96, w: int = 128) -> np.ndarray:
    """A shaded background with a square moving across it."""
    yy, xx = np.mgrid[:h, :w]
    shade = (xx * 60 // w)[..., None]
    out = []
    for t in range(frames):
        img = np.clip(np.asarray(bg)[None, None] + shade, 0, 255).astype(np.uint8)
        cx = (10 + speed * t) % w
        img[(abs(xx - cx) < 12) & (abs(yy - h // 2) < 14)] = fg
        out.append(img)
    return np.stack(out)


def panning(frames: int, seed: int, h: int = 96, w: int = 128) -> np.ndarray:
    """A coarse random texture panning sideways by 4 px a frame."""
    tiles = np.random.default_rng(seed).integers(0, 256, (h // 16, 2 * w // 16, 3), dtype=np.uint8)
    texture = tiles.repeat(16, axis=0).repeat(16, axis=1)
    return np.stack([np.roll(texture, -4 * t, axis=1)[:, :w] for t in range(frames)])


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    src = tmp_path_factory.mktemp("footage")
    write_video(src / "two.mp4", np.concatenate([scene(CUT_FRAME, (30, 30, 40), (230, 220, 60), 3),
                                                 scene(35, (180, 190, 170), (20, 40, 160), -4)]), fps=FPS)
    write_video(src / "static.mp4", np.repeat(scene(1, (90, 60, 60), (250, 250, 250), 0), 40, axis=0), fps=FPS)
    write_video(src / "moving.mp4", panning(40, seed=5), fps=FPS)
    shutil.copyfile(src / "moving.mp4", src / "z_copy.mp4")  # a byte copy under a later name
    # the same footage re-encoded at half size and another quality
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(src / "moving.mp4"),
                    "-vf", "scale=64:48", "-c:v", "libx264", "-crf", "30", "-g", str(FPS),
                    str(src / "moving_small.mp4")], check=True)
    return src


def build(src, out, **kw):
    opts = ShardsConfig(labelled=False, samples_per_shard=3, **kw)
    return ShardBuilder(src, out, opts, log=lambda *a: None).run(progress=False)


def samples_of(out, index):
    return [s for e in index["shards"] for s in iter_shard(out / e["name"])]


def first_last_frames(mp4: bytes):
    import io

    import av

    with av.open(io.BytesIO(mp4)) as c:
        stream = c.streams.video[0]
        first_packet = next(p for p in c.demux(stream) if p.size)
        c.seek(0)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
    return first_packet.is_keyframe, frames[0], frames[-1], len(frames)


@pytest.fixture(scope="module")
def curated(footage, tmp_path_factory):
    out = tmp_path_factory.mktemp("curated") / "shards"
    return out, build(footage, out, **CURATE)


def test_two_scenes_are_cut_at_the_change_on_a_keyframe(footage, tmp_path):
    index = build(footage, tmp_path / "s", scene_threshold=0.3)
    clips = sorted(((s["json"], s["mp4"]) for s in samples_of(tmp_path / "s", index)
                    if s["json"]["source"] == "two.mp4"), key=lambda c: c[0]["clip_start"])
    assert [m["num_frames"] for m, _ in clips] == [CUT_FRAME, 35]
    cut = (CUT_FRAME - 0.5) / FPS  # between the last frame of scene 1 and the first of scene 2
    assert clips[0][0]["clip_end"] == pytest.approx(cut) and clips[1][0]["clip_start"] == pytest.approx(cut)
    key1, first1, last1, _ = first_last_frames(clips[0][1])
    key2, first2, last2, _ = first_last_frames(clips[1][1])
    assert key1 and key2  # every clip (so every cut) starts on a keyframe
    assert last1.mean() < 100 < first2.mean()  # dark scene 1 ends, bright scene 2 starts: no mixed clip
    assert clips[1][0]["curation"]["scene"] == 1
    cur = index["curation"]
    assert cur["counts"]["scene_cuts"] == 1 and cur["counts"]["dropped_static"] == 0
    assert cur["settings"]["scene_threshold"] == 0.3 and cur["settings"]["min_motion"] is None


def test_static_clip_dropped_duplicates_removed_once(curated):
    out, index = curated
    metas = [s["json"] for s in samples_of(out, index)]
    sources = sorted(m["source"] for m in metas)
    assert sources == ["moving.mp4", "two.mp4", "two.mp4"]  # kept: the largest source, then smallest path
    counts = index["curation"]["counts"]
    assert counts["dropped_static"] == 1 and counts["dropped_near_duplicate"] == 2
    assert counts["kept"] == 3 == index["totals"]["samples"]
    assert counts["candidate_clips"] == 6 and counts["videos_analysed"] == 5
    dropped = {(d["source"], d["reason"]) for d in index["curation"]["dropped"]}
    assert dropped == {("static.mp4", "static"), ("z_copy.mp4", "near_duplicate"),
                       ("moving_small.mp4", "near_duplicate")}
    for d in index["curation"]["dropped"]:
        if d["reason"] == "near_duplicate":
            assert d["duplicate_of"]["source"] == "moving.mp4"
        else:
            assert d["motion"] < CURATE["min_motion"]
    assert index["totals"]["sharded"] == 2 and index["totals"]["videos"] == 5
    hist = index["curation"]["histograms"]
    assert sum(hist["motion"].values()) == 6 and sum(hist["scene_seconds"].values()) == 6


def test_same_result_across_two_array_tasks(footage, curated, tmp_path):
    out, whole = curated
    builder = ShardBuilder(footage, tmp_path / "a", ShardsConfig(labelled=False, samples_per_shard=3, **CURATE),
                           log=lambda *a: None)
    plan = builder.plan()
    task_of = {it["rel"]: i % 2 for i, it in enumerate(plan["items"])}
    # the kept copy and both duplicates are not all in one task: the pack step must decide across tasks
    assert len({task_of[n] for n in ("moving.mp4", "z_copy.mp4", "moving_small.mp4")}) == 2
    for task in (1, 0):  # in any order, as SLURM runs them
        builder.encode(plan, task, 2, progress=False)
    split = builder.pack(plan)
    builder.finish()
    assert split == whole  # same shards (sha256 in the index), same curation record
    assert (tmp_path / "a" / "index.json").read_bytes() == (out / "index.json").read_bytes()


def test_min_and_max_clip_length(footage, tmp_path):
    index = build(footage, tmp_path / "m", scene_threshold=0.3, max_clip_seconds=1.0, min_seconds=0.9)
    metas = [s["json"] for s in samples_of(tmp_path / "m", index)]
    assert metas and all(0.9 <= m["clip_end"] - m["clip_start"] <= 1.0 + 1e-6 for m in metas)
    two = sorted((m["clip_start"], m["clip_end"]) for m in metas if m["source"] == "two.mp4")
    assert two == [(0.0, 1.0), (1.0, 1.975), (1.975, 2.975)]  # scene 2's 0.775 s tail is too short
    short = [d for d in index["curation"]["dropped"] if d["reason"] == "too_short"]
    assert {d["source"] for d in short} == {"two.mp4"} and index["curation"]["counts"]["dropped_too_short"] == 1
    assert index["curation"]["settings"]["max_clip_seconds"] == 1.0


def test_inspect_and_build_summary_show_curation(curated, capsys, tmp_path):
    from PIL import Image

    out, index = curated
    report = inspect_shards(out, decode=False, sheet_path=tmp_path / "sheet.png", sheet_samples=1)
    assert report.ok, report.problems
    with Image.open(tmp_path / "curation_histograms.png") as png:
        assert png.width > 200 and png.height > 150
    text = report.render()
    assert "curation: scene_threshold=0.3, min_motion=1.0, dedup_distance=4" in text
    assert "dropped static" in text and "dropped near_duplicate" in text
    assert "motion score" in text and "scene length" in text
    assert main(["shards", "inspect", str(out), "--no-decode", "--sheet-samples", "0"]) == 0
    shown = capsys.readouterr().out
    lines = [ln.split() for ln in shown.splitlines()]
    assert ["dropped", "near_duplicate", "2"] in lines and ["dropped", "static", "1"] in lines


def test_curation_off_changes_nothing(footage, tmp_path):
    index = build(footage, tmp_path / "plain")
    assert "curation" not in index and index["totals"]["samples"] == 5
    assert all("curation" not in s["json"] for s in samples_of(tmp_path / "plain", index))


def test_dedup_is_order_independent_and_prefers_priority():
    rng = random.Random(0)
    base = rng.getrandbits(256)
    clips = []
    for i in range(40):
        sig = base if i % 4 == 0 else rng.getrandbits(256)
        if i % 8 == 4:
            sig = base ^ (1 << rng.randrange(256)) ^ (1 << rng.randrange(256))  # 2 bits off
        clips.append({"key": f"k{i:02d}", "signature": f"{sig:064x}", "duration": 2.0, "priority": (i,)})
    want = find_duplicates(clips, 2)
    for _ in range(3):
        rng.shuffle(clips)
        assert find_duplicates(clips, 2) == want
    group = {c["key"] for c in clips if c["signature"] == f"{base:064x}"} | {f"k{i:02d}" for i in range(4, 40, 8)}
    assert set(want) == group - {"k00"} and set(want.values()) == {"k00"}
    assert find_duplicates(clips, 0) == {k: "k00" for k in group - {"k00"} if int(k[1:]) % 8 == 0}


def test_analysis_scores(footage):
    info = probe(footage / "two.mp4")
    an = analyse(str(footage / "two.mp4"), info)
    assert len(an.times) == info.num_frames
    scores = an.scene_scores()
    assert int(np.argmax(scores)) == CUT_FRAME and scores[CUT_FRAME] > 0.3 > np.delete(scores, CUT_FRAME).max()
    opts = ShardsConfig(min_motion=1.0, dedup_distance=4)
    plan = plan_pieces(an, info, opts, None, None)  # no scene_threshold: one piece
    assert plan["scenes"] == [3.75] and [(p["start"], p["end"]) for p in plan["pieces"]] == [(0.0, 3.75)]
    cut = plan_pieces(an, info, ShardsConfig(scene_threshold=0.3), None, None)
    assert [p["scene"] for p in cut["pieces"]] == [0, 1] and cut["pieces"][0]["end"] == pytest.approx(1.975)
    moving = score_clip(an, opts)
    assert moving["motion"] > 1.0 and not moving["static"] and len(moving["signature"]) == 64
    static = probe(footage / "static.mp4")
    assert score_clip(analyse(str(footage / "static.mp4"), static), opts)["static"]


@pytest.mark.parametrize("override, words", [
    ("shards.scene_threshold=1.5", "shards.scene_threshold: 1.5 must be in (0, 1)"),
    ("shards.min_motion=-1", "shards.min_motion: must be >= 0"),
    ("shards.dedup_distance=99", "shards.dedup_distance: 99 must be in [0, 32]"),
])
def test_bad_settings_are_one_line_errors(override, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert words in str(err.value) and "\n" not in str(err.value).strip()


def test_bad_settings_on_the_command_line(footage, tmp_path, capsys):
    assert main(["shards", "build", str(footage), str(tmp_path / "o"), "--scene-threshold", "0",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "scene_threshold" in err
    assert main(["shards", "build", str(footage), str(tmp_path / "o"), "--passthrough", "--scene-threshold",
                 "0.3", "--no-progress"]) == 2
    assert "needs reencode=true" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_trajectory_source_refuses_curation(tmp_path):
    from vjepa_pipeline.shards.trajectory_writers import write_episodes

    write_episodes(tmp_path / "eps", 1, frames=12)
    with pytest.raises(BuildError, match="curation .* applies to video sources only"):
        ShardBuilder(tmp_path / "eps", tmp_path / "o", ShardsConfig(min_motion=1.0)).plan()
