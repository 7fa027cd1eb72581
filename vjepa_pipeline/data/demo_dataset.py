"""The demo dataset: tiny motion-centric action recognition (in the spirit of Something-Something).

A clip's label is WHAT HAPPENS OVER TIME, never what a frame looks like:

    move_left  move_right  move_up  move_down   one object translates (direction within +-15 deg)
    rotate_cw  rotate_ccw                       one object turns 80-150 deg (clockwise on screen)
    grow       shrink                           one object scales by 1.5-2x
    occluded_reappear                           one object passes behind the bar and comes out
                                                on the other side (fully hidden for >= 1 frame)
    approach   separate                         two objects move towards / away from each other

Every clip holds the same cast whatever its class: two marked objects and one opaque bar over a
smooth, slowly drifting, tinted background, plus mild per-frame noise. Shape (square, disc,
triangle, cross, L, T, arrow, diamond), colours, sizes, start positions, speeds, directions and the
nuisance motion are drawn independently of the label. Every object carries a contrasting stripe
(the "marker") on one side, so any rotation is visible, discs and squares included.

A single frame carries no label information, by construction:

* The world is a torus: whatever leaves one edge re-enters at the opposite one (objects, bar and
  background are all periodic). Positions are then uniform in EVERY frame for every class, so a
  move_left clip does not start on the right. Orientations are uniform on the circle likewise.
* Sizes: a growing object's log-size runs linearly from ``a`` to ``a + g``; shrinking is the time
  reverse; objects of the other classes take the log-size ``a + g * t'/(T-1)`` at a random frame
  ``t'``, so the size seen in a random frame has the same distribution in every class.
* Two objects and one bar in every clip (non-acting objects only jitter slightly), so counting
  things in a frame says nothing either. Only the occluded_reappear actor ever touches the bar;
  in other classes the bar is placed clear of every object's path.

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
from collections.abc import Callable
from pathlib import Path

import numpy as np

CLASSES = ("move_left", "move_right", "move_up", "move_down", "rotate_cw", "rotate_ccw", "grow", "shrink",
           "occluded_reappear", "approach", "separate")
GENERATOR_VERSION = 1
MANIFEST = "dataset.json"
PARTIAL = ".demo_dataset_partial.json"  # marks a folder this generator is (or was) writing into
SPLIT_CODES = {"train": 1, "val": 2, "unlabelled": 3}
CRF = 18
MIN_SIZE, MIN_FRAMES = 16, 4

# Scene parameters, as fractions of the frame side unless named otherwise.
R_RANGE = (0.055, 0.12)        # object half-extent (all shape points lie within it)
SCALE_CHANGE = (1.5, 2.0)      # grow / shrink factor over the clip
MOVE_DIST = (0.20, 0.42)       # translation over the clip
MOVE_JITTER_DEG = 15.0         # direction deviation from the axis
ROTATION_DEG = (80.0, 150.0)   # rotation over the clip
APPROACH_DIST = (0.14, 0.24)   # change of the centre distance of approach / separate
APPROACH_GAP = (0.02, 0.06)    # edge gap between the two objects at their closest
APPROACH_MAX_DIST = 0.44       # farthest centre distance (< 0.5: the short way round stays the short way)
BAR_EXTRA = (0.05, 0.10)       # bar width beyond the object's diameter
OCCLUDE_GAP = (0.02, 0.06)     # clearance between object and bar at the first and last frame
NUISANCE_DRIFT = 0.03          # slow drift of objects that are not translating
NUISANCE_ROT_DEG = 8.0
NUISANCE_SCALE = 0.05          # +- log-size drift of objects that are not scaling
BG_DRIFT = 0.04
NOISE_STD = 0.012              # per-pixel, per-frame noise (0..1 scale)
MARKER_FROM = 0.3              # the marker is the part of the shape with local u > MARKER_FROM


class DemoDatasetError(Exception):
    """The output folder cannot hold the demo dataset (the message says why)."""


# --------------------------------------------------------------------------------------------
# Shapes: unions of convex polygons (or the unit disc) in local coordinates within radius 1.


def _rect(x0: float, x1: float, y0: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


_SHAPE_POLYGONS: dict[str, list[list[tuple[float, float]]] | None] = {
    "square": [_rect(-0.7, 0.7, -0.7, 0.7)],
    "disc": None,
    "triangle": [[(1.0, 0.0), (-0.5, 0.866), (-0.5, -0.866)]],
    "cross": [_rect(-0.95, 0.95, -0.3, 0.3), _rect(-0.3, 0.3, -0.95, 0.95)],
    "L": [_rect(-0.7, -0.2, -0.7, 0.7), _rect(-0.7, 0.7, 0.2, 0.7)],
    "T": [_rect(0.22, 0.7, -0.7, 0.7), _rect(-0.7, 0.22, -0.22, 0.22)],
    "arrow": [_rect(-0.9, 0.1, -0.25, 0.25), [(0.1, -0.7), (0.95, 0.0), (0.1, 0.7)]],
    "diamond": [[(0.95, 0.0), (0.0, 0.6), (-0.95, 0.0), (0.0, -0.6)]],
}
SHAPES = tuple(_SHAPE_POLYGONS)


def _half_planes(poly: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Outward unit normals (k, 2) and offsets (k,) of a convex polygon: inside <=> n.p <= c."""
    pts = np.asarray(poly, dtype=np.float64)
    centre = pts.mean(axis=0)
    normals, offsets = [], []
    for a, b in zip(pts, np.roll(pts, -1, axis=0)):
        n = np.array([b[1] - a[1], a[0] - b[0]])
        n /= np.linalg.norm(n)
        if n @ (centre - a) > 0:
            n = -n
        normals.append(n)
        offsets.append(n @ a)
    return np.array(normals), np.array(offsets)


_SHAPE_PARTS = {name: None if polys is None else [_half_planes(p) for p in polys]
                for name, polys in _SHAPE_POLYGONS.items()}


def _wrap(d: np.ndarray, period: float) -> np.ndarray:
    """Signed torus difference in [-period/2, period/2)."""
    return (d + period / 2) % period - period / 2


def _object_coverage(shape: str, cx, cy, theta, r, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased coverage (T, H, W) of an object and of its marker, on the torus.

    A local point (u, v) is drawn at screen offset r * R(theta) (u, v); the image y axis points
    down, so increasing theta turns the object clockwise on screen."""
    pix = np.arange(size, dtype=np.float64) + 0.5
    dx = _wrap(pix[None, None, :] - np.asarray(cx)[:, None, None], size)
    dy = _wrap(pix[None, :, None] - np.asarray(cy)[:, None, None], size)
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    rr = np.asarray(r, dtype=np.float64)[:, None, None]
    u = (c * dx + s * dy) / rr
    v = (-s * dx + c * dy) / rr
    parts = _SHAPE_PARTS[shape]
    if parts is None:
        sd = np.sqrt(u * u + v * v) - 0.95
    else:
        sd = None
        for normals, offsets in parts:
            d = normals[0, 0] * u + normals[0, 1] * v - offsets[0]
            for (nx, ny), off in zip(normals[1:], offsets[1:]):
                d = np.maximum(d, nx * u + ny * v - off)
            sd = d if sd is None else np.minimum(sd, d)
    cov = np.clip(0.5 - sd * rr, 0.0, 1.0)  # signed distance in pixels -> coverage
    marker = np.clip(0.5 + (u - MARKER_FROM) * rr, 0.0, 1.0) * cov
    return cov, marker


# --------------------------------------------------------------------------------------------
# Scene sampling


def _colour(rng: np.random.Generator, avoid: list[np.ndarray], min_dist: float = 0.4) -> np.ndarray:
    for _ in range(100):
        col = rng.uniform(0.05, 0.95, 3)
        if all(np.linalg.norm(col - a) >= min_dist for a in avoid):
            return col
    return col


def _log_size(rng: np.random.Generator, size: int) -> tuple[float, float]:
    """(a, g): a log-size path from a to a + g that stays within R_RANGE."""
    lo, hi = math.log(R_RANGE[0] * size), math.log(R_RANGE[1] * size)
    g = rng.uniform(math.log(SCALE_CHANGE[0]), math.log(SCALE_CHANGE[1]))
    return rng.uniform(lo, hi - g), g


def _static_radius(rng: np.random.Generator, size: int, frames: int) -> float:
    """An object size distributed like a growing object's size at a random frame."""
    a, g = _log_size(rng, size)
    return math.exp(a + g * rng.integers(frames) / (frames - 1))


def _new_object(rng: np.random.Generator, size: int, frames: int, bg: np.ndarray, r: float) -> dict:
    """A nearly still object (uniform position and orientation, small nuisance motion)."""
    tau = np.linspace(0.0, 1.0, frames)
    colour = _colour(rng, [bg])
    marker = colour * 0.25 if colour @ [0.299, 0.587, 0.114] > 0.5 else colour * 0.25 + 0.75
    pos = rng.uniform(0, size, 2)
    drift_dir = rng.uniform(0, 2 * math.pi)
    drift = rng.uniform(0, NUISANCE_DRIFT * size) * np.array([math.cos(drift_dir), math.sin(drift_dir)])
    theta0 = rng.uniform(0, 2 * math.pi)
    spin = math.radians(rng.uniform(-NUISANCE_ROT_DEG, NUISANCE_ROT_DEG))
    scale = rng.uniform(-NUISANCE_SCALE, NUISANCE_SCALE)
    return {
        "shape": SHAPES[rng.integers(len(SHAPES))], "colour": colour, "marker": marker,
        "cx": (pos[0] + drift[0] * tau) % size, "cy": (pos[1] + drift[1] * tau) % size,
        "theta": theta0 + spin * tau, "r": r * np.exp(scale * (tau - 0.5)),
    }


def _normal_coord(obj: dict, orient: str) -> np.ndarray:
    return obj["cx"] if orient == "v" else obj["cy"]


def _place_bar(rng: np.random.Generator, objects: list[dict], orient: str, width: float, size: int) -> float:
    """A bar centre (along the bar's normal axis) clear of every object in every frame, uniform
    among such positions; the least-overlapping position if there is none."""
    grid = np.arange(0, size, 0.25)
    occupied = np.zeros_like(grid, dtype=bool)
    for obj in objects:
        n = _normal_coord(obj, orient)
        dist = np.abs(_wrap(grid[:, None] - n[None, :], size))
        occupied |= (dist <= obj["r"][None, :] + 1.0).any(axis=1)
    if not occupied.any():
        return float(rng.uniform(0, size))
    clearance = np.abs(_wrap(grid[:, None] - grid[None, occupied], size)).min(axis=1)
    ok = np.flatnonzero(clearance > width / 2)
    if ok.size == 0:
        return float(grid[np.argmax(clearance)])
    return float(grid[rng.choice(ok)] + rng.uniform(0, 0.25))


def _clear_of(obj: dict, others: list[dict], bar: dict, size: int) -> bool:
    n = _normal_coord(obj, bar["orient"])
    if (np.abs(_wrap(n - bar["centre"], size)) <= bar["width"] / 2 + obj["r"] + 1.0).any():
        return False
    for other in others:
        d = np.hypot(_wrap(obj["cx"] - other["cx"], size), _wrap(obj["cy"] - other["cy"], size))
        if (d <= obj["r"] + other["r"] + 1.0).any():
            return False
    return True


def sample_scene(cls: str, rng: np.random.Generator, size: int = 64, frames: int = 16) -> dict:
    """Draw everything a clip of class ``cls`` needs (pure function of the rng state).

    Returns {"background": {...}, "objects": [...], "actors": [indices], "bar": {...}}; object
    tracks are arrays over frames (pixel centres, orientation in radians, half-extent in px)."""
    if cls not in CLASSES:
        raise ValueError(f"unknown class {cls!r}; classes: {', '.join(CLASSES)}")
    if frames < MIN_FRAMES:
        raise ValueError(f"frames must be >= {MIN_FRAMES}, got {frames}")
    W = float(size)
    T = frames
    tau = np.linspace(0.0, 1.0, T)

    # Background: a tint plus a few periodic low-frequency waves, drifting slowly.
    bg_base = rng.uniform(0.25, 0.75, 3)
    waves = []
    for _ in range(8):
        k = rng.integers(-4, 5, 2)
        while not k.any():
            k = rng.integers(-4, 5, 2)
        amp = rng.uniform(0.02, 0.07) / math.sqrt(np.hypot(*k))
        waves.append((k, amp * rng.uniform(0.5, 1.0, 3), rng.uniform(0, 2 * math.pi)))
    bg_dir = rng.uniform(0, 2 * math.pi)
    bg_drift = rng.uniform(0, BG_DRIFT * W) * np.array([math.cos(bg_dir), math.sin(bg_dir)])
    background = {"base": bg_base, "waves": waves, "drift": bg_drift}

    # Bar: orientation and width are class-independent (width from a marginal-size draw).
    orient = "v" if rng.random() < 0.5 else "h"
    r_ref = _static_radius(rng, size, T)
    bar_width = 2 * r_ref + rng.uniform(*BAR_EXTRA) * W
    bar_colour = _colour(rng, [bg_base])
    bar = {"orient": orient, "width": bar_width, "colour": bar_colour,
           "shade": (int(rng.integers(1, 3)), rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.1))}

    actor = _new_object(rng, size, T, bg_base, r_ref)
    actors = [actor]
    if cls.startswith("move_"):
        base = {"move_left": math.pi, "move_right": 0.0, "move_up": -math.pi / 2, "move_down": math.pi / 2}[cls]
        ang = base + math.radians(rng.uniform(-MOVE_JITTER_DEG, MOVE_JITTER_DEG))
        dist = rng.uniform(*MOVE_DIST) * W
        actor["cx"] = (actor["cx"][0] + dist * math.cos(ang) * tau) % W
        actor["cy"] = (actor["cy"][0] + dist * math.sin(ang) * tau) % W
    elif cls.startswith("rotate_"):
        turn = math.radians(rng.uniform(*ROTATION_DEG)) * (1 if cls == "rotate_cw" else -1)
        actor["theta"] = actor["theta"][0] + turn * tau
    elif cls in ("grow", "shrink"):
        a, g = _log_size(rng, size)
        actor["r"] = np.exp(a + g * (tau if cls == "grow" else 1.0 - tau))
    elif cls == "occluded_reappear":
        # Cross the bar perpendicularly (within 10 deg); the actor is centred behind the bar at
        # an integer frame t_c, clear of it by a gap at the first and last frames.
        r = float(actor["r"].max())
        sign = 1.0 if rng.random() < 0.5 else -1.0
        t_c = int(rng.integers(round(0.35 * (T - 1)), round(0.65 * (T - 1)) + 1))
        t_c = min(max(t_c, 1), T - 2)
        gap = rng.uniform(*OCCLUDE_GAP) * W
        speed = (bar_width / 2 + r + gap) / min(t_c, T - 1 - t_c)  # along the normal, px per frame
        slant = math.tan(math.radians(rng.uniform(-10, 10)))
        steps = np.arange(T) - t_c
        along = sign * speed * steps
        start = rng.uniform(0, W)  # the crossing point (centre of the bar), uniform
        across = rng.uniform(0, W) + slant * along
        normal = (start + along) % W
        if orient == "v":
            actor["cx"], actor["cy"] = normal, across % W
        else:
            actor["cx"], actor["cy"] = across % W, normal
        bar["centre"] = start
    elif cls in ("approach", "separate"):
        other = _new_object(rng, size, T, bg_base, _static_radius(rng, size, T))
        r1, r2 = float(actor["r"].max()), float(other["r"].max())
        near = r1 + r2 + rng.uniform(*APPROACH_GAP) * W
        far = min(near + rng.uniform(*APPROACH_DIST) * W, APPROACH_MAX_DIST * W)
        dist = near + (far - near) * (1.0 - tau if cls == "approach" else tau)
        ang = rng.uniform(0, 2 * math.pi)
        share = rng.uniform(0.3, 0.7)  # how much of the distance change object 1 does
        mid = rng.uniform(0, W, 2)
        off1, off2 = share * dist, (1.0 - share) * dist  # distances from the (fixed) point `mid`
        e = np.array([math.cos(ang), math.sin(ang)])
        actor["cx"], actor["cy"] = (mid[0] - off1 * e[0]) % W, (mid[1] - off1 * e[1]) % W
        other["cx"], other["cy"] = (mid[0] + off2 * e[0]) % W, (mid[1] + off2 * e[1]) % W
        actors.append(other)

    if "centre" not in bar:
        bar["centre"] = _place_bar(rng, actors, orient, bar_width, size)
    objects = list(actors)
    if len(actors) == 1:  # a still companion, clear of the bar and of the actor if possible
        for _ in range(40):
            companion = _new_object(rng, size, T, bg_base, _static_radius(rng, size, T))
            if _clear_of(companion, actors, bar, size):
                break
        objects.insert(0, companion)  # drawn first: behind the actor
    return {"class": cls, "size": size, "frames": T, "background": background, "bar": bar,
            "objects": objects, "actors": [i for i, o in enumerate(objects) if any(o is a for a in actors)]}


# --------------------------------------------------------------------------------------------
# Rendering


def _render_background(bg: dict, size: int, frames: int) -> np.ndarray:
    """(T, H, W, 3) float32: cos(kx*x + ky*y + phase) split into products of 1-D factors, summed
    over the waves with one batched matmul."""
    pix = np.arange(size, dtype=np.float64) + 0.5
    tau = np.linspace(0.0, 1.0, frames)
    sx = pix[None, :] - bg["drift"][0] * tau[:, None]  # (T, W)
    sy = pix[None, :] - bg["drift"][1] * tau[:, None]  # (T, H)
    k = np.array([w[0] for w in bg["waves"]], dtype=np.float64)  # (K, 2)
    amp = np.array([w[1] for w in bg["waves"]], dtype=np.float64)  # (K, 3)
    phase = np.array([w[2] for w in bg["waves"]])
    ax = 2 * math.pi * k[:, 0, None, None] * sx[None] / size + phase[:, None, None]  # (K, T, W)
    ay = 2 * math.pi * k[:, 1, None, None] * sy[None] / size  # (K, T, H)
    left = np.concatenate([np.cos(ay), -np.sin(ay)], axis=0).transpose(1, 2, 0)  # (T, H, 2K)
    right = np.concatenate([np.cos(ax)[..., None] * amp[:, None, None, :],
                            np.sin(ax)[..., None] * amp[:, None, None, :]], axis=0)  # (2K, T, W, 3)
    right = right.transpose(1, 0, 2, 3).reshape(frames, 2 * len(k), size * 3)
    img = np.matmul(left.astype(np.float32), right.astype(np.float32)).reshape(frames, size, size, 3)
    return img + bg["base"].astype(np.float32)


def _bar_coverage(bar: dict, size: int) -> np.ndarray:
    pix = np.arange(size, dtype=np.float64) + 0.5
    d = np.abs(_wrap(pix - bar["centre"], size))
    cov = np.clip(bar["width"] / 2 + 0.5 - d, 0.0, 1.0)
    return np.broadcast_to(cov[None, :], (size, size)) if bar["orient"] == "v" else \
        np.broadcast_to(cov[:, None], (size, size))


def render_scene(scene: dict, rng: np.random.Generator | None = None, noise: bool = True,
                 background: bool = True) -> tuple[np.ndarray, dict]:
    """Frames (T, H, W, 3) uint8 of a scene and the layers they were composed from.

    ``noise=False`` / ``background=False`` (flat mid-grey) give clean renders for measuring.
    The layers: ``objects`` [(coverage, marker coverage)] per object before the bar, ``bar``
    coverage (H, W), ``visible`` coverage of each actor after the bar."""
    size, T = scene["size"], scene["frames"]
    if background:
        img = _render_background(scene["background"], size, T)
    else:
        img = np.full((T, size, size, 3), 0.5, dtype=np.float32)
    layers = []
    for obj in scene["objects"]:
        cov, mark = _object_coverage(obj["shape"], obj["cx"], obj["cy"], obj["theta"], obj["r"], size)
        layers.append((cov, mark))
        cov32, mark32 = cov.astype(np.float32)[..., None], mark.astype(np.float32)[..., None]
        img = (img * (1.0 - cov32) + (cov32 - mark32) * obj["colour"].astype(np.float32)
               + mark32 * obj["marker"].astype(np.float32))
    bar = scene["bar"]
    bar_cov = _bar_coverage(bar, size)
    pix = np.arange(size, dtype=np.float64) + 0.5
    cycles, phase, depth = bar["shade"]
    shade = 1.0 + depth * np.cos(2 * math.pi * cycles * pix / size + phase)  # along the bar
    shade = shade[:, None] if bar["orient"] == "v" else shade[None, :]
    bar_img = (bar["colour"] * shade[..., None]).astype(np.float32)
    bc = bar_cov.astype(np.float32)[None, ..., None]
    img = img * (1.0 - bc) + bar_img[None] * bc
    if noise:
        rng = rng if rng is not None else np.random.default_rng(0)
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(NOISE_STD)
    img *= np.float32(255.0)
    frames = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    visible = [layers[i][0] * (1.0 - bar_cov[None]) for i in scene["actors"]]
    return frames, {"objects": layers, "bar": bar_cov, "visible": visible}


def render_clip(cls: str, rng: np.random.Generator, size: int = 64, frames: int = 16, *,
                debug: bool = False):
    """One clip of class ``cls``: uint8 (T, H, W, 3). Pure function of the rng state.

    ``debug=True`` returns (frames, info) with info = {"scene": the sampled scene, "layers":
    the coverage maps of :func:`render_scene`, "clean": the same clip without background
    texture and noise}."""
    if size < MIN_SIZE or size % 2:
        raise ValueError(f"size must be even and >= {MIN_SIZE}, got {size}")
    scene = sample_scene(cls, rng, size, frames)
    clip, layers = render_scene(scene, rng)
    if not debug:
        return clip
    clean, _ = render_scene(scene, noise=False, background=False)
    return clip, {"scene": scene, "layers": layers, "clean": clean}


def clip_rng(seed: int, split: str, index: int, class_index: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLIT_CODES[split], int(class_index), int(index)]))


def dataset_clip(seed: int, split: str, index: int, cls: str | None = None, size: int = 64,
                 frames: int = 16) -> tuple[str, np.ndarray]:
    """Clip ``index`` of a split: (class, frames). Train / val need ``cls``; the unlabelled pool
    draws its class from (seed, index)."""
    if split == "unlabelled":
        rng = clip_rng(seed, split, index)
        cls = CLASSES[int(rng.integers(len(CLASSES)))]
    else:
        if cls is None:
            raise ValueError(f"split {split!r} needs a class")
        rng = clip_rng(seed, split, index, CLASSES.index(cls) + 1)
    return cls, render_clip(cls, rng, size, frames)


# --------------------------------------------------------------------------------------------
# Writing the dataset


def _params(train_per_class: int, val_per_class: int, unlabelled: int, size: int, frames: int, fps: float,
            seed: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, "classes": list(CLASSES), "train_per_class": train_per_class,
            "val_per_class": val_per_class, "unlabelled": unlabelled, "size": size, "frames": frames,
            "fps": fps, "seed": seed, "crf": CRF}


def _plan(p: dict) -> list[tuple[str, str, str | None, int]]:
    """(relative path, split, class or None, index) of every clip."""
    tasks = []
    for split, count in (("train", p["train_per_class"]), ("val", p["val_per_class"])):
        for cls in CLASSES:
            tasks += [(f"{split}/{cls}/{cls}_{i:04d}.mp4", split, cls, i) for i in range(count)]
    tasks += [(f"unlabelled/clip_{i:05d}.mp4", "unlabelled", None, i) for i in range(p["unlabelled"])]
    return tasks


def _write_clip(root: str, task: tuple, p: dict) -> str:
    from ..shards.media import write_video

    rel, split, cls, index = task
    _, frames = dataset_clip(p["seed"], split, index, cls, p["size"], p["frames"])
    dst = Path(root) / rel
    tmp = dst.with_name(dst.name + ".tmp")
    write_video(tmp, frames, fps=p["fps"], crf=p["crf"])
    os.replace(tmp, dst)
    return rel


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


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
        raise ValueError(f"size must be an even integer >= {MIN_SIZE} (H.264 4:2:0 needs even sides), got {size!r}")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < MIN_FRAMES:
        raise ValueError(f"frames must be an integer >= {MIN_FRAMES}, got {frames!r}")
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not (0 < fps <= 240) or not math.isfinite(fps):
        raise ValueError(f"fps must be in (0, 240], got {fps!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if train_per_class + val_per_class + unlabelled == 0:
        raise ValueError("nothing to generate: all counts are 0")


def _progress_printer(total: int, enabled: bool) -> Callable[[int], None]:
    tty = sys.stderr.isatty()
    state = {"last": -1.0, "t0": time.monotonic()}

    def show(done: int) -> None:
        if not enabled or total == 0:
            return
        now = time.monotonic()
        if done < total and now - state["last"] < (0.2 if tty else 5.0):
            return
        state["last"] = now
        line = f"demo dataset: {done}/{total} clips ({now - state['t0']:.1f} s)"
        print(("\r" + line) if tty else line, end="\n" if (done == total or not tty) else "", file=sys.stderr,
              flush=True)

    return show


def generate_demo_dataset(out_dir: str | os.PathLike, train_per_class: int = 40, val_per_class: int = 10,
                          unlabelled: int = 800, size: int = 64, frames: int = 16, fps: float = 8,
                          seed: int = 0, workers: int = 2, progress: bool = True) -> dict:
    """Write the demo dataset under ``out_dir`` and return the content of its dataset.json.

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
    if manifest is not None and manifest.get("params") == params and all((out / t[0]).is_file() for t in plan):
        return manifest

    if out.exists() and not out.is_dir():
        raise DemoDatasetError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (manifest_path.exists() or partial_path.exists()):
        raise DemoDatasetError(f"{out} is not empty and holds no demo dataset (no {MANIFEST}): "
                               "give a new or empty folder")
    previous = _read_json(partial_path) if partial_path.exists() else manifest
    reuse = previous is not None and previous.get("params", previous) == params
    out.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # from here on the folder reads as incomplete
    _write_json_atomic(partial_path, {"params": params})

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
    show = _progress_printer(len(plan), progress)
    done = len(plan) - len(todo)
    t0 = time.monotonic()
    show(done)
    if workers == 1 or len(todo) < 8:
        for task in todo:
            _write_clip(str(out), task, params)
            done += 1
            show(done)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")  # no fork of a (possibly threaded) parent
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx) as pool:
            futures = [pool.submit(_write_clip, str(out), task, params) for task in todo]
            try:
                for fut in as_completed(futures):
                    fut.result()
                    done += 1
                    show(done)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise

    counts = {"train": {c: train_per_class for c in CLASSES}, "val": {c: val_per_class for c in CLASSES},
              "unlabelled": unlabelled, "total": len(plan)}
    manifest = {
        "name": "vjepa-demo-motion",
        "generator": "vjepa_pipeline.data.demo_dataset",
        "generator_version": GENERATOR_VERSION,
        "classes": list(CLASSES),
        "counts": counts,
        "seed": seed, "size": size, "frames": frames, "fps": fps, "crf": CRF,
        "layout": {"train": "train/<class>/<class>_NNNN.mp4", "val": "val/<class>/<class>_NNNN.mp4",
                   "unlabelled": "unlabelled/clip_NNNNN.mp4"},
        "description": "motion-defined classes: a single frame carries no label information",
        "written_clips": len(todo),
        "seconds": round(time.monotonic() - t0, 2),
        "params": params,
    }
    _write_json_atomic(manifest_path, manifest)
    partial_path.unlink(missing_ok=True)
    return manifest


__all__ = ["CLASSES", "GENERATOR_VERSION", "SHAPES", "DemoDatasetError", "clip_rng", "dataset_clip",
           "generate_demo_dataset", "render_clip", "render_scene", "sample_scene"]
