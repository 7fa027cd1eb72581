"""A violation-of-expectation set in the demo's world: pairs of clips, identical until an event, of
which one breaks a rule of that world and its twin does not (the test of ``vjepa eval surprise``).

Scenes are the demo dataset's (:mod:`.dataset`: one large textured object over a textured torus
background, the same sampling of outline, texture, size, position, orientation and motion), drawn
over ``frames`` frames at the demo's speed (vanish / appear: twice that, below; the demo's 16-frame
tracks, extended linearly; the grow / shrink classes are not used, their size would leave the
demo's range). At the event frame ``e`` the impossible twin changes:

    vanish     the object passes behind an occluder (a vertical band, in both twins); possible: it
               comes out on the other side; impossible: it never comes out
    appear     possible: nothing behind the occluder, nothing comes out; impossible: an object
               comes out of it (it was hidden there, unseen, until the event). Drawn from the same
               scene as vanish pair ``index``: the two pairs form an IntPhys-style quadruplet (passes
               behind / vanishes / nothing there / appears) in which the object is on screen equally
               long in the possible and the impossible movies, so its content cancels
    teleport   the object jumps 25-40 % of the frame in a random direction
    shape      the outline changes (round <-> boxy, aspect ratio)
    colour     the colour and texture are redrawn

For vanish / appear the object moves horizontally (the move_left / move_right classes) at the small
end of the demo's sizes, fully hidden at the event frame, so both twins are pixel-identical up to it.
It moves at twice the demo's translation speed, behind a band just wide enough to hide it (half-width:
its largest horizontal distance from its centre + one frame's travel + ``OCCLUDER_MARGIN``): the demo
model's window (8 frames at frame step 2, 16 source frames, half of them context) must see the
object go in and come out, and at the demo's own speeds (16-29 pixels per 16 frames) it cannot.
Measured: with generator version 2 (demo speeds, a band 58 % of the frame wide) no pair of 40 had a window showing
the object at least 30 % visible in a context frame, then fully hidden, then at least 30 % visible
in a predicted frame (39 of 40 now), and the quadruplet test was at chance; docs/benchmarks.md,
"Intuitive physics". At twice the speed the object may pass the band's place more than once in a
long clip (the world wraps around); the twins still part only at the event.
The pixel noise is shared by the twins. Everything is deterministic in (seed, violation, index).

Layout written by :func:`write_violation_set`::

    DIR/clips/<violation>_<NNNN>_{possible,impossible}.mp4
    DIR/manifest.csv        path, pair, violation, possible (1/0), event_frame, quadruplet (the
                            shared id of vanish / appear pairs NNNN when both are in the set, else
                            empty): the shard builder's manifest format (extra columns land in each
                            sample's metadata)
    DIR/violations.json     parameters, written last (its absence marks an unfinished set)
"""

from __future__ import annotations

import copy
import csv
import io
import math
import os
from pathlib import Path

import numpy as np

from ..utils.atomic import atomic_write_text, write_json
from .dataset import (CRF, MARKER_SHIFT, NOISE_STD, OBJ_TINT, SQUARENESS, ASPECT, _texture, _waves, OBJ_AMP,
                      OBJ_FREQ, OBJ_WAVES, encode_clips, object_layers, sample_scene)

VIOLATIONS = ("vanish", "appear", "teleport", "shape", "colour")
VIOLATION_CODES = {v: i + 1 for i, v in enumerate(VIOLATIONS)}
BASE_CLASSES = ("move_left", "move_right", "move_up", "move_down", "rotate_cw", "rotate_ccw")
# 2: appear shares vanish's scene; 3: vanish / appear objects at twice the demo's speed behind a fitted band
GENERATOR, GENERATOR_VERSION = "vjepa_pipeline.demo.violations", 3
MANIFEST, INFO = "manifest.csv", "violations.json"
DEMO_FRAMES = 16                # the demo clip length whose per-frame speeds we keep
EVENT_RANGE = (0.4, 0.6)        # event frame, as a fraction of the clip
OCCLUDED_R = (0.17, 0.19)       # object half-extent for vanish / appear (the demo's smallest sizes)
OCCLUDED_ASPECT = (0.7, 0.8)
OCCLUDED_SPEEDUP = 2.0          # vanish / appear objects move this much faster than the demo's (see above)
OCCLUDER_MARGIN = 1 / 32         # band beyond the object's extent + one frame's travel, fraction of the
                                # frame (2 pixels at 64), at least 1 pixel
TELEPORT = (0.25, 0.40)         # jump length, fraction of the frame


def _extend(track: np.ndarray, frames: int, log: bool = False) -> np.ndarray:
    """A per-frame track of the 16-frame demo clip extended linearly (in log for sizes) to ``frames``."""
    x = np.log(track) if log else track
    t = np.arange(frames, dtype=np.float64)
    out = x[0] + (x[1] - x[0]) * t if len(x) > 1 else np.full(frames, x[0])
    return np.exp(out) if log else out


def _scene(rng: np.random.Generator, size: int, frames: int, classes=BASE_CLASSES) -> dict:
    cls = classes[int(rng.integers(len(classes)))]
    scene = sample_scene(cls, rng, size, DEMO_FRAMES)
    obj = scene["object"]
    for key in ("cx", "cy"):  # positions wrap around the torus: unwrap the first step
        x = np.asarray(obj[key], dtype=np.float64)
        step = (x[1] - x[0] + size / 2) % size - size / 2
        obj[key] = _extend(np.array([x[0], x[0] + step]), frames)
    obj["theta"] = _extend(np.asarray(obj["theta"], dtype=np.float64), frames)
    obj["r"] = _extend(np.asarray(obj["r"], dtype=np.float64), frames, log=True)
    obj["vx"] = float(obj["cx"][1] - obj["cx"][0])  # horizontal velocity, pixels per frame
    obj["cx"], obj["cy"] = obj["cx"] % size, obj["cy"] % size
    scene["frames"] = frames
    return scene


def _object_rgb(scene: dict) -> tuple[np.ndarray, np.ndarray]:
    """Object colour (T, H, W, 3) and coverage (T, H, W) float32, as the demo renders them."""
    obj = scene["object"]
    cov, marker, u, v = object_layers(scene)
    colour = obj["base"].astype(np.float32) + _texture(obj["waves"], u, v)
    lum = 0.299 * colour[..., 0] + 0.587 * colour[..., 1] + 0.114 * colour[..., 2]
    shift = np.where(lum > 0.5, -MARKER_SHIFT, MARKER_SHIFT).astype(np.float32)
    colour = colour + marker[..., None].astype(np.float32) * shift[..., None]
    return colour, cov.astype(np.float32)


def compose(scene: dict, noise: np.ndarray, visible: np.ndarray | None = None, occluder: dict | None = None,
            after: tuple[int, dict] | None = None) -> np.ndarray:
    """uint8 frames (T, H, W, 3): background, the object (where ``visible``; from frame ``after[0]`` on
    drawn from the scene ``after[1]``), the occluder on top, then ``noise`` (T, H, W, 3)."""
    size, T = scene["size"], scene["frames"]
    bg = scene["background"]
    pix = (np.arange(size, dtype=np.float64) + 0.5) / size
    img = bg["base"].astype(np.float32) + _texture(bg["waves"], pix[None, :], pix[:, None])
    out = np.repeat(img[None], T, axis=0)
    colour, cov = _object_rgb(scene)
    if after is not None:
        start, other = after
        colour2, cov2 = _object_rgb(other)
        colour[start:], cov[start:] = colour2[start:], cov2[start:]
    if visible is not None:
        cov = cov * visible.astype(np.float32)[:, None, None]
    out = out * (1.0 - cov[..., None]) + colour * cov[..., None]
    if occluder is not None:
        dx = np.abs(((pix * size - occluder["x"]) + size / 2) % size - size / 2)
        occ = np.clip(occluder["half"] - dx + 0.5, 0.0, 1.0).astype(np.float32)[None, None, :, None]
        out = out * (1.0 - occ) + occluder["colour"].astype(np.float32) * occ
    out = out + noise
    out *= np.float32(255.0)
    np.rint(out, out=out)
    return np.clip(out, 0, 255).astype(np.uint8)


def _max_extent(scene: dict) -> float:
    """Largest horizontal distance (pixels) from the object's centre to a pixel it covers, over the clip."""
    size, obj = scene["size"], scene["object"]
    cov = object_layers(scene)[0]  # (T, H, W)
    cols = cov.max(axis=1) > 0  # (T, W): columns the object touches
    pix = np.arange(size, dtype=np.float64) + 0.5
    dx = np.abs(((pix[None, :] - obj["cx"][:, None]) + size / 2) % size - size / 2)
    return float(np.max(np.where(cols, dx, 0.0))) + 0.5


def violation_pair(violation: str, seed: int, index: int, size: int = 64, frames: int = 32
                   ) -> tuple[np.ndarray, np.ndarray, int]:
    """(possible, impossible, event frame): uint8 (T, H, W, 3) twins, identical before the event frame.

    A pure function of (seed, violation, index)."""
    if violation not in VIOLATIONS:
        raise ValueError(f"unknown violation {violation!r}; violations: {', '.join(VIOLATIONS)}")
    if frames < 8 or size < 16 or size % 2:
        raise ValueError(f"need frames >= 8 and an even size >= 16, got frames={frames}, size={size}")
    occluded = violation in ("vanish", "appear")
    code = VIOLATION_CODES["vanish" if occluded else violation]  # appear index i: vanish index i's scene
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), code, int(index)]))
    event = int(round(frames * rng.uniform(*EVENT_RANGE)))
    scene = _scene(rng, size, frames, ("move_left", "move_right") if occluded else BASE_CLASSES)
    obj = scene["object"]
    noise = rng.standard_normal((frames, size, size, 3), dtype=np.float32) * np.float32(NOISE_STD)
    if occluded:
        obj["r"] = np.full(frames, rng.uniform(*OCCLUDED_R) * size)
        obj["aspect"] = rng.uniform(*OCCLUDED_ASPECT)
        obj["cy"] = np.full(frames, obj["cy"][event])  # the band is full-height; keep the path level
        obj["vx"] *= OCCLUDED_SPEEDUP
        obj["cx"] = obj["cx"][0] + obj["vx"] * np.arange(frames, dtype=np.float64)
        # fully hidden at the event frame and the one before, its centre on the exit half of the band:
        # the possible twin comes out on the other side a few frames later
        direction, speed = math.copysign(1.0, obj["vx"]), abs(obj["vx"])
        margin = max(1.0, OCCLUDER_MARGIN * size)
        half = _max_extent(scene) + speed + margin
        for _ in range(20):  # small frames: an outline turned broadside needs a band over 3/4 of the frame; shrink it
            if 2 * half <= 0.75 * size:
                break
            obj["r"] = obj["r"] * 0.95
            half = _max_extent(scene) + speed + margin
        else:
            raise ValueError(f"{violation} pair {index}: the band that hides its object would cover {2 * half / size:.0%} "
                             f"of the {size}-pixel frame (at most 75 %); use --size 32 or more")
        depth = half - _max_extent(scene) - speed  # = the margin: hidden at the event frame and the one before
        x_occ = float(rng.uniform(0, size))
        offset = x_occ + direction * rng.uniform(0.5 * depth, depth) - obj["cx"][event]
        obj["cx"] = (obj["cx"] + offset) % size
        occluder = {"x": x_occ, "half": half, "colour": 0.5 + rng.uniform(-0.3, 0.3, 3)}
        shown = np.ones(frames, dtype=bool)
        if violation == "vanish":
            hidden_after = shown.copy()
            hidden_after[event:] = False
            return (compose(scene, noise, shown, occluder), compose(scene, noise, hidden_after, occluder), event)
        nothing = np.zeros(frames, dtype=bool)
        from_event = nothing.copy()
        from_event[event:] = True
        return compose(scene, noise, nothing, occluder), compose(scene, noise, from_event, occluder), event
    other = copy.deepcopy(scene)
    o2 = other["object"]
    if violation == "teleport":
        ang = rng.uniform(0, 2 * math.pi)
        jump = rng.uniform(*TELEPORT) * size
        o2["cx"] = (o2["cx"] + jump * math.cos(ang)) % size
        o2["cy"] = (o2["cy"] + jump * math.sin(ang)) % size
    elif violation == "shape":
        mid = sum(SQUARENESS) / 2
        o2["power"] = rng.uniform(SQUARENESS[0], SQUARENESS[0] + 0.5) if obj["power"] > mid else \
            rng.uniform(SQUARENESS[1] - 0.5, SQUARENESS[1])
        o2["aspect"] = ASPECT[0] if obj["aspect"] > sum(ASPECT) / 2 else ASPECT[1]
    else:  # colour: the tint moves by at least half its range in every channel, new texture
        sign = np.where(obj["base"] > 0.5, -1.0, 1.0)
        o2["base"] = obj["base"] + sign * rng.uniform(OBJ_TINT, 2 * OBJ_TINT, 3)
        o2["waves"] = _waves(rng, OBJ_WAVES, OBJ_AMP, OBJ_FREQ)
    return compose(scene, noise), compose(scene, noise, after=(event, other)), event


def plan(pairs_per_violation: int, violations=VIOLATIONS) -> list[tuple[str, int]]:
    return [(v, i) for v in violations for i in range(pairs_per_violation)]


def write_violation_set(out_dir: str | os.PathLike, pairs_per_violation: int = 40, size: int = 64,
                        frames: int = 32, fps: float = 8, seed: int = 0, violations=VIOLATIONS,
                        progress: bool = True) -> dict:
    """Write the set under ``out_dir`` (layout in the module docstring) and return violations.json's
    content. Re-running with the same parameters reuses a finished set; other parameters rewrite it."""
    from tqdm import tqdm

    bad = [v for v in violations if v not in VIOLATIONS]
    if bad or not violations:
        raise ValueError(f"unknown violations {bad}; choose from {', '.join(VIOLATIONS)}")
    if isinstance(pairs_per_violation, bool) or not isinstance(pairs_per_violation, int) or pairs_per_violation < 1:
        raise ValueError(f"pairs per violation must be an integer >= 1, got {pairs_per_violation!r}")
    out = Path(out_dir)
    params = {"generator": GENERATOR, "generator_version": GENERATOR_VERSION, "pairs_per_violation": pairs_per_violation,
              "size": size, "frames": frames, "fps": fps, "seed": seed, "violations": list(violations), "crf": CRF}
    info_path = out / INFO
    if info_path.is_file():
        import json

        try:
            old = json.loads(info_path.read_text())
        except ValueError:
            old = None
        if isinstance(old, dict) and old.get("params") == params:
            return old
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).exists() and not info_path.exists():
        raise ValueError(f"{out} is not empty and holds no violation set: give a new or empty folder")
    (out / "clips").mkdir(parents=True, exist_ok=True)
    info_path.unlink(missing_ok=True)
    rows = []
    todo = plan(pairs_per_violation, violations)
    quadruplets = {"vanish", "appear"} <= set(violations)
    with tqdm(total=len(todo), desc="violation pairs", unit="pair", disable=not progress, ascii=True) as bar:
        for k in range(0, len(todo), 8):  # 8 pairs at a time (one ffmpeg per clip)
            jobs, finals = [], []
            for violation, i in todo[k:k + 8]:
                possible, impossible, event = violation_pair(violation, seed, i, size, frames)
                for name, clip, ok in (("possible", possible, 1), ("impossible", impossible, 0)):
                    rel = f"clips/{violation}_{i:04d}_{name}.mp4"
                    jobs.append((out / (rel + ".tmp"), clip))
                    finals.append(out / rel)
                    quad = f"occlusion_{i:04d}" if quadruplets and violation in ("vanish", "appear") else ""
                    rows.append({"path": rel, "pair": f"{violation}_{i:04d}", "violation": violation,
                                 "possible": ok, "event_frame": event, "quadruplet": quad})
            encode_clips(jobs, fps)
            for (tmp, _), dst in zip(jobs, finals):
                os.replace(tmp, dst)
            bar.update(len(todo[k:k + 8]))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["path", "pair", "violation", "possible", "event_frame", "quadruplet"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / MANIFEST, buf.getvalue())
    info = {"name": "vjepa-demo-violations", "params": params, "pairs": len(todo), "clips": len(rows),
            "layout": {"clips": "clips/<violation>_NNNN_{possible,impossible}.mp4", "manifest": MANIFEST}}
    write_json(info_path, info, indent=2)
    return info


def build_violation_shards(data_dir: str | os.PathLike, shard_dir: str | os.PathLike, workers: int = 2) -> dict:
    """Shard the set with the shard builder (its manifest; no label, metadata kept): the index."""
    from ..config.schema import ShardsConfig
    from ..shards.build import ShardBuilder

    opts = ShardsConfig(short_side=None, samples_per_shard=50, workers=workers, labelled=False)
    return ShardBuilder(Path(data_dir) / MANIFEST, shard_dir, opts, log=lambda *a: None).run(progress=False)


__all__ = ["VIOLATIONS", "build_violation_shards", "compose", "violation_pair", "write_violation_set"]
