"""Curation in `vjepa shards build`: scene cuts, a motion filter, near-duplicate removal, clip length.

Curation looks at videos through :func:`analyse` (PyAV, one thread, deblocking skipped): every frame
is scaled to a tiny grey image (ANALYSIS_SIZE) and reduced on the fly to three numbers, so memory
stays a few bytes per frame:

- its presentation time;
- ``mafd``: the mean absolute difference to the previous frame, in grey levels (0-255);
- a 64-bit difference hash (dHash, 9x8 block means, one bit per horizontal gradient sign).

Two kinds of input are analysed this way, so curation costs as little as the filters allow:

1. scene cuts (``shards.scene_threshold``) need the source, before encoding (:func:`plan_pieces`):
   ffmpeg's scene score (``select='gt(scene,x)'``, the formula of libavfilter's ``scdet``:
   min(mafd, |mafd - previous mafd|) / 100, in [0, 1]) on the source's grey frames; a cut goes
   between the two frames, at the midpoint of their timestamps. Each clip is re-encoded on its own,
   so its first frame is an IDR keyframe: every cut lands on a keyframe of the output, and the fixed
   GOP (``shards.gop_seconds``) runs from there. This is one extra decode of the source: for 720p
   footage about what the re-encode itself costs; without scene cuts there is none;
2. each scene is split into pieces of at most ``shards.max_clip_seconds``; pieces shorter than
   ``shards.min_seconds`` (or two frames) are dropped as ``too_short``;
3. motion and hashes come from each *encoded* clip (:func:`score_clip`; a decode at the training
   resolution, a few per cent of the build), so they mean the same with or without scene cuts:
   motion (``shards.min_motion``) is the clip's mean ``mafd``, below the threshold the clip is
   dropped as ``static``; the dedup signature (``shards.dedup_distance``) holds the dHashes of
   SIGNATURE_FRAMES frames spread over the clip (see :mod:`.dedup`). Near-duplicates are decided
   over the whole build when the shards are packed, so the result is the same however the encode
   step was split.

Every dropped piece is recorded with its reason (never silently lost) and summarised, with
histograms of the motion and scene-length scores, in ``index.json["curation"]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .dedup import SIGNATURE_FRAMES, frame_dhash, signature_hex
from .media import EnvironmentalError, MediaError, VideoInfo, environmental

ANALYSIS_SIZE = (72, 48)  # width, height of the grey analysis frames (9x8 blocks of 8x6 px for the dHash)
CURATION_KEYS = ("scene_threshold", "min_motion", "dedup_distance")  # the shards.* keys that turn it on
# histogram bins: (upper bound, label); the motion score is in grey levels per frame
MOTION_BINS = ((0.25, "<0.25"), (0.5, "0.25-0.5"), (1.0, "0.5-1"), (2.0, "1-2"), (4.0, "2-4"), (8.0, "4-8"),
               (16.0, "8-16"), (math.inf, ">16"))
SCENE_BINS = ((1.0, "<1s"), (2.0, "1-2s"), (5.0, "2-5s"), (10.0, "5-10s"), (30.0, "10-30s"), (60.0, "30-60s"),
              (300.0, "1-5min"), (math.inf, ">5min"))
DROP_REASONS = ("too_short", "static", "near_duplicate")


def curation_active(opts) -> bool:
    """Any curation filter on (scene cuts, motion, dedup)."""
    return any(getattr(opts, key, None) is not None for key in CURATION_KEYS)


def curation_settings(opts) -> dict:
    """What index.json records as the curation settings."""
    return {"scene_threshold": opts.scene_threshold, "min_motion": opts.min_motion,
            "dedup_distance": opts.dedup_distance, "min_seconds": opts.min_seconds,
            "max_clip_seconds": opts.max_clip_seconds,
            "analysis": {"size": list(ANALYSIS_SIZE), "scene_score": "ffmpeg scdet formula on grey frames",
                         "motion": "mean |frame - previous| in grey levels (0-255)",
                         "hash": f"dHash 64 bit x {SIGNATURE_FRAMES} frames"}}


@dataclass
class Analysis:
    """Per-frame numbers of one video (see the module docstring); times relative to the file start."""

    times: np.ndarray  # float64 (N,), seconds
    mafd: np.ndarray  # float32 (N,), mafd[0] = 0
    hashes: np.ndarray  # uint64 (N,)

    def scene_scores(self) -> np.ndarray:
        """ffmpeg's scene score per frame (0 for the first): min(mafd, |mafd - prev mafd|) / 100."""
        prev = np.concatenate([[0.0], self.mafd[:-1]]).astype(np.float64)
        score = np.minimum(self.mafd, np.abs(self.mafd - prev)) / 100.0
        score[0] = 0.0
        return np.clip(score, 0.0, 1.0)


def analyse(path: str, info: VideoInfo, end: float | None = None) -> Analysis:
    """Decode ``path`` once (stopping after ``end`` seconds) into per-frame times, mafd and dHashes.
    A stream that fails to decode is a verdict about the input (MediaError), a failing machine is not."""
    import av

    w, h = ANALYSIS_SIZE
    times: list[float] = []
    mafd: list[float] = []
    hashes: list[int] = []
    prev = None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1  # parallelism comes from the worker processes
            # no deblocking (~25 % of an H.264 decode, invisible at 72x48), deterministic all the same
            stream.codec_context.options = {"skip_loop_filter": "all", "flags2": "+fast"}
            offset = container.start_time / 1e6 if container.start_time is not None else 0.0
            for frame in container.decode(stream):
                t = (len(times) / info.fps if info.timestamps_reset or frame.time is None
                     else frame.time - offset)
                if end is not None and t > end + 1.0 / info.fps:
                    break
                grey = frame.to_ndarray(width=w, height=h, format="gray", interpolation="AREA")
                grey = grey[:h, :w].astype(np.int16)  # rows may be padded to an aligned stride
                mafd.append(0.0 if prev is None else float(np.abs(grey - prev).mean()))
                hashes.append(frame_dhash(grey))
                times.append(t)
                prev = grey
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        env = environmental(exc, ours=False)
        if env is not None:
            raise env from None
        raise MediaError("curation decode failed", str(exc)[:160]) from None
    except MemoryError as exc:
        raise environmental(exc) or EnvironmentalError("out of memory") from None
    if not times:
        raise MediaError("no video frames", "curation decode found none")
    # frames come in display order, so mafd compares each frame with the one shown before it
    return Analysis(np.asarray(times, dtype=np.float64), np.asarray(mafd, dtype=np.float32),
                    np.asarray(hashes, dtype=np.uint64))


def scene_bounds(an: Analysis, a: float, b: float, threshold: float | None) -> list[tuple[float, float]]:
    """[a, b) cut at every scene change inside it (none when ``threshold`` is None)."""
    if threshold is None:
        return [(a, b)]
    scores = an.scene_scores()
    cuts = [float((an.times[i - 1] + an.times[i]) / 2) for i in np.flatnonzero(scores > threshold)]
    cuts = [c for c in cuts if a < c < b]
    edges = [a, *cuts, b]
    return list(zip(edges[:-1], edges[1:]))


def _pieces(a: float, b: float, max_clip: float | None) -> list[tuple[float, float]]:
    if max_clip is None or b - a <= max_clip:
        return [(a, b)]
    count = math.ceil((b - a) / max_clip - 1e-9)
    return [(a + i * max_clip, min(b, a + (i + 1) * max_clip)) for i in range(count)]


def _inside(an: Analysis, s: float, e: float) -> np.ndarray:
    """Indices of the frames whose timestamps fall in [s, e)."""
    return np.flatnonzero((an.times >= s - 1e-6) & (an.times < e - 1e-6))


def motion_score(an: Analysis, s: float, e: float) -> float:
    """Mean mafd over the consecutive frame pairs inside [s, e) (the first frame's diff looks outside)."""
    idx = _inside(an, s, e)
    if idx.size < 2:
        return 0.0
    return float(an.mafd[idx[1:]].mean())


def clip_signature(an: Analysis, s: float, e: float) -> str | None:
    idx = _inside(an, s, e)
    if idx.size == 0:
        return None
    picks = [idx[min(idx.size - 1, int((j + 0.5) * idx.size / SIGNATURE_FRAMES))] for j in range(SIGNATURE_FRAMES)]
    return signature_hex([int(an.hashes[i]) for i in picks])


def plan_pieces(an: Analysis | None, info: VideoInfo, opts, start: float | None, end: float | None) -> dict:
    """Cut one video into the pieces to encode: scenes (``an``, the source's analysis, needed only for
    scene cuts), each split at ``max_clip_seconds``; pieces under ``min_seconds`` (or two frames) are
    dropped. Returns {"pieces": [{start, end, scene, scene_seconds}], "dropped": [{start, end,
    reason}], "scenes": [scene lengths], "motion": []} (motion filled in as clips are scored)."""
    a = max(0.0, start or 0.0)
    b = min(info.duration, end) if end is not None else info.duration
    shortest = max(opts.min_seconds, 2.0 / info.fps)
    cut = an is not None and opts.scene_threshold is not None
    scenes = (scene_bounds(an, a, b, opts.scene_threshold) if cut else [(a, b)]) if b > a else []
    out: dict = {"pieces": [], "dropped": [], "scenes": [round(e - s, 3) for s, e in scenes], "motion": []}
    for k, (ss, se) in enumerate(scenes):
        for s, e in _pieces(ss, se, opts.max_clip_seconds):
            entry = {"start": round(s, 6), "end": round(e, 6)}
            if e - s < shortest:
                out["dropped"].append({**entry, "reason": "too_short"})
            else:
                out["pieces"].append({**entry, "scene": k, "scene_seconds": round(se - ss, 3)})
    return out


def score_clip(an: Analysis, opts) -> dict:
    """Motion score and dedup signature of one encoded clip (its whole analysis); ``static``: the
    motion filter drops it."""
    end = float(an.times[-1]) + 1.0
    motion = round(motion_score(an, float(an.times[0]), end), 4)
    return {"motion": motion, "static": opts.min_motion is not None and motion < opts.min_motion,
            "signature": clip_signature(an, float(an.times[0]), end) if opts.dedup_distance is not None else None}


def histogram(values, bins) -> dict[str, int]:
    hist = {label: 0 for _, label in bins}
    for v in values:
        hist[next(label for upper, label in bins if v < upper)] += 1
    return hist


def summarise(opts, unit_curation: list[tuple[str, dict]], duplicates: list[dict], kept: int) -> dict:
    """index.json["curation"]: settings, counts per filter, score histograms, every dropped clip.
    ``unit_curation``: (source rel path, a unit's plan_pieces record, scored) in plan order."""
    dropped = [{"source": rel, "clip_start": d["start"], "clip_end": d["end"], "reason": d["reason"],
                **({"motion": d["motion"]} if "motion" in d else {})}
               for rel, cur in unit_curation for d in cur["dropped"]]
    dropped += duplicates
    counts = {"videos_analysed": len(unit_curation),
              "scenes": sum(len(cur["scenes"]) for _, cur in unit_curation),
              "scene_cuts": sum(max(0, len(cur["scenes"]) - 1) for _, cur in unit_curation),
              "candidate_clips": kept + len(dropped), "kept": kept}
    counts.update({f"dropped_{reason}": sum(1 for d in dropped if d["reason"] == reason) for reason in DROP_REASONS})
    return {"settings": curation_settings(opts), "counts": counts,
            "histograms": {"motion": histogram((m for _, cur in unit_curation for m in cur["motion"]), MOTION_BINS),
                           "scene_seconds": histogram((s for _, cur in unit_curation for s in cur["scenes"]),
                                                      SCENE_BINS)},
            "dropped": dropped}


def ordered_histogram(key: str, hist: dict) -> dict:
    """A stored histogram in bin order (index.json is written with sorted keys)."""
    bins = {"motion": MOTION_BINS, "scene_seconds": SCENE_BINS}.get(key, ())
    order = [label for _, label in bins if label in hist]
    return {label: hist[label] for label in order + sorted(set(hist) - set(order))}


def render_curation(cur: dict) -> list[str]:
    """Text lines for `vjepa shards inspect` / the build summary."""
    c, s = cur.get("counts") or {}, cur.get("settings") or {}
    on = [f"{k}={s[k]}" for k in ("scene_threshold", "min_motion", "dedup_distance", "min_seconds",
                                  "max_clip_seconds") if s.get(k) is not None]
    lines = [f"curation: {', '.join(on) or 'no filters'}",
             f"  {c.get('videos_analysed', 0)} videos analysed, {c.get('scenes', 0)} scenes "
             f"({c.get('scene_cuts', 0)} cuts), {c.get('candidate_clips', 0)} candidate clips, {c.get('kept', 0)} kept"]
    lines += [f"  dropped {reason:<15} {c.get(f'dropped_{reason}', 0):>7}" for reason in DROP_REASONS]
    return lines


def write_histograms_png(path, cur: dict) -> None:
    """The motion and scene-length histograms of index.json["curation"] as one PNG (two bar charts
    side by side), written atomically; `vjepa shards inspect` puts it next to the contact sheet."""
    from PIL import Image, ImageDraw, ImageFont

    from ..utils.atomic import atomic_path

    hists = cur.get("histograms") or {}
    charts = [(title, ordered_histogram(key, hists[key]))
              for title, key in (("motion score (grey levels / frame)", "motion"), ("scene length", "scene_seconds"))
              if isinstance(hists.get(key), dict) and hists[key]]
    font = ImageFont.load_default()
    bar_w, gap, plot_h, pad, text_h = 44, 8, 160, 12, 14
    widths = [len(hist) * (bar_w + gap) + gap for _, hist in charts]
    image = Image.new("RGB", (sum(widths) + pad * (len(charts) + 1), plot_h + 4 * text_h + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    x0 = pad
    for (title, hist), width in zip(charts, widths):
        draw.text((x0, pad), title, fill=(0, 0, 0), font=font)
        top = max(hist.values()) or 1
        base = pad + 2 * text_h + plot_h
        for i, (label, count) in enumerate(hist.items()):
            x = x0 + gap + i * (bar_w + gap)
            height = round(count / top * plot_h)
            draw.rectangle([x, base - height, x + bar_w, base], fill=(70, 110, 180))
            draw.text((x, base - height - text_h), str(count), fill=(0, 0, 0), font=font)
            draw.text((x, base + 2), label, fill=(0, 0, 0), font=font)
        x0 += width + pad
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
