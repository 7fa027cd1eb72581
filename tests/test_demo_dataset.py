"""The motion-centric demo dataset: determinism, layout, idempotence, that every class does what
its name says (measured on the rendered coverage maps), and that the label lives in time: a
classifier on single frames is at chance while the same classifier on motion measured from
frame differences is near perfect."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vjepa_pipeline.demo import dataset as dd
from vjepa_pipeline.demo.dataset import CLASSES, DemoDatasetError, generate_demo_dataset, render_clip

ROOT = Path(__file__).resolve().parents[1]
SIZE, FRAMES = 64, 16
TINY = {"train_per_class": 2, "val_per_class": 1, "unlabelled": 6, "size": 32, "frames": 8, "fps": 8,
        "seed": 0, "progress": False}


def rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(list(key))


def debug_clips(cls: str, n: int, size: int = SIZE, frames: int = FRAMES, base: int = 0):
    return [render_clip(cls, rng(base, CLASSES.index(cls), i), size, frames, debug=True) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Measurements on coverage maps (the world wraps around, so positions are circular means).


def wrap(d, period=SIZE):
    return (np.asarray(d) + period / 2) % period - period / 2


def centroid(cov: np.ndarray) -> np.ndarray:
    """(x, y) of a coverage map (H, W) on the torus."""
    size = cov.shape[-1]
    ang = 2 * np.pi * (np.arange(size) + 0.5) / size
    wx, wy = cov.sum(axis=0), cov.sum(axis=1)
    x = np.angle((wx * np.exp(1j * ang)).sum()) * size / (2 * np.pi)
    y = np.angle((wy * np.exp(1j * ang)).sum()) * size / (2 * np.pi)
    return np.array([x % size, y % size])


def track(covs: np.ndarray) -> np.ndarray:
    return np.stack([centroid(c) for c in covs])


def path(covs: np.ndarray) -> np.ndarray:
    """Unwrapped centroid positions over time, starting at 0."""
    steps = wrap(np.diff(track(covs), axis=0), covs.shape[-1])
    return np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])


def orientation(cov: np.ndarray, marker: np.ndarray) -> float:
    """Angle (rad, image axes: y down, so increasing = clockwise on screen) from the object's
    centroid to its marker's."""
    size = cov.shape[-1]
    c = centroid(cov)
    pix = np.arange(size) + 0.5
    dx = (marker * wrap(pix[None, :] - c[0], size)).sum() / marker.sum()
    dy = (marker * wrap(pix[:, None] - c[1], size)).sum() / marker.sum()
    return math.atan2(dy, dx)


# ---------------------------------------------------------------------------------------------
# Rendering: determinism, classes


def test_render_clip_is_deterministic_uint8_and_seed_dependent():
    for cls in CLASSES:
        a = render_clip(cls, rng(1, 2), SIZE, FRAMES)
        assert a.shape == (FRAMES, SIZE, SIZE, 3) and a.dtype == np.uint8
        assert np.array_equal(a, render_clip(cls, rng(1, 2), SIZE, FRAMES))
        assert not np.array_equal(a, render_clip(cls, rng(1, 3), SIZE, FRAMES))
        assert np.array_equal(a, render_clip(cls, rng(1, 2), SIZE, FRAMES, debug=True)[0])
    assert render_clip("grow", rng(0), 48, 10).shape == (10, 48, 48, 3)
    cls, clip = dd.dataset_clip(0, "unlabelled", 5)
    cls2, clip2 = dd.dataset_clip(0, "unlabelled", 5)
    assert cls == cls2 and np.array_equal(clip, clip2)
    assert not np.array_equal(dd.dataset_clip(1, "unlabelled", 5)[1], clip)
    train, val = dd.dataset_clip(0, "train", 0, "grow")[1], dd.dataset_clip(0, "val", 0, "grow")[1]
    assert not np.array_equal(train, val)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown class"):
        render_clip("jump", rng(0))
    with pytest.raises(ValueError, match="even"):
        render_clip("grow", rng(0), size=33)
    with pytest.raises(ValueError, match="frames"):
        render_clip("grow", rng(0), frames=3)
    for bad in ({"size": 31}, {"frames": 2}, {"fps": 0}, {"train_per_class": -1}, {"workers": 0},
                {"train_per_class": 0, "val_per_class": 0, "unlabelled": 0}):
        with pytest.raises(ValueError):
            generate_demo_dataset("/nonexistent/never/written", **{**TINY, **bad})


@pytest.mark.parametrize("cls,axis,sign", [("move_left", 0, -1), ("move_right", 0, 1), ("move_up", 1, -1),
                                            ("move_down", 1, 1)])
def test_translations_go_where_their_name_says(cls, axis, sign):
    for _, info in debug_clips(cls, 12):
        moved = path(info["layers"]["coverage"])[-1]
        assert sign * moved[axis] >= 0.2 * SIZE, moved
        assert abs(moved[1 - axis]) <= 0.3 * abs(moved[axis]), moved  # within +-15 deg of the axis


@pytest.mark.parametrize("cls,sign", [("rotate_cw", 1), ("rotate_ccw", -1)])
def test_rotations_turn_the_way_their_name_says(cls, sign):
    for _, info in debug_clips(cls, 12):
        cov, marker = info["layers"]["coverage"], info["layers"]["marker"]
        angles = np.unwrap([orientation(c, m) for c, m in zip(cov, marker)])
        turn = math.degrees(angles[-1] - angles[0])
        assert sign * turn > 60, turn
        assert np.all(sign * np.diff(angles) > 0)  # steadily one way
        assert np.abs(path(cov)[-1]).max() < 0.04 * SIZE  # and stays in place


@pytest.mark.parametrize("cls", ["grow", "shrink"])
def test_grow_and_shrink_change_the_area(cls):
    for _, info in debug_clips(cls, 12):
        area = info["layers"]["coverage"].sum(axis=(1, 2))
        ratio = area[-1] / area[0]
        if cls == "grow":
            assert ratio > 2.0 and np.all(np.diff(area) > 0), area
        else:
            assert ratio < 1 / 2.0 and np.all(np.diff(area) < 0), area


@pytest.mark.parametrize("cls", ["move_right", "rotate_cw", "grow"])
def test_the_texture_moves_with_the_object(cls):
    """Many pixels inside the object change between consecutive frames (the motion is carried by
    the texture, not only by the outline); the background does not move."""
    for clip, info in debug_clips(cls, 4):
        cov = info["layers"]["coverage"]
        inside = (cov[:-1] > 0.99) & (cov[1:] > 0.99)
        outside = (cov[:-1] < 0.01) & (cov[1:] < 0.01)
        clean = np.abs(np.diff(info["clean"].astype(float), axis=0)).sum(-1)  # no noise, grey background
        assert (clean[inside] > 2).mean() > 0.3, (clean[inside] > 2).mean()
        first = np.broadcast_to(clip[:1], clip.shape)[1:]  # the background at frame 0 ...
        seen = outside & (cov[:1] < 0.01)  # ... where the object was not at frame 0 either
        assert np.abs(clip[1:][seen].astype(float) - first[seen]).mean() < 3  # only noise: it stays put


def test_start_positions_and_sizes_do_not_depend_on_the_class():
    """First-frame actor positions are uniform whatever the direction; the size seen in a random
    frame has the same spread for grow, shrink and still classes."""
    for cls in ("move_left", "move_right", "move_up", "move_down"):
        scenes = [dd.sample_scene(cls, rng(7, i), SIZE, FRAMES) for i in range(100)]
        starts = np.array([s["object"]["cx"][0] for s in scenes])
        resultant = abs(np.exp(2j * np.pi * starts / SIZE).mean())  # 0 for uniform, 1 for a point
        assert resultant < 0.25, (cls, resultant)
    pick = np.random.default_rng(0)
    sizes = {}
    for cls in ("grow", "shrink", "rotate_cw"):
        scenes = [dd.sample_scene(cls, rng(8, i), SIZE, FRAMES) for i in range(150)]
        sizes[cls] = np.log([s["object"]["r"][pick.integers(FRAMES)] for s in scenes])
    for cls in ("grow", "shrink"):
        assert abs(sizes[cls].mean() - sizes["rotate_cw"].mean()) < 0.1
        assert abs(sizes[cls].std() - sizes["rotate_cw"].std()) < 0.08


# ---------------------------------------------------------------------------------------------
# The label lives in time: single frames vs motion from frame differences


def pooled(frames: np.ndarray, k: int = 4) -> np.ndarray:
    n, h, w, c = frames.shape
    return frames.reshape(n, h // k, k, w // k, k, c).mean(axis=(2, 4)).reshape(n, -1)


def flow_features(clip: np.ndarray, threshold: float = 0.08) -> np.ndarray:
    """Global affine motion fitted to each pair of consecutive frames (brightness constancy:
    frame difference = -(gradient . flow) on the pixels that changed), summarised over time:
    translation, divergence, curl, the strain eigenvalues, spread of the changed pixels, and how
    much of the clip changed."""
    x = clip.astype(np.float64) / 255.0
    t_len, size = x.shape[0], x.shape[1]
    per_pair, changed = [], []
    for t in range(t_len - 1):
        d, m = x[t + 1] - x[t], (x[t] + x[t + 1]) / 2
        gx = (np.roll(m, -1, axis=1) - np.roll(m, 1, axis=1)) / 2
        gy = (np.roll(m, -1, axis=0) - np.roll(m, 1, axis=0)) / 2
        mask = np.sqrt((d ** 2).sum(-1)) > threshold
        mask = mask | np.roll(mask, 1, 0) | np.roll(mask, -1, 0) | np.roll(mask, 1, 1) | np.roll(mask, -1, 1)
        changed.append(mask.sum())
        if mask.sum() < 4:
            continue
        ys, xs = np.nonzero(mask)
        c = centroid(mask.astype(float))
        xp, yp = wrap(xs + 0.5 - c[0], size) / 8, wrap(ys + 0.5 - c[1], size) / 8
        gxs, gys = gx[ys, xs], gy[ys, xs]
        design = np.stack([gxs, gys, gxs * xp[:, None], gxs * yp[:, None], gys * xp[:, None],
                           gys * yp[:, None]], axis=-1).reshape(-1, 6)
        p = np.linalg.solve(design.T @ design + 1e-3 * np.eye(6), design.T @ -d[ys, xs].reshape(-1))
        strain = np.linalg.eigvalsh([[p[2], (p[3] + p[4]) / 2], [(p[3] + p[4]) / 2, p[5]]])
        per_pair.append([p[0], p[1], abs(p[0]), abs(p[1]), p[2] + p[5], p[4] - p[3], *strain,
                         np.sqrt((xp ** 2 + yp ** 2).mean())])
    per_pair = np.array(per_pair) if per_pair else np.zeros((1, 9))
    changed = np.array(changed, dtype=np.float64)
    return np.concatenate([per_pair.mean(0), per_pair.std(0), [changed.min() / (changed.mean() + 1),
                                                               changed.mean() / 100]])


def logistic_regression(train_x, train_y, test_x, classes: int, weight_decay: float = 1e-3) -> np.ndarray:
    import torch

    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a = torch.tensor((train_x - mu) / sd, dtype=torch.float32)
    b = torch.tensor((test_x - mu) / sd, dtype=torch.float32)
    y = torch.tensor(train_y)
    w = torch.zeros(a.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(a @ w + bias, y) + weight_decay * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (b @ w + bias).argmax(1).numpy()


def nearest_centroid(train_x, train_y, test_x, classes: int) -> np.ndarray:
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    centres = np.stack([a[train_y == c].mean(0) for c in range(classes)])
    return ((b[:, None] - centres[None]) ** 2).sum(-1).argmin(1)


@pytest.mark.slow
def test_single_frames_are_at_chance_while_motion_classifies():
    n_cls = len(CLASSES)
    chance = 1 / n_cls

    def make(per_class, split):
        clips, labels = [], []
        for c, cls in enumerate(CLASSES):
            for i in range(per_class):
                clips.append(dd.dataset_clip(0, split, i, cls)[1])
                labels.append(c)
        return np.stack(clips), np.array(labels)

    train_clips, train_y = make(30, "train")
    test_clips, test_y = make(15, "val")
    pick = np.random.default_rng(0)

    def frame(clips):  # one random frame of each clip
        return clips[np.arange(len(clips)), pick.integers(FRAMES, size=len(clips))] / 255.0

    single_tr, single_te = pooled(frame(train_clips)), pooled(frame(test_clips))
    diff_tr = pooled((train_clips[:, -1].astype(float) - train_clips[:, 0]) / 255.0)
    diff_te = pooled((test_clips[:, -1].astype(float) - test_clips[:, 0]) / 255.0)
    flow_tr = np.stack([flow_features(c) for c in train_clips])
    flow_te = np.stack([flow_features(c) for c in test_clips])

    def acc(pred):
        return float((pred == test_y).mean())

    results = {
        "single frame, logistic on 16x16 pixels":
            acc(logistic_regression(single_tr, train_y, single_te, n_cls)),
        "single frame, nearest centroid": acc(nearest_centroid(single_tr, train_y, single_te, n_cls)),
        "last - first, logistic on 16x16 pixels": acc(logistic_regression(diff_tr, train_y, diff_te, n_cls)),
        "frame differences, logistic on motion": acc(logistic_regression(flow_tr, train_y, flow_te, n_cls)),
        "frame differences, nearest centroid": acc(nearest_centroid(flow_tr, train_y, flow_te, n_cls)),
    }
    print(f"\nchance {chance:.3f}; " + "; ".join(f"{k}: {v:.3f}" for k, v in results.items()))
    assert results["single frame, logistic on 16x16 pixels"] < chance + 0.15
    assert results["single frame, nearest centroid"] < chance + 0.15
    assert results["frame differences, logistic on motion"] > chance + 0.3
    assert results["frame differences, nearest centroid"] > chance + 0.3


# ---------------------------------------------------------------------------------------------
# The written dataset


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def test_dataset_layout_manifest_and_videos(tmp_path):
    import av

    out = tmp_path / "demo"
    info = generate_demo_dataset(out, workers=2, **TINY)
    assert json.loads((out / "dataset.json").read_text()) == info
    assert info["classes"] == list(CLASSES) and info["generator_version"] == dd.GENERATOR_VERSION
    assert (info["seed"], info["size"], info["frames"], info["fps"]) == (0, 32, 8, 8)
    assert info["counts"]["train"] == dict.fromkeys(CLASSES, 2)
    assert info["counts"]["val"] == dict.fromkeys(CLASSES, 1)
    assert sum(info["unlabelled_class_counts"].values()) == 6
    assert info["counts"]["unlabelled"] == 6 and info["counts"]["total"] == len(CLASSES) * 3 + 6
    for split, per in (("train", 2), ("val", 1)):
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(CLASSES)
        for cls in CLASSES:
            names = sorted(p.name for p in (out / split / cls).iterdir())
            assert names == [f"{cls}_{i:04d}.mp4" for i in range(per)]
    assert sorted(p.name for p in (out / "unlabelled").iterdir()) == [f"clip_{i:05d}.mp4" for i in range(6)]
    assert not list(out.rglob("*.tmp")) and not (out / dd.PARTIAL).exists()

    # a real H.264 file holding the rendered clip
    with av.open(str(out / "train" / "grow" / "grow_0001.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and float(stream.average_rate) == 8
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    _, rendered = dd.dataset_clip(0, "train", 1, "grow", 32, 8)
    assert decoded.shape == rendered.shape == (8, 32, 32, 3)
    assert np.abs(decoded.astype(int) - rendered).mean() < 6

    # folder per class: the shard builder's discovery labels the training split by class
    from vjepa_pipeline.shards.sources import discover

    assert sorted(discover(out / "train").label_map) == sorted(CLASSES)


def test_rerun_is_a_no_op_and_an_interrupted_run_is_completed(tmp_path):
    out = tmp_path / "demo"
    first = generate_demo_dataset(out, workers=1, **TINY)
    before = mtimes(out)
    again, written = dd.write_demo_dataset(out, workers=1, **TINY)
    assert again == first and written == 0 and mtimes(out) == before

    # interrupted: no dataset.json yet, a clip missing, a temporary file left behind
    (out / "dataset.json").unlink()
    (out / "val" / "shrink" / "shrink_0000.mp4").unlink()
    (out / "unlabelled" / "clip_00002.mp4.tmp").write_bytes(b"partial")
    (out / dd.PARTIAL).write_text(json.dumps({"params": first["params"]}))
    info, written = dd.write_demo_dataset(out, workers=1, **TINY)
    assert written == 1 and info["params"] == first["params"]
    after = mtimes(out)
    assert {k for k in before if after.get(k) != before[k]} == {"dataset.json", "val/shrink/shrink_0000.mp4"}
    assert not list(out.rglob("*.tmp"))


def test_other_parameters_regenerate_and_drop_stale_clips(tmp_path):
    out = tmp_path / "demo"
    generate_demo_dataset(out, workers=1, **TINY)
    old = (out / "train" / "grow" / "grow_0000.mp4").read_bytes()
    info = generate_demo_dataset(out, workers=1, **{**TINY, "seed": 3, "unlabelled": 4})
    assert info["seed"] == 3 and info["counts"]["unlabelled"] == 4
    assert sorted(p.name for p in (out / "unlabelled").iterdir()) == [f"clip_{i:05d}.mp4" for i in range(4)]
    assert (out / "train" / "grow" / "grow_0000.mp4").read_bytes() != old


def test_refuses_a_folder_that_is_not_a_demo_dataset(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DemoDatasetError, match="not empty"):
        generate_demo_dataset(tmp_path, workers=1, **TINY)
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "someone else's"}))
    with pytest.raises(DemoDatasetError, match="not empty"):
        generate_demo_dataset(tmp_path, workers=1, **TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.json", "notes.txt"]


def test_two_generations_in_parallel_workers_are_byte_identical(tmp_path):
    """The same dataset twice, 2 worker processes: every mp4 byte-identical (rendering and the
    one-ffmpeg-per-clip encoding are deterministic; docs/reproducibility.md)."""
    a, b = tmp_path / "a", tmp_path / "b"
    generate_demo_dataset(a, workers=2, **TINY)
    generate_demo_dataset(b, workers=2, **TINY)
    files = sorted(p.relative_to(a) for p in a.rglob("*.mp4"))
    assert len(files) == 8 * (2 + 1) + 6
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.mp4"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


# ---------------------------------------------------------------------------------------------
# The command


def vjepa(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "vjepa_pipeline", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_cli_generate_demo(tmp_path):
    helped = vjepa("data", "generate-demo", "--help")
    assert helped.returncode == 0 and all(cls in helped.stdout for cls in CLASSES)
    assert "data" in vjepa("--help").stdout
    args = ["data", "generate-demo", "--out", str(tmp_path / "d"), "--clips", "3", "--train-per-class", "1",
            "--val-per-class", "1", "--size", "32", "--frames", "8", "--workers", "1", "--no-progress"]
    out = vjepa(*args)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert len(line.splitlines()) == 1 and f"{2 * len(CLASSES) + 3} clips written" in line and " s" in line
    assert json.loads((tmp_path / "d" / "dataset.json").read_text())["counts"]["total"] == 2 * len(CLASSES) + 3
    again = vjepa(*args)
    assert again.returncode == 0 and "nothing written" in again.stdout
    bad = vjepa("data", "generate-demo", "--out", str(tmp_path / "e"), "--size", "31")
    assert bad.returncode == 2 and "size" in bad.stderr and "Traceback" not in bad.stderr
