"""Trajectory sources of the shard builder: layout detection, discovery of the three layouts (generic
episode folders, JSON-lines manifests, DROID raw), the side-file readers and their verdicts, the
official DROID pose deltas and the window action rule. Fast and CPU-only: tiny generated episodes."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vjepa_pipeline.config.schema import ShardsConfig
from vjepa_pipeline.shards.actions import pose_deltas, window_actions
from vjepa_pipeline.shards.items import SourceError
from vjepa_pipeline.shards.format import iter_shard, npz_bytes, read_index, read_npz
from vjepa_pipeline.shards.media import MediaError, probe, write_video
from vjepa_pipeline.shards.trajectories import (EpisodeArrays, check_lengths, detect_layout,
                                                discover_trajectories, list_frames, read_episode)
from vjepa_pipeline.shards.trajectory_files import load_side, side_shape
from vjepa_pipeline.shards.trajectory_writers import (_droid_video, moving_square_episode, write_array,
                                                      write_droid_csv, write_droid_episode, write_episodes,
                                                      write_manifest, write_png)

OPTS = ShardsConfig()


def opts(**kw) -> ShardsConfig:
    return replace(OPTS, **kw)


def fake_episode(folder: Path, n: int = 6, adim: int = 2, sdim: int = 3, fmt: str = "npy", video: bool = True,
                 actions: bool = True, states: bool = True) -> Path:
    """An episode folder for discovery tests: discovery never opens the video, so its bytes are fake."""
    folder.mkdir(parents=True, exist_ok=True)
    if video:
        (folder / "video.mp4").write_bytes(b"not decoded by discovery")
    if actions:
        write_array(folder / f"actions.{fmt}", np.arange(n * adim, dtype=float).reshape(n, adim), "actions")
    if states:
        write_array(folder / f"states.{fmt}", np.ones((n, sdim)), "states")
    return folder


def reasons(found) -> dict[str, str]:
    """basename of the skipped path -> reason."""
    return {os.path.basename(s["path"]): s["reason"] for s in found.skipped}


# ----------------------------------------------------------------------------- shared generated data

@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trajectories")
    out = {"episodes": root / "episodes", "frames": root / "frames", "manifest_root": root / "man",
           "droid": root / "droid"}
    write_episodes(out["episodes"], 3, 10, fps=10, seed=0)
    write_episodes(out["frames"], 2, 8, fps=12, seed=5, fmt="csv", with_frames_dir=True)
    out["manifest"] = write_manifest(out["manifest_root"], n=2, frames=9, seed=3, fmt="jsonl")
    folders = [write_droid_episode(out["droid"] / f"ep{i}", 12, seed=i) for i in range(2)]
    out["droid_csv"] = write_droid_csv(root / "droid.csv", folders)
    return out


def test_detect_layout(generated, tmp_path):
    assert detect_layout(generated["episodes"]) == "episodes"
    assert detect_layout(generated["frames"]) == "episodes"
    assert detect_layout(generated["manifest"]) == "manifest"
    assert detect_layout(generated["droid"]) == "droid"
    assert detect_layout(generated["droid_csv"]) == "droid"
    (tmp_path / "videos" / "a").mkdir(parents=True)
    (tmp_path / "videos" / "a" / "clip.mp4").write_bytes(b"x")
    assert detect_layout(tmp_path / "videos") == "videos"
    video_manifest = tmp_path / "videos.jsonl"
    video_manifest.write_text('\n{"path": "a/clip.mp4", "label": 1}\n')
    assert detect_layout(video_manifest) == "videos"
    video_csv = tmp_path / "videos.csv"
    video_csv.write_text("videos/a/clip.mp4 0\n")
    assert detect_layout(video_csv) == "videos"
    # DROID wins over generic episodes anywhere in the tree
    fake_episode(tmp_path / "mixed" / "a_generic")
    write_droid_episode(tmp_path / "mixed" / "b_droid", 4)
    assert detect_layout(tmp_path / "mixed") == "droid"


def test_episodes_discovery(generated):
    found = discover_trajectories(generated["episodes"], OPTS)
    assert found.kind == "episodes" and not found.skipped and not found.labelled and found.label_map == {}
    assert sorted(it.rel for it in found.items) == ["ep_000", "ep_001", "ep_002"]
    again = discover_trajectories(generated["episodes"], OPTS)
    assert [it.uid for it in again.items] == [it.uid for it in found.items]  # stable ids, deterministic order
    orders = {tuple(it.rel for it in discover_trajectories(generated["episodes"], opts(seed=s)).items)
              for s in range(8)}
    assert len(orders) > 1  # the seed shuffles
    item = next(it for it in found.items if it.rel == "ep_001")
    traj = item.extra["trajectory"]
    folder = generated["episodes"] / "ep_001"
    assert item.path == str(folder / "video.mp4") == traj["video"]
    assert traj == {"layout": "episodes", "episode": str(folder), "video": str(folder / "video.mp4"),
                    "frames_dir": None, "fps": None, "actions": str(folder / "actions.npy"),
                    "states": str(folder / "states.npy"), "extrinsics": None, "h5": None, "camera": None,
                    "start_frame": None, "end_frame": None, "action_rule": "sum", "action_dim": 2,
                    "state_dim": 2, "extrinsics_dim": None, "states_recorded": True, "extrinsics_dropped": None}
    json.dumps(item.as_dict())
    arrays = read_episode(traj)
    _, actions, states = moving_square_episode(1, 10)
    np.testing.assert_array_equal(arrays.actions, actions)
    np.testing.assert_array_equal(arrays.states, states)
    assert arrays.extrinsics is None
    num_frames = probe(item.path).num_frames
    assert num_frames == 10
    check_lengths(arrays, num_frames, "sum")


def test_frames_dir_discovery(generated):
    from PIL import Image

    found = discover_trajectories(generated["frames"], OPTS)
    assert len(found.items) == 2 and not found.skipped
    item = next(it for it in found.items if it.rel == "ep_000")
    traj = item.extra["trajectory"]
    assert item.path == traj["frames_dir"] == str(generated["frames"] / "ep_000" / "frames")
    assert traj["video"] is None and traj["fps"] == 12.0 and traj["actions"].endswith("actions.csv")
    frames = list_frames(traj["frames_dir"])
    video, actions, _ = moving_square_episode(5, 8)
    assert len(frames) == 8
    np.testing.assert_array_equal(np.asarray(Image.open(frames[3]).convert("RGB")), video[3])
    arrays = read_episode(traj)
    np.testing.assert_array_equal(arrays.actions, actions)
    check_lengths(arrays, len(frames), "sum")


def test_manifest_discovery(generated):
    found = discover_trajectories(generated["manifest"], OPTS)
    assert found.kind == "manifest" and len(found.items) == 2 and not found.skipped
    item = next(it for it in found.items if it.rel == "episodes/ep_000/video.mp4")
    traj = item.extra["trajectory"]
    assert traj["episode"] == str(generated["manifest"])
    assert traj["actions"] == str(generated["manifest_root"] / "episodes" / "ep_000" / "actions.jsonl")
    _, actions, states = moving_square_episode(3, 9)
    arrays = read_episode(traj)
    np.testing.assert_array_equal(arrays.actions, actions)
    np.testing.assert_array_equal(arrays.states, states)


def test_manifest_ranges_and_bad_lines(generated, tmp_path):
    root = generated["manifest_root"]
    ep = "episodes/ep_000"
    good = {"video": f"{ep}/video.mp4", "actions": f"{ep}/actions.jsonl", "states": f"{ep}/states.jsonl"}
    lines = [json.dumps({**good, "start_frame": 0, "end_frame": 4}), "",
             json.dumps({**good, "start_frame": 4, "end_frame": 9}),
             json.dumps({**good, "start_frame": 4, "end_frame": 9}),  # duplicate
             "{not json", json.dumps([1, 2]),
             json.dumps({**good, "colour": "red"}),
             json.dumps({**good, "start_frame": 5, "end_frame": 5}),
             json.dumps({**good, "actions": f"{ep}/nope.npy"}),
             json.dumps({**good, "video": f"{ep}/nope.mp4"}),
             json.dumps({k: v for k, v in good.items() if k != "actions"})]
    manifest = root / "ranges.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    found = discover_trajectories(manifest, OPTS)
    assert len(found.items) == 2
    assert len({it.uid for it in found.items}) == 2  # two ranges of one video differ
    trajs = [it.extra["trajectory"] for it in found.items]
    assert {(t["start_frame"], t["end_frame"]) for t in trajs} == {(0, 4), (4, 9)}
    got = [(s["reason"], s["detail"].split(":")[0]) for s in found.skipped]
    assert got == [("duplicate line", "line 4"), ("bad manifest line", "line 5"),
                   ("bad manifest line", "line 6"), ("bad manifest line", "line 7"),
                   ("bad manifest line", "line 8"),
                   ("missing actions file", "line 9"), ("missing video", "line 10"),
                   ("missing actions file", "line 11")]
    assert "colour" in found.skipped[3]["detail"]


def test_droid_discovery(generated):
    for source in (generated["droid"], generated["droid_csv"]):
        found = discover_trajectories(source, OPTS)
        assert found.kind == "droid" and len(found.items) == 2 and not found.skipped
        item = min(found.items, key=lambda it: it.rel)
        traj = item.extra["trajectory"]
        folder = generated["droid"] / "ep0"
        assert item.path == traj["video"] == str(folder / "recordings" / "MP4" / "12345678.mp4")
        assert (traj["camera"], traj["action_rule"], traj["action_dim"], traj["state_dim"],
                traj["extrinsics_dim"]) == ("12345678", "pose_delta", None, 7, 6)
        assert traj["h5"] == str(folder / "trajectory.h5")
    arrays = read_episode(traj)
    with h5py.File(folder / "trajectory.h5") as h5:
        expected = np.concatenate([h5["observation/robot_state/cartesian_position"][:],
                                   h5["observation/robot_state/gripper_position"][:][:, None]], axis=1)
        np.testing.assert_array_equal(arrays.extrinsics, h5["observation/camera_extrinsics/12345678_left"][:])
    np.testing.assert_array_equal(arrays.states, expected)
    assert arrays.actions is None
    check_lengths(arrays, probe(item.path).num_frames, "pose_delta")
    by_dir = [discover_trajectories(generated["droid"], opts(seed=s)) for s in (0, 0, 1)]
    assert [it.uid for it in by_dir[0].items] == [it.uid for it in by_dir[1].items]
    assert {it.uid for it in by_dir[0].items} == {it.uid for it in by_dir[2].items}
    assert {it.rel for it in by_dir[0].items} == {"ep0", "ep1"}  # the CSV's rel is the line as written
    with pytest.raises(SourceError, match="must be pose_delta"):
        discover_trajectories(generated["droid"], opts(action_rule="sum"))


def test_droid_bad_episodes(tmp_path):
    good = write_droid_episode(tmp_path / "good", 6)
    no_camera = write_droid_episode(tmp_path / "no_camera", 6)
    meta = next(no_camera.glob("metadata_*.json"))
    meta.write_text(json.dumps({"right_mp4_path": "x/recordings/MP4/1.mp4"}))
    no_recording = write_droid_episode(tmp_path / "no_recording", 6)
    (no_recording / "recordings" / "MP4" / "12345678.mp4").unlink()
    no_meta = write_droid_episode(tmp_path / "no_meta", 6)
    next(no_meta.glob("metadata_*.json")).unlink()
    bad_h5 = write_droid_episode(tmp_path / "bad_h5", 6)
    (bad_h5 / "trajectory.h5").write_bytes(b"garbage")
    no_h5 = tmp_path / "no_h5"
    no_h5.mkdir()
    no_extrinsics = write_droid_episode(tmp_path / "no_extrinsics", 6, with_extrinsics=False)
    csv = write_droid_csv(tmp_path / "list.csv", [good, no_camera, no_recording, no_meta, bad_h5, no_h5,
                                                  no_extrinsics], relative=True)
    found = discover_trajectories(csv, opts(layout="droid"))
    assert sorted(it.rel for it in found.items) == ["good", "no_extrinsics"]
    dims = {it.rel: it.extra["trajectory"]["extrinsics_dim"] for it in found.items}
    assert dims == {"good": 6, "no_extrinsics": None}
    assert reasons(found) == {"no_camera": "camera not in metadata", "no_recording": "missing recording",
                              "no_meta": "no metadata json", "bad_h5": "unreadable trajectory.h5",
                              "no_h5": "missing trajectory.h5"}
    # another camera key: the metadata names a recording that was not written
    with pytest.raises(SourceError, match="all skipped"):
        discover_trajectories(csv, opts(droid_camera="wrist_mp4_path"))


def test_bad_episodes_become_named_skips(tmp_path):
    root = tmp_path / "src"
    for name in ("a_good", "b_good", "c_good"):
        fake_episode(root / name)
    fake_episode(root / "missing_actions", actions=False)
    fake_episode(root / "garbage_npy")
    (root / "garbage_npy" / "actions.npy").write_bytes(b"\x00garbage bytes, not an array" * 4)
    fake_episode(root / "wrong_dim", adim=3)
    fake_episode(root / "several_videos")
    (root / "several_videos" / "other.mkv").write_bytes(b"x")
    fake_episode(root / "no_video", video=False)
    gap = fake_episode(root / "frames_gap", video=False)
    (gap / "frames").mkdir()
    for t in (0, 1, 3):
        write_png(gap / "frames" / f"img_{t:04d}.png", np.zeros((4, 4, 3), np.uint8))
    (gap / "episode.json").write_text('{"fps": 5}')
    fake_episode(root / "bad_json")
    (root / "bad_json" / "episode.json").write_text('{"fps": 5, "colour": "red"}')
    fake_episode(root / "count_mismatch")
    write_array(root / "count_mismatch" / "actions.npy", np.zeros((9, 2)), "actions")
    fake_episode(root / "nested" / "deeper")
    found = discover_trajectories(root, OPTS)
    assert sorted(it.rel for it in found.items) == ["a_good", "b_good", "c_good", "nested/deeper"]
    assert reasons(found) == {
        "missing_actions": "missing actions file", "garbage_npy": "unreadable actions file",
        "wrong_dim": "wrong action dimension", "several_videos": "several videos: name one in episode.json",
        "no_video": "no video", "frames_gap": "frame numbers not consecutive", "bad_json": "bad episode.json",
        "count_mismatch": "action / state count mismatch"}
    details = {os.path.basename(s["path"]): s["detail"] for s in found.skipped}
    assert details["wrong_dim"] == "3 (expected 2)" and "colour" in details["bad_json"]
    assert "2 missing" in details["frames_gap"]
    # a forced dimension wins over the most common one
    forced = discover_trajectories(root, opts(action_dim=3))
    assert [it.rel for it in forced.items] == ["wrong_dim"]
    # pose_delta without states skips every episode; the error is one line
    (root / "missing_actions" / "states.npy").unlink()
    for name in ("a_good", "b_good", "c_good", "wrong_dim", "count_mismatch", "nested/deeper"):
        (root / name / "states.npy").unlink()
    with pytest.raises(SourceError, match="no states for pose_delta") as err:
        discover_trajectories(root, opts(action_rule="pose_delta"))
    assert "\n" not in str(err.value)


def test_episode_json_picks_video_and_symlink_loops(tmp_path):
    root = tmp_path / "src"
    ep = fake_episode(root / "ep")
    (ep / "other.mkv").write_bytes(b"x")
    (ep / "episode.json").write_text('{"video": "other.mkv", "fps": 30, "start_frame": 1, "end_frame": 4}')
    os.symlink(root, root / "loop")
    found = discover_trajectories(root, OPTS)
    traj = found.items[0].extra["trajectory"]
    got = (traj["video"], traj["fps"], traj["start_frame"], traj["end_frame"])
    assert got == (str(ep / "other.mkv"), 30.0, 1, 4)
    assert found.items[0].uid != discover_trajectories(ep, OPTS).items[0].uid  # rel "ep" vs "."
    assert reasons(found) == {"loop": "directory already visited"}


def test_many_episodes_keep_walk_order(tmp_path):
    for i in range(70):  # past the thread-pool threshold
        fake_episode(tmp_path / f"ep_{i:03d}", actions=i not in (10, 40))
    found = discover_trajectories(tmp_path, OPTS)
    assert len(found.items) == 68
    assert [os.path.basename(s["path"]) for s in found.skipped] == ["ep_010", "ep_040"]


def test_forced_layouts(generated, tmp_path):
    assert discover_trajectories(generated["manifest"], opts(layout="episodes")).kind == "manifest"
    with pytest.raises(SourceError, match="not a directory or a .csv"):
        discover_trajectories(generated["manifest"], opts(layout="droid"))
    with pytest.raises(SourceError, match="layout is videos"):
        discover_trajectories(generated["episodes"], opts(layout="videos"))
    # forced episodes ignore DROID folders; forced droid ignores generic ones
    fake_episode(tmp_path / "a_generic")
    write_droid_episode(tmp_path / "b_droid", 4)
    assert [it.rel for it in discover_trajectories(tmp_path, opts(layout="episodes")).items] == ["a_generic"]
    assert [it.rel for it in discover_trajectories(tmp_path, opts(layout="droid")).items] == ["b_droid"]
    with pytest.raises(SourceError, match="needs 7-dimensional states"):
        discover_trajectories(tmp_path, opts(layout="episodes", action_rule="pose_delta", state_dim=3))


def test_nothing_usable_is_one_line(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.mp4").write_bytes(b"x")
    with pytest.raises(SourceError, match="holds no trajectories"):
        discover_trajectories(tmp_path / "v", OPTS)
    with pytest.raises(SourceError, match="does not exist"):
        discover_trajectories(tmp_path / "nope", OPTS)
    fake_episode(tmp_path / "e" / "x", actions=False)
    with pytest.raises(SourceError, match=r"1 episodes found, all skipped \(first: .*missing actions file"):
        discover_trajectories(tmp_path / "e", OPTS)


# ----------------------------------------------------------------------------- readers

def test_all_formats_read_the_same(tmp_path):
    arr = np.random.default_rng(0).normal(size=(7, 3)) * 1e3
    for fmt in ("npy", "npz", "csv", "jsonl"):
        path = write_array(tmp_path / f"states.{fmt}", arr, "states")
        assert side_shape(str(path), "states") == (7, 3)
        np.testing.assert_array_equal(load_side(str(path), "states"), arr)
    rows = [json.dumps({"t": i, "a": list(r)}) for i, r in enumerate(arr)]  # objects with one list value
    (tmp_path / "obj.jsonl").write_text("\n".join(rows) + "\n")
    np.testing.assert_array_equal(load_side(str(tmp_path / "obj.jsonl"), "actions"), arr)
    (tmp_path / "plain.csv").write_text("1,2\n3,4\n")  # no header
    np.testing.assert_array_equal(load_side(str(tmp_path / "plain.csv"), "actions"), [[1, 2], [3, 4]])
    np.save(tmp_path / "flat.npy", np.arange(5, dtype=np.int32))  # 1-D -> (N, 1)
    assert load_side(str(tmp_path / "flat.npy"), "actions").shape == (5, 1)
    np.savez(tmp_path / "other.npz", whatever=arr)  # the only array
    np.testing.assert_array_equal(load_side(str(tmp_path / "other.npz"), "actions"), arr)


@pytest.mark.parametrize("name, content, reason", [
    ("a.csv", "x,y\n1,2\n3\n", "ragged actions file"),
    ("b.csv", "x,y\n1,2\n3,abc\n", "actions file not numeric"),
    ("c.jsonl", "[1, 2]\n[1, \"a\"]\n", "actions file not numeric"),
    ("d.jsonl", "[1, 2]\n{oops\n", "unreadable actions file"),
    ("e.csv", "", "empty actions file"),
])
def test_text_formats_refuse_bad_rows(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(MediaError) as err:
        load_side(str(path), "actions")
    assert err.value.reason == reason


def test_numpy_formats_refuse_bad_arrays(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.zeros(3), b=np.zeros(3))
    np.save(tmp_path / "cube.npy", np.zeros((4, 2, 2)))
    np.save(tmp_path / "complex.npy", np.zeros((4, 2), dtype=complex))
    for name, reason in (("two.npz", "ambiguous npz"), ("cube.npy", "bad actions shape"),
                         ("complex.npy", "actions file not numeric")):
        for fn in (side_shape, load_side):
            with pytest.raises(MediaError) as err:
                fn(str(tmp_path / name), "actions")
            assert err.value.reason == reason, (name, fn)


UNPICKLED: list = []


class Tripwire:
    def __setstate__(self, state):  # runs if anyone unpickles it
        UNPICKLED.append(state)


def test_pickled_arrays_are_refused_without_unpickling(tmp_path):
    arr = np.empty(3, dtype=object)
    arr[:] = [Tripwire(), Tripwire(), Tripwire()]
    for t in arr:
        t.x = 1
    np.savez(tmp_path / "actions.npz", actions=arr)  # savez pickles object arrays
    np.save(tmp_path / "actions.npy", arr, allow_pickle=True)
    for name in ("actions.npz", "actions.npy"):
        for fn in (side_shape, load_side):
            with pytest.raises(MediaError) as err:
                fn(str(tmp_path / name), "actions")
            assert err.value.reason == "actions file not numeric"
    assert UNPICKLED == []


def test_non_finite_values_are_verdicts(tmp_path):
    ep = fake_episode(tmp_path / "ep", n=5)
    actions = np.zeros((5, 2))
    actions[3, 1] = np.nan
    write_array(ep / "actions.npy", actions, "actions")
    found = discover_trajectories(tmp_path, OPTS)  # discovery reads shapes only
    traj = found.items[0].extra["trajectory"]
    with pytest.raises(MediaError) as err:
        read_episode(traj)
    assert (err.value.reason, err.value.detail) == ("non-finite actions", "row 3")
    write_array(ep / "actions.npy", np.zeros((5, 2)), "actions")
    states = np.ones((5, 3))
    states[0, 0] = np.inf
    write_array(ep / "states.npy", states, "states")
    with pytest.raises(MediaError) as err:
        read_episode(traj)
    assert (err.value.reason, err.value.detail) == ("non-finite states", "row 0")
    write_array(ep / "states.npy", np.ones((5, 4)), "states")  # changed after discovery
    with pytest.raises(MediaError, match="wrong state dimension"):
        read_episode(traj)


def test_check_lengths():
    arrays = EpisodeArrays(actions=np.zeros((10, 2)), states=np.zeros((10, 3)), extrinsics=None)
    fit = check_lengths(arrays, 10, "sum")
    assert fit.frames == 10 and fit.trimmed is None and fit.arrays.states.shape == (10, 3)
    check_lengths(replace(arrays, actions=np.zeros((9, 2))), 10, "mean")
    for n in (8, 11):  # actions follow the states: 10 or 9 of them
        with pytest.raises(MediaError) as err:
            check_lengths(replace(arrays, actions=np.zeros((n, 2))), 10, "sum")
        got = (err.value.reason, err.value.detail)
        assert got == ("action / state count mismatch", f"{n} actions for 10 states")
    with pytest.raises(MediaError) as err:  # more than max(2, 1 %) apart: a skip naming both counts
        check_lengths(replace(arrays, actions=np.zeros((7, 2)), states=np.zeros((7, 3))), 10, "sum")
    assert (err.value.reason, err.value.detail) == ("state / frame count mismatch", "7 states for 10 frames")
    check_lengths(EpisodeArrays(None, np.zeros((10, 7)), np.zeros((10, 6))), 10, "pose_delta")


def test_check_lengths_trims_a_frame_or_two():
    rows = np.arange(12, dtype=float)[:, None]
    # video longer than the states: the last frames are not used
    fit = check_lengths(EpisodeArrays(rows[:9], rows[:10], rows[:10]), 12, "sum")
    assert (fit.frames, fit.trimmed) == (10, {"frames": 2, "rows": 0})
    assert len(fit.arrays.states) == len(fit.arrays.extrinsics) == 10 and len(fit.arrays.actions) == 9
    # states longer than the video: the last rows are not used; the actions follow (N or N - 1)
    fit = check_lengths(EpisodeArrays(rows[:12], rows[:12], None), 10, "sum")
    assert (fit.frames, fit.trimmed) == (10, {"frames": 0, "rows": 2})
    np.testing.assert_array_equal(fit.arrays.states, rows[:10])
    assert len(fit.arrays.actions) == 10
    fit = check_lengths(EpisodeArrays(rows[:11], rows[:12], None), 10, "sum")
    assert len(fit.arrays.actions) == 10
    # without states the actions are the reference: N - 1 (or N) of them
    fit = check_lengths(EpisodeArrays(rows[:8], None, None), 10, "sum")
    assert (fit.frames, fit.trimmed, len(fit.arrays.actions)) == (9, {"frames": 1, "rows": 0}, 8)
    fit = check_lengths(EpisodeArrays(rows[:11], None, None), 10, "sum")
    assert (fit.frames, fit.trimmed, len(fit.arrays.actions)) == (10, {"frames": 0, "rows": 1}, 10)
    assert check_lengths(EpisodeArrays(rows[:9], None, None), 10, "first").trimmed is None
    with pytest.raises(MediaError) as err:
        check_lengths(EpisodeArrays(rows[:5], None, None), 10, "sum")
    assert (err.value.reason, err.value.detail) == ("action / frame count mismatch", "5 actions for 10 frames")
    # 1 % of the frames, when that is more than 2
    big = np.zeros((400, 7))
    assert check_lengths(EpisodeArrays(None, big[:396], None), 400, "pose_delta").frames == 396
    with pytest.raises(MediaError, match="state / frame count mismatch"):
        check_lengths(EpisodeArrays(None, big[:395], None), 400, "pose_delta")
    # extrinsics that do not fit are dropped, the episode kept
    fit = check_lengths(EpisodeArrays(rows[:9], rows[:10], rows[:7]), 10, "sum")
    assert fit.arrays.extrinsics is None and fit.frames == 10
    assert fit.arrays.extrinsics_dropped == "extrinsics / frame count mismatch: 7 extrinsics for 10 frames"


# ----------------------------------------------------------------------------- pose deltas, the action rule

def official_poses_to_diffs(poses):
    """vjepa2 app/vjepa_droid/droid.py ``DROIDVideoDataset.poses_to_diffs``, verbatim."""
    xyz = poses[:, :3]  # shape [T, 3]
    thetas = poses[:, 3:6]  # euler angles, shape [T, 3]
    matrices = [Rotation.from_euler("xyz", theta, degrees=False).as_matrix() for theta in thetas]
    xyz_diff = xyz[1:] - xyz[:-1]
    angle_diff = [matrices[t + 1] @ matrices[t].T for t in range(len(matrices) - 1)]
    angle_diff = [Rotation.from_matrix(mat).as_euler("xyz", degrees=False) for mat in angle_diff]
    angle_diff = np.stack([d for d in angle_diff], axis=0)
    closedness = poses[:, -1:]
    closedness_delta = closedness[1:] - closedness[:-1]
    return np.concatenate([xyz_diff, angle_diff, closedness_delta], axis=1)


def test_pose_deltas_match_the_official_loop():
    rng = np.random.default_rng(0)
    poses = np.concatenate([rng.normal(size=(50, 3)), rng.uniform(-np.pi, np.pi, (50, 3)),
                            rng.uniform(0, 1, (50, 1))], axis=1)
    np.testing.assert_allclose(pose_deltas(poses), official_poses_to_diffs(poses), rtol=0, atol=1e-12)
    assert pose_deltas(poses[:1]).shape == (0, 7)
    with pytest.raises(ValueError):
        pose_deltas(np.zeros((4, 6)))


def test_window_actions_rules():
    actions = np.arange(10, dtype=float)[:, None]
    idx = [0, 3, 6, 9]
    np.testing.assert_array_equal(window_actions(actions, None, idx, "sum"), [[3], [12], [21]])
    np.testing.assert_array_equal(window_actions(actions, None, idx, "mean"), [[1], [4], [7]])
    np.testing.assert_array_equal(window_actions(actions, None, idx, "first"), [[0], [3], [6]])
    np.testing.assert_array_equal(window_actions(actions, None, [2, 3, 5], "sum"), [[2], [7]])
    # N - 1 actions suffice for a window ending at the last frame
    np.testing.assert_array_equal(window_actions(actions[:9], None, [1, 5, 9], "sum"), [[10], [26]])
    out = window_actions(actions, None, idx, "sum")
    assert out.dtype == np.float32 and out.shape == (3, 1)
    states = np.random.default_rng(1).normal(size=(10, 7))
    np.testing.assert_allclose(window_actions(None, states, idx, "pose_delta"), pose_deltas(states[idx]),
                               atol=1e-6)
    # a sum over kept frames equals the displacement between their states (moving square)
    _, acts, sts = moving_square_episode(2, 12)
    kept = [0, 4, 8, 11]
    np.testing.assert_array_equal(window_actions(acts, sts, kept, "sum"), np.diff(sts[kept], axis=0))
    for bad in ([3, 3, 5], [5, 3], [0, 11]):
        with pytest.raises(ValueError):
            window_actions(actions, None, bad, "sum")
    with pytest.raises(ValueError):
        window_actions(None, states, idx, "sum")


def test_moving_square_is_deterministic_and_consistent():
    video, actions, states = moving_square_episode(7, 20)
    again = moving_square_episode(7, 20)
    assert all(np.array_equal(a, b) for a, b in zip((video, actions, states), again))
    assert video.shape == (20, 64, 64, 3) and actions.shape == (19, 2) and states.shape == (20, 2)
    np.testing.assert_array_equal(np.diff(states, axis=0), actions)
    assert np.abs(actions).max() <= 6 and states.min() >= 0 and states.max() <= 48
    for t in (0, 19):
        x, y = states[t].astype(int)
        assert video[t, y, x, 0] == 235 and video[t, y + 15, x + 15, 0] == 235


# ----------------------------------------------------------------------------- states, extrinsics: discovery

def test_states_are_all_or_nothing_across_a_source(tmp_path):
    none = tmp_path / "none"
    for name in ("a", "b"):
        fake_episode(none / name, states=False)
    found = discover_trajectories(none, OPTS)
    assert len(found.items) == 2 and not found.skipped
    assert all(it.extra["trajectory"]["states_recorded"] is False for it in found.items)
    assert all(it.extra["trajectory"]["state_dim"] is None for it in found.items)
    assert discover_trajectories(none, opts(state_dim=1)).items
    with pytest.raises(SourceError, match="no episode has a states file.*state_dim 3"):
        discover_trajectories(none, opts(state_dim=3))
    some = tmp_path / "some"
    fake_episode(some / "a")
    fake_episode(some / "b", states=False)
    fake_episode(some / "c")
    found = discover_trajectories(some, OPTS)
    assert sorted(it.rel for it in found.items) == ["a", "c"]
    assert all(it.extra["trajectory"]["states_recorded"] is True for it in found.items)
    assert [(os.path.basename(s["path"]), s["reason"], s["detail"]) for s in found.skipped] == [
        ("b", "missing states file", "other episodes have states")]
    with pytest.raises(SourceError, match="no states for pose_delta"):  # pose_delta still needs them
        discover_trajectories(none, opts(action_rule="pose_delta"))


def test_extrinsics_problems_drop_the_extrinsics_not_the_episode(tmp_path):
    root = tmp_path / "src"
    for name in ("a", "b", "c", "d", "e"):
        fake_episode(root / name)
    for name in ("a", "b", "e"):
        write_array(root / name / "extrinsics.npy", np.zeros((6, 6)), "extrinsics")
    write_array(root / "c" / "extrinsics.npy", np.zeros((6, 5)), "extrinsics")  # the odd dimension
    (root / "d" / "extrinsics.npy").write_bytes(b"\x00not an array" * 4)  # unreadable
    bad = np.zeros((6, 6))
    bad[2, 3] = np.inf
    write_array(root / "e" / "extrinsics.npy", bad, "extrinsics")  # shape fine, values not: seen on reading
    found = discover_trajectories(root, OPTS)
    assert sorted(it.rel for it in found.items) == ["a", "b", "c", "d", "e"] and not found.skipped
    traj = {it.rel: it.extra["trajectory"] for it in found.items}
    assert traj["a"]["extrinsics_dim"] == 6 and traj["a"]["extrinsics_dropped"] is None
    assert traj["c"]["extrinsics_dim"] is None
    assert traj["c"]["extrinsics_dropped"] == "wrong extrinsics dimension: 5 (expected 6)"
    assert traj["d"]["extrinsics_dropped"].startswith("unreadable extrinsics file")
    assert read_episode(traj["a"]).extrinsics.shape == (6, 6)
    for name in ("c", "d"):
        arrays = read_episode(traj[name])
        assert arrays.extrinsics is None and arrays.extrinsics_dropped == traj[name]["extrinsics_dropped"]
        assert arrays.states.shape == (6, 3)
    arrays = read_episode(traj["e"])
    assert arrays.extrinsics is None and arrays.extrinsics_dropped == "non-finite extrinsics: row 2"
    # the manifest: a missing extrinsics file is dropped too
    line = {"video": str(root / "a" / "video.mp4"), "actions": str(root / "a" / "actions.npy"),
            "states": str(root / "a" / "states.npy"), "extrinsics": str(root / "a" / "nope.npy")}
    (tmp_path / "m.jsonl").write_text(json.dumps(line) + "\n")
    (item,) = discover_trajectories(tmp_path / "m.jsonl", OPTS).items
    assert item.extra["trajectory"]["extrinsics_dropped"].startswith("unreadable extrinsics file")


def test_droid_bad_extrinsics_are_dropped(tmp_path):
    ep = write_droid_episode(tmp_path / "ep", 6)
    with h5py.File(ep / "trajectory.h5", "a") as h5:
        key = "observation/camera_extrinsics/12345678_left"
        del h5[key]
        h5.create_dataset(key, data=np.zeros((5, 6)))  # one row short of the states
    (item,) = discover_trajectories(tmp_path, OPTS).items
    traj = item.extra["trajectory"]
    assert traj["extrinsics_dim"] is None and traj["extrinsics_dropped"].startswith("bad extrinsics")
    arrays = read_episode(traj)
    assert arrays.extrinsics is None and arrays.states.shape == (6, 7)
    ok = write_droid_episode(tmp_path / "ok", 6, seed=1)
    with h5py.File(ok / "trajectory.h5", "a") as h5:
        h5["observation/camera_extrinsics/12345678_left"][3, 0] = np.nan
    traj = next(it for it in discover_trajectories(tmp_path, OPTS).items if it.rel == "ok").extra["trajectory"]
    arrays = read_episode(traj)
    assert arrays.extrinsics is None and arrays.extrinsics_dropped == "non-finite extrinsics: row 3"


# ----------------------------------------------------------------------------- the build

LEVEL = 4  # frame i of an index video has brightness LEVEL * i


def build(source: Path, out: Path, **kw) -> dict:
    from vjepa_pipeline.shards.build import ShardBuilder

    ShardBuilder(source, out, replace(OPTS, short_side=None, crf=0, **kw), log=lambda *a: None).run(progress=False)
    return read_index(out)[1]


def built_samples(out: Path) -> list[dict]:
    index = read_index(out)[1]
    return [s for shard in index["shards"] for s in iter_shard(out / shard["name"])]


def decoded(mp4: bytes, count: int) -> np.ndarray:
    from vjepa_pipeline.shards.decoders import get_decoder

    return get_decoder("decord").decode(mp4, list(range(count)), count)


def index_episode(folder: Path, frames: int, fps: float = 20, states: int | None = None, actions: bool = True,
                  **episode) -> Path:
    """Frames whose brightness encodes their index; states (i, -i) with ``states`` rows (default: one per
    frame), actions (1, i), one fewer than the states (or the frames)."""
    folder.mkdir(parents=True)
    video = np.zeros((frames, 48, 64, 3), np.uint8)
    for i in range(frames):
        video[i] = LEVEL * i
    write_video(folder / "video.mp4", video, fps=fps, crf=0, gop=5)
    rows = states or frames
    i = np.arange(rows, dtype=np.float64)
    if states != 0:
        np.save(folder / "states.npy", np.stack([i, -i], 1))
    if actions:
        np.save(folder / "actions.npy", np.stack([np.ones(rows - 1), i[:-1]], 1))
    if episode:
        (folder / "episode.json").write_text(json.dumps(episode))
    return folder


def shown(mp4: bytes, count: int) -> list[int]:
    return [int(round(float(f.mean()) / LEVEL)) for f in decoded(mp4, count)]


def test_build_without_states_writes_one_zero_column(tmp_path):
    src = tmp_path / "src"
    for n in range(2):
        index_episode(src / f"ep{n}", 12 + n, states=0)
    index = build(src, tmp_path / "out")
    assert index["trajectories"]["state_dim"] == [1]
    samples = built_samples(tmp_path / "out")
    assert len(samples) == 2
    for s in samples:
        t, arrays = s["json"]["trajectory"], read_npz(s["npz"])
        n = s["json"]["num_frames"]
        assert t["states_recorded"] is False and t["state_dim"] == 1 and "trimmed" not in t
        np.testing.assert_array_equal(arrays["states"], np.zeros((n, 1)))
        np.testing.assert_array_equal(arrays["actions"][:, 1], np.arange(n - 1))
    from vjepa_pipeline.shards.inspect import trajectory_problems

    assert trajectory_problems(samples[0]["json"], samples[0]["npz"]) == []
    index_episode(tmp_path / "with" / "a", 12)
    build(tmp_path / "with", tmp_path / "out_with")
    (s,) = built_samples(tmp_path / "out_with")
    assert s["json"]["trajectory"]["states_recorded"] is True


def test_episode_fps_is_the_recording_rate(tmp_path):
    src = tmp_path / "src"
    index_episode(src / "episode_rate", 30, fps=20)  # a 20 fps container of a 10 fps recording
    (src / "episode_rate" / "episode.json").write_text(json.dumps({"fps": 10}))
    index_episode(src / "container_rate", 30, fps=20)
    build(src, tmp_path / "out", max_clip_seconds=1.0)
    got = {}
    for s in built_samples(tmp_path / "out"):
        meta, t = s["json"], s["json"]["trajectory"]
        a, b = t["source_frames"]
        got.setdefault(meta["source"], []).append((a, b))
        assert shown(s["mp4"], b - a) == list(range(a, b))  # still frame-exact
        if meta["source"] == "episode_rate":
            assert t["fps_source"] == "episode" and meta["fps"] == pytest.approx(10)
            assert meta["clip_end"] - meta["clip_start"] == pytest.approx((b - a) / 10)
            assert meta["duration"] == pytest.approx((b - a) / 10, abs=0.1)  # not (b - a) / 20
            assert meta["keyframe_interval"] == 10
        else:
            assert t["fps_source"] == "container" and meta["fps"] == pytest.approx(20)
    # one second is 10 recorded frames, not the container's 20
    assert sorted(got["episode_rate"]) == [(0, 10), (10, 20), (20, 30)]
    assert sorted(got["container_rate"]) == [(0, 20), (20, 30)]


def test_frame_exact_encode_follows_the_given_rate_without_resampling(tmp_path):
    from vjepa_pipeline.shards.media import EncodeSettings, encode_command

    path = index_episode(tmp_path / "ep", 10, fps=20) / "video.mp4"
    info = probe(path)
    cmd = encode_command(str(path), str(tmp_path / "o.mp4"), info, EncodeSettings(short_side=None, fps=10.0),
                         frames=(2, 8))
    vf = cmd[cmd.index("-vf") + 1]
    assert "setpts=N/(10*TB)" in vf and "fps=" not in vf and cmd[cmd.index("-fps_mode") + 1] == "passthrough"


def test_build_trims_a_frame_or_two_and_skips_more(tmp_path):
    src = tmp_path / "src"
    index_episode(src / "long_video", 30, states=29)  # the video's last frame has no state
    index_episode(src / "long_states", 30, states=32)  # two states past the video
    index_episode(src / "far_off", 30, states=26)
    index = build(src, tmp_path / "out")
    assert [(os.path.basename(s["path"]), s["reason"], s["detail"]) for s in index["skipped"]] == [
        ("far_off", "state / frame count mismatch", "26 states for 30 frames")]
    seen = {}
    for s in built_samples(tmp_path / "out"):
        t, arrays = s["json"]["trajectory"], read_npz(s["npz"])
        a, b = t["source_frames"]
        seen[s["json"]["source"]] = (t["trimmed"], (a, b))
        assert shown(s["mp4"], b - a) == list(range(a, b))
        np.testing.assert_array_equal(arrays["states"][:, 0], np.arange(a, b))
        np.testing.assert_array_equal(arrays["actions"][:, 1], np.arange(a, b - 1))
    assert seen == {"long_video": ({"frames": 1, "rows": 0}, (0, 29)),
                    "long_states": ({"frames": 0, "rows": 2}, (0, 30))}


def test_build_keeps_episodes_whose_extrinsics_are_dropped(tmp_path):
    src = tmp_path / "src"
    for name in ("a", "b", "c"):
        index_episode(src / name, 12)
    for name in ("a", "b"):
        np.save(src / name / "extrinsics.npy", np.ones((12, 6)))
    np.save(src / "c" / "extrinsics.npy", np.ones((12, 4)))
    index = build(src, tmp_path / "out")
    assert index["trajectories"]["extrinsics_dim"] == [6] and not index["skipped"]
    metas = {s["json"]["source"]: (s["json"]["trajectory"], read_npz(s["npz"])) for s in built_samples(tmp_path / "out")}
    assert sorted(metas) == ["a", "b", "c"]
    t, arrays = metas["c"]
    assert t["extrinsics_dropped"] == "wrong extrinsics dimension: 4 (expected 6)" and t["extrinsics_dim"] is None
    assert "extrinsics" not in arrays and arrays["states"].shape == (12, 2)
    assert "extrinsics_dropped" not in metas["a"][0] and metas["a"][1]["extrinsics"].shape == (12, 6)


def test_inspect_checks_the_action_width():
    from vjepa_pipeline.shards.inspect import trajectory_problems

    meta = {"num_frames": 4, "trajectory": {"action_rule": "sum", "action_dim": 2, "state_dim": 1,
                                            "extrinsics_dim": None}}
    good = {"states": np.zeros((4, 1)), "actions": np.zeros((3, 2))}
    assert trajectory_problems(meta, npz_bytes(good)) == []
    wide = npz_bytes({**good, "actions": np.zeros((3, 3))})
    assert trajectory_problems(meta, wide) == [".npz actions are 3-D but the .json says 2"]
    pose = {"num_frames": 4, "trajectory": {**meta["trajectory"], "action_rule": "pose_delta", "action_dim": 1}}
    assert trajectory_problems(pose, npz_bytes({"states": np.zeros((4, 1))})) == []


def marker_centres(frames: np.ndarray) -> np.ndarray:
    """(T, 2) x, y of the centre of the square ``_droid_video`` draws (its green channel is 160 on 20)."""
    mask = frames[..., 1].astype(np.float64) > 90
    ys, xs = np.mgrid[0:frames.shape[1], 0:frames.shape[2]]
    count = mask.sum(axis=(1, 2))
    assert count.min() > 0
    return np.stack([(mask * xs).sum(axis=(1, 2)) / count, (mask * ys).sum(axis=(1, 2)) / count], axis=1)


def test_droid_frames_show_their_states(tmp_path):
    """The decoded frames of a built DROID sample show the pose of the same row of its states: the
    square that ``_droid_video`` draws from states[t, :2], frame by frame, through a cut."""
    folder = write_droid_episode(tmp_path / "raw" / "ep", frames=40, fps=15, seed=3)
    build(tmp_path / "raw", tmp_path / "out", max_clip_seconds=1.0)
    samples = built_samples(tmp_path / "out")
    assert sorted(tuple(s["json"]["trajectory"]["source_frames"]) for s in samples) == [(0, 15), (15, 30), (30, 40)]
    with h5py.File(folder / "trajectory.h5") as h5:
        recorded = h5["observation/robot_state/cartesian_position"][:]
    for s in samples:
        a, b = s["json"]["trajectory"]["source_frames"]
        states = read_npz(s["npz"])["states"]
        np.testing.assert_array_equal(states[:, :6], recorded[a:b])
        frames = decoded(s["mp4"], b - a)
        assert frames.shape[1:3] == (48, 64)
        seen = marker_centres(frames)
        drawn = marker_centres(_droid_video(states[:, :6], states[:, 6]))
        np.testing.assert_allclose(seen, drawn, atol=0.75)
        # a one-frame slip would show: the square moves by more than that between frames
        slipped = np.abs(marker_centres(frames[1:]) - drawn[:-1]).max(axis=1)
        assert (slipped > 0.75).mean() > 0.5
