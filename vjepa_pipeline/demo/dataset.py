"""The demo dataset: tiny motion-centric action recognition (in the spirit of Something-Something).

A clip's label is WHAT HAPPENS OVER TIME, never what a frame looks like:

    move_left  move_right  move_up  move_down   the object translates (direction within +-15 deg)
    rotate_cw  rotate_ccw                       the object turns 70-140 deg (clockwise on screen)
    grow       shrink                           the object scales by 1.5-1.9x

Every clip shows one large textured object (a rounded box, a third to two thirds of the frame
wide) over a static textured background. The object's outline (squareness, aspect), its colour
texture, the background, sizes, start position and orientation are drawn independently of the
label; one side of the object carries a contrasting band (the "marker"), so turns show in the
outline and the pixels alike. Motion is carried by many pixels (the texture moves with the
object), which is what lets a CPU-sized V-JEPA learn it in minutes: small objects on busy
backgrounds were not learnable at this scale, not even with labels (docs/benchmarks.md).

A single frame carries no label information, by construction:

* The world is a torus: whatever leaves one edge re-enters at the opposite one (object and
  background are periodic), so positions are uniform in EVERY frame for every class.
  Orientations are uniform on the circle likewise.
* Sizes: a growing object's log-size runs linearly from ``a`` to ``a + g``; shrinking is the time
  reverse; objects of the other classes take the log-size ``a + g * t'/(T-1)`` at a random frame
  ``t'``, so the size seen in a random frame has the same distribution in every class.
* What the class does not move only jitters: drift <= 3 % of the frame, turn <= 8 deg, size +-5 %.

Linear classifiers on single frames stay at chance, while the same classifier on motion measured
from consecutive frame differences is near perfect (tests/test_demo_dataset.py).

Everything is deterministic in (seed, split, index): clip ``i`` of class ``c`` in split ``s``
comes from ``numpy.random.SeedSequence([seed, split code, c, i])``.

Layout written by :func:`generate_demo_dataset`::

    DIR/train/<class>/<class>_0000.mp4     folder per class: `vjepa shards build` labels them
    DIR/val/<class>/<class>_0000.mp4
    DIR/unlabelled/clip_00000.mp4          pretraining pool, classes mixed, no labels
    DIR/dataset.json                       written last, atomically: its absence marks an
                                           incomplete dataset, which the next call completes
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..utils.atomic import write_json

CLASSES = ("move_left", "move_right", "move_up", "move_down", "rotate_cw", "rotate_ccw", "grow", "shrink")
# Recorded in dataset.json and checked before writing into a non-empty folder. Its value predates
# the move of this module to vjepa_pipeline.demo.dataset and is kept, so that datasets written
# before the move are still recognised (and completed or reused, not refused).
GENERATOR = "vjepa_pipeline.data.demo_dataset"
GENERATOR_VERSION = 2  # 2: one large textured object (v1: small flat objects, a bar, 11 classes)
MANIFEST = "dataset.json"
PARTIAL = ".demo_dataset_partial.json"  # marks a folder this generator is (or was) writing into
SPLIT_CODES = {"train": 1, "val": 2, "unlabelled": 3}
CRF = 18
MIN_SIZE, MIN_FRAMES = 16, 4

# Scene parameters, as fractions of the frame side unless named otherwise.
R_RANGE = (0.17, 0.36)         # object half-extent (the rounded box lies within it)
SCALE_CHANGE = (1.5, 1.9)      # grow / shrink factor over the clip
MOVE_DIST = (0.25, 0.45)       # translation over the clip
MOVE_JITTER_DEG = 15.0         # direction deviation from the axis
ROTATION_DEG = (70.0, 140.0)   # rotation over the clip
SQUARENESS = (2.5, 6.0)        # superellipse exponent of the outline (2: ellipse, large: box)
ASPECT = (0.7, 1.0)            # short / long axis of the outline
NUISANCE_DRIFT = 0.03          # slow drift of an object that is not translating
NUISANCE_ROT_DEG = 8.0
NUISANCE_SCALE = 0.05          # +- log-size drift of an object that is not scaling
BG_TINT, BG_AMP, BG_WAVES = 0.12, 0.05, 6      # background: base 0.5 +- tint, wave amplitude
OBJ_TINT, OBJ_AMP, OBJ_WAVES = 0.15, 0.13, 8   # object texture
OBJ_FREQ = (0.12, 0.45)        # object texture frequency, cycles per object half-extent
MARKER_FROM = 0.55             # the marker is the part of the object with local u > MARKER_FROM
MARKER_SHIFT = 0.3             # the marker is this much darker (on light texture) or lighter
NOISE_STD = 0.004              # per-pixel, per-frame noise (0..1 scale)


class DemoDatasetError(Exception):
    """The output folder cannot hold the demo dataset (the message says why)."""


def _wrap(d: np.ndarray, period: float) -> np.ndarray:
    """Signed torus difference in [-period/2, period/2)."""
    return (d + period / 2) % period - period / 2


# --------------------------------------------------------------------------------------------
# Scene sampling


def _log_size(rng: np.random.Generator, size: int) -> tuple[float, float]:
    """(a, g): a log-size path from a to a + g that stays within R_RANGE."""
    lo, hi = math.log(R_RANGE[0] * size), math.log(R_RANGE[1] * size)
    g = rng.uniform(math.log(SCALE_CHANGE[0]), math.log(SCALE_CHANGE[1]))
    return rng.uniform(lo, hi - g), g


def _waves(rng: np.random.Generator, n: int, amp: float, freq: tuple[float, float] | None) -> dict:
    """``n`` colour waves: integer wave vectors in [-1, 1]^2 (periodic on the frame) when ``freq`` is
    None, otherwise real ones with |k| in ``freq`` (cycles per unit of the local coordinates)."""
    ks, amps = [], []
    for _ in range(n):
        if freq is None:
            k = rng.integers(-1, 2, 2).astype(np.float64)
            while not k.any():
                k = rng.integers(-1, 2, 2).astype(np.float64)
        else:
            ang = rng.uniform(0, 2 * math.pi)
            k = rng.uniform(*freq) * np.array([math.cos(ang), math.sin(ang)])
        ks.append(k)
        amps.append(amp * rng.uniform(0.5, 1.0, 3) / math.sqrt(max(1.0, float(np.hypot(*k)))))
    return {"k": np.array(ks), "amp": np.array(amps), "phase": rng.uniform(0, 2 * math.pi, n)}


def sample_scene(cls: str, rng: np.random.Generator, size: int = 64, frames: int = 16) -> dict:
    """Draw everything a clip of class ``cls`` needs (pure function of the rng state).

    Returns {"class", "size", "frames", "background": {"base", "waves"}, "object": {"cx", "cy",
    "theta", "r" (tracks over frames: pixels, radians; r is the half-extent), "power", "aspect",
    "base", "waves"}}."""
    if cls not in CLASSES:
        raise ValueError(f"unknown class {cls!r}; classes: {', '.join(CLASSES)}")
    if frames < MIN_FRAMES:
        raise ValueError(f"frames must be >= {MIN_FRAMES}, got {frames}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}, got {size}")
    W, T = float(size), frames
    tau = np.linspace(0.0, 1.0, T)
    t_ref = int(rng.integers(T))  # the nuisance motions pass through the drawn pose at t_ref
    dtau = tau - tau[t_ref]
    background = {"base": 0.5 + rng.uniform(-BG_TINT, BG_TINT, 3), "waves": _waves(rng, BG_WAVES, BG_AMP, None)}

    a, g = _log_size(rng, size)
    if cls in ("grow", "shrink"):
        r = np.exp(a + g * (tau if cls == "grow" else 1.0 - tau))
    else:
        r = math.exp(a + g * rng.integers(T) / (T - 1)) * np.exp(
            rng.uniform(-NUISANCE_SCALE, NUISANCE_SCALE) * dtau)
    pos_ref, theta_ref = rng.uniform(0, W, 2), rng.uniform(0, 2 * math.pi)
    if cls.startswith("move_"):
        base = {"move_left": math.pi, "move_right": 0.0, "move_up": -math.pi / 2, "move_down": math.pi / 2}[cls]
        ang = base + math.radians(rng.uniform(-MOVE_JITTER_DEG, MOVE_JITTER_DEG))
        velocity = rng.uniform(*MOVE_DIST) * W * np.array([math.cos(ang), math.sin(ang)])
    else:
        ang = rng.uniform(0, 2 * math.pi)
        velocity = rng.uniform(-1, 1) * NUISANCE_DRIFT * W * np.array([math.cos(ang), math.sin(ang)])
    if cls.startswith("rotate_"):
        spin = math.radians(rng.uniform(*ROTATION_DEG)) * (1 if cls == "rotate_cw" else -1)
    else:
        spin = math.radians(rng.uniform(-NUISANCE_ROT_DEG, NUISANCE_ROT_DEG))
    pos = (pos_ref[None, :] + dtau[:, None] * velocity[None, :]) % W
    obj = {"cx": pos[:, 0], "cy": pos[:, 1], "theta": theta_ref + spin * dtau,
           "r": np.broadcast_to(r, (T,)).astype(np.float64),
           "power": rng.uniform(*SQUARENESS), "aspect": rng.uniform(*ASPECT),
           "base": 0.5 + rng.uniform(-OBJ_TINT, OBJ_TINT, 3), "waves": _waves(rng, OBJ_WAVES, OBJ_AMP, OBJ_FREQ)}
    return {"class": cls, "size": size, "frames": T, "background": background, "object": obj}


# --------------------------------------------------------------------------------------------
# Rendering


def _texture(waves: dict, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sum of colour waves at local coordinates u, v (broadcastable): (S..., 3) float32.

    Element-wise float64 arithmetic only: a BLAS matmul may sum in a thread-dependent order, and a
    last-bit difference that flips one rounded pixel makes the "same" dataset differ."""
    out = np.zeros(np.broadcast_shapes(np.shape(u), np.shape(v)) + (3,))
    for (kx, ky), amp, phase in zip(waves["k"], waves["amp"], waves["phase"]):
        out += np.cos(2 * math.pi * (u * kx + v * ky) + phase)[..., None] * amp
    return out.astype(np.float32)


def object_layers(scene: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Coverage (T, H, W), marker coverage (T, H, W) and local coordinates u, v (T, H, W; in units
    of the half-extent) of the scene's object. A local point (u, v) is drawn at screen offset
    r * R(theta) (u, v); the image y axis points down, so increasing theta turns clockwise."""
    size, obj = scene["size"], scene["object"]
    pix = np.arange(size, dtype=np.float64) + 0.5
    dx = _wrap(pix[None, None, :] - obj["cx"][:, None, None], size)  # (T, 1, W)
    dy = _wrap(pix[None, :, None] - obj["cy"][:, None, None], size)  # (T, H, 1)
    c, s = np.cos(obj["theta"])[:, None, None], np.sin(obj["theta"])[:, None, None]
    r = obj["r"][:, None, None]
    u = (c * dx + s * dy) / r
    v = (-s * dx + c * dy) / r
    p = obj["power"]
    norm = (np.abs(u) ** p + np.abs(v / obj["aspect"]) ** p) ** (1.0 / p)  # 1 on the outline
    cov = np.clip((1.0 - norm) * r * obj["aspect"] + 0.5, 0.0, 1.0)  # ~signed distance in pixels
    marker = np.clip((u - MARKER_FROM) * r + 0.5, 0.0, 1.0) * cov
    return cov, marker, u, v


def render_scene(scene: dict, rng: np.random.Generator | None = None, noise: bool = True,
                 background: bool = True, layers: bool = False) -> tuple[np.ndarray, dict | None]:
    """Frames (T, H, W, 3) uint8 of a scene, and with ``layers=True`` the maps they were composed
    from: {"coverage", "marker"} (T, H, W) of the object.

    ``noise=False`` / ``background=False`` (flat mid-grey) give clean renders for measuring."""
    size, T = scene["size"], scene["frames"]
    if background:
        bg = scene["background"]
        pix = (np.arange(size, dtype=np.float64) + 0.5) / size
        img = bg["base"].astype(np.float32) + _texture(bg["waves"], pix[None, :], pix[:, None])  # (H, W, 3)
    else:
        img = np.full((size, size, 3), 0.5, dtype=np.float32)
    img = np.broadcast_to(img, (T, size, size, 3))
    obj = scene["object"]
    cov, marker, u, v = object_layers(scene)
    colour = obj["base"].astype(np.float32) + _texture(obj["waves"], u, v)
    lum = 0.299 * colour[..., 0] + 0.587 * colour[..., 1] + 0.114 * colour[..., 2]
    shift = np.where(lum > 0.5, -MARKER_SHIFT, MARKER_SHIFT).astype(np.float32)  # contrasting band
    colour = colour + marker[..., None].astype(np.float32) * shift[..., None]
    c = cov[..., None].astype(np.float32)
    out = img * (1.0 - c) + colour * c
    if noise:
        rng = rng if rng is not None else np.random.default_rng(0)
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(NOISE_STD)
    out *= np.float32(255.0)
    np.rint(out, out=out)
    frames = np.clip(out, 0, 255).astype(np.uint8)
    return frames, ({"coverage": cov, "marker": marker} if layers else None)


def render_clip(cls: str, rng: np.random.Generator, size: int = 64, frames: int = 16, *,
                debug: bool = False):
    """One clip of class ``cls``: uint8 (T, H, W, 3). Pure function of the rng state.

    ``debug=True`` returns (frames, info) with info = {"scene": the sampled scene, "layers":
    the coverage maps of :func:`render_scene`, "clean": the same clip without background
    texture and noise}."""
    if size < MIN_SIZE or size % 2:
        raise ValueError(f"size must be even and >= {MIN_SIZE}, got {size}")
    scene = sample_scene(cls, rng, size, frames)
    clip, layers = render_scene(scene, rng, layers=debug)
    if not debug:
        return clip
    clean, _ = render_scene(scene, noise=False, background=False)
    return clip, {"scene": scene, "layers": layers, "clean": clean}


def clip_rng(seed: int, split: str, index: int, class_index: int = 0) -> np.random.Generator:
    """The generator of one dataset clip (class_index: 1 + the class's position; 0 for the pool)."""
    key = [int(seed), SPLIT_CODES[split], int(class_index), int(index)]
    return np.random.default_rng(np.random.SeedSequence(key))


def unlabelled_class(seed: int, index: int) -> tuple[str, np.random.Generator]:
    """The (hidden) class of pool clip ``index`` and the generator, positioned to render it."""
    rng = clip_rng(seed, "unlabelled", index)
    return CLASSES[int(rng.integers(len(CLASSES)))], rng


def dataset_clip(seed: int, split: str, index: int, cls: str | None = None, size: int = 64,
                 frames: int = 16) -> tuple[str, np.ndarray]:
    """Clip ``index`` of a split: (class, frames). Train / val need ``cls``; the unlabelled pool
    draws its class from (seed, index)."""
    if split == "unlabelled":
        cls, rng = unlabelled_class(seed, index)
    else:
        if cls is None:
            raise ValueError(f"split {split!r} needs a class")
        rng = clip_rng(seed, split, index, CLASSES.index(cls) + 1)
    return cls, render_clip(cls, rng, size, frames)


# --------------------------------------------------------------------------------------------
# Writing the dataset


def _params(train_per_class: int, val_per_class: int, unlabelled: int, size: int, frames: int, fps: float,
            seed: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, "classes": list(CLASSES),
            "train_per_class": train_per_class, "val_per_class": val_per_class, "unlabelled": unlabelled,
            "size": size, "frames": frames, "fps": fps, "seed": seed, "crf": CRF}


def _plan(p: dict) -> list[tuple[str, str, str | None, int]]:
    """(relative path, split, class or None, index) of every clip."""
    tasks = []
    for split, count in (("train", p["train_per_class"]), ("val", p["val_per_class"])):
        for cls in CLASSES:
            tasks += [(f"{split}/{cls}/{cls}_{i:04d}.mp4", split, cls, i) for i in range(count)]
    tasks += [(f"unlabelled/clip_{i:05d}.mp4", "unlabelled", None, i) for i in range(p["unlabelled"])]
    return tasks


def encode_clips(jobs: list[tuple[str | os.PathLike, np.ndarray]], fps: float, crf: int = CRF) -> None:
    """Write uint8 clips (T, H, W, 3) to H.264 mp4 files, one ffmpeg process per clip
    (:func:`vjepa_pipeline.shards.media.write_video`'s settings: single-threaded, bit-exact x264).

    Not batched on purpose: one ffmpeg process with many inputs and outputs (the earlier way,
    faster to start) now and then encoded one clip of a batch differently from run to run - about
    one clip in 1,000 of the demo dataset (docs/reproducibility.md) - so the same dataset was not
    always byte-identical; one process per clip was, in every generation we compared."""
    from ..shards.media import write_video

    for dst, frames in jobs:
        write_video(dst, frames, fps=fps, crf=crf)


def _write_batch(root: str, tasks: list[tuple], p: dict) -> int:
    """Render and encode a batch of planned clips; each lands under its final name by rename."""
    jobs, finals = [], []
    for rel, split, cls, index in tasks:
        _, frames = dataset_clip(p["seed"], split, index, cls, p["size"], p["frames"])
        dst = Path(root) / rel
        jobs.append((dst.with_name(dst.name + ".tmp"), frames))
        finals.append(dst)
    encode_clips(jobs, p["fps"], p["crf"])
    for (tmp, _), dst in zip(jobs, finals):
        os.replace(tmp, dst)
    return len(tasks)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _check_args(train_per_class, val_per_class, unlabelled, size, frames, fps, seed, workers) -> None:
    for name, value in (("train_per_class", train_per_class), ("val_per_class", val_per_class),
                        ("unlabelled", unlabelled), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE or size % 2:
        raise ValueError(f"size must be an even integer >= {MIN_SIZE} (H.264 4:2:0 needs even sides), "
                         f"got {size!r}")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < MIN_FRAMES:
        raise ValueError(f"frames must be an integer >= {MIN_FRAMES}, got {frames!r}")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (0 < fps <= 240):
        raise ValueError(f"fps must be in (0, 240], got {fps!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if train_per_class + val_per_class + unlabelled == 0:
        raise ValueError("nothing to generate: all counts are 0")


def _progress_bar(total: int, done: int, enabled: bool) -> tqdm:
    """``demo dataset: 37%|###  | 120/320 [00:04<00:06, 30.1clip/s]`` on stderr; redrawn in place on a
    terminal, one line every 5 s in a log file."""
    tty = sys.stderr.isatty()
    return tqdm(total=total, initial=done, desc="demo dataset", unit="clip", file=sys.stderr,
                disable=not enabled or total == 0, mininterval=0.2 if tty else 5.0, dynamic_ncols=tty,
                ascii=not tty, bar_format=None if tty else "{l_bar}{bar}{r_bar}\n", leave=tty)


def generate_demo_dataset(out_dir: str | os.PathLike, train_per_class: int = 40, val_per_class: int = 10,
                          unlabelled: int = 800, size: int = 64, frames: int = 16, fps: float = 8,
                          seed: int = 0, workers: int = 2, progress: bool = True) -> dict:
    """Write the demo dataset under ``out_dir`` and return the content of its dataset.json
    (see :func:`write_demo_dataset`)."""
    return write_demo_dataset(out_dir, train_per_class, val_per_class, unlabelled, size, frames, fps, seed,
                              workers, progress)[0]


def write_demo_dataset(out_dir: str | os.PathLike, train_per_class: int = 40, val_per_class: int = 10,
                       unlabelled: int = 800, size: int = 64, frames: int = 16, fps: float = 8,
                       seed: int = 0, workers: int = 2, progress: bool = True) -> tuple[dict, int]:
    """Write the demo dataset under ``out_dir``: (content of its dataset.json, clips written now).

    Idempotent: when dataset.json records the same parameters and every clip exists, nothing is
    touched. An interrupted run (no dataset.json yet) is completed, keeping the clips already
    written with the same parameters; other parameters regenerate everything. Clips are written
    to a temporary name and renamed, dataset.json last. Raises DemoDatasetError for a non-empty
    folder that is not a demo dataset, ValueError for bad arguments."""
    _check_args(train_per_class, val_per_class, unlabelled, size, frames, fps, seed, workers)
    fps = float(fps) if not float(fps).is_integer() else int(fps)
    out = Path(out_dir)
    params = _params(train_per_class, val_per_class, unlabelled, size, frames, fps, seed)
    plan = _plan(params)
    manifest_path, partial_path = out / MANIFEST, out / PARTIAL
    manifest = _read_json(manifest_path) if manifest_path.exists() else None
    complete = manifest is not None and manifest.get("params") == params
    if complete and all((out / t[0]).is_file() for t in plan):
        return manifest, 0

    if out.exists() and not out.is_dir():
        raise DemoDatasetError(f"{out} exists and is not a folder")
    ours = partial_path.exists() or (manifest is not None and manifest.get("generator") == GENERATOR)
    if out.is_dir() and any(out.iterdir()) and not ours:
        raise DemoDatasetError(f"{out} is not empty and holds no demo dataset (no {MANIFEST} written by this "
                               "generator): give a new or empty folder")
    previous = _read_json(partial_path) if partial_path.exists() else manifest
    reuse = previous is not None and previous.get("params") == params
    out.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # from here on the folder reads as incomplete
    write_json(partial_path, {"params": params}, indent=2)

    # Remove what this generator wrote before and the plan no longer holds (or everything, when
    # the parameters changed), so `vjepa shards build` sees exactly the planned clips.
    planned = {t[0] for t in plan}
    for split in ("train", "val", "unlabelled"):
        split_dir = out / split
        if not split_dir.is_dir():
            continue
        for f in sorted(split_dir.rglob("*")):
            if f.is_file() and (f.suffix == ".tmp" or (f.suffix == ".mp4" and (
                    not reuse or f.relative_to(out).as_posix() not in planned))):
                f.unlink()
        for d in sorted((d for d in split_dir.rglob("*") if d.is_dir()), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()
    for split, cls in {(t[1], t[2]) for t in plan}:
        (out / split / cls if cls else out / split).mkdir(parents=True, exist_ok=True)

    todo = [t for t in plan if not (reuse and (out / t[0]).is_file())]
    t0 = time.monotonic()
    # Batches of clips, a worker task each (one ffmpeg per clip); small enough that every worker gets several.
    per_batch = max(1, min(24, math.ceil(len(todo) / (4 * workers))))
    batches = [todo[i:i + per_batch] for i in range(0, len(todo), per_batch)]
    with _progress_bar(len(plan), len(plan) - len(todo), progress) as bar:
        if workers == 1 or len(batches) == 1:
            for batch in batches:
                bar.update(_write_batch(str(out), batch, params))
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            ctx = multiprocessing.get_context("spawn")  # no fork of a (possibly threaded) parent
            with ProcessPoolExecutor(max_workers=min(workers, len(batches)), mp_context=ctx) as pool:
                futures = [pool.submit(_write_batch, str(out), batch, params) for batch in batches]
                try:
                    for fut in as_completed(futures):
                        bar.update(fut.result())
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise

    counts = {"train": {c: train_per_class for c in CLASSES}, "val": {c: val_per_class for c in CLASSES},
              "unlabelled": unlabelled, "total": len(plan)}
    hidden = [unlabelled_class(seed, i)[0] for i in range(unlabelled)]
    manifest = {
        "name": "vjepa-demo-motion",
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "classes": list(CLASSES),
        "counts": counts,
        "seed": seed, "size": size, "frames": frames, "fps": fps, "crf": CRF,
        "layout": {"train": "train/<class>/<class>_NNNN.mp4", "val": "val/<class>/<class>_NNNN.mp4",
                   "unlabelled": "unlabelled/clip_NNNNN.mp4"},
        "description": "motion-defined classes: a single frame carries no label information",
        "unlabelled_class_counts": {c: hidden.count(c) for c in CLASSES},  # the pool's hidden mix
        "written_clips": len(todo),
        "seconds": round(time.monotonic() - t0, 2),
        "params": params,
    }
    write_json(manifest_path, manifest, indent=2)
    partial_path.unlink(missing_ok=True)
    return manifest, len(todo)


__all__ = ["CLASSES", "GENERATOR_VERSION", "DemoDatasetError", "clip_rng", "dataset_clip",
           "encode_clips", "generate_demo_dataset", "render_clip", "render_scene", "sample_scene",
           "unlabelled_class", "write_demo_dataset"]
