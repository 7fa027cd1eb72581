"""`vjepa shards inspect`: validate a shard folder, summarise it, draw a contact sheet.

Everything is checked in one sequential pass per shard: the tar is streamed once, its sha256 is
computed from the same bytes, and each sample (mp4 + json [+ cls]) is held in memory only while it
is being checked. Bad data never raises: every defect becomes one line in ``report.problems`` naming
the shard (and the sample key). Only a usage problem (no folder, no index) raises InspectError.

Checks:
- every shard listed in index.json exists with the recorded size and sha256; no unlisted ``*.tar``;
- each tar reads to the end; each sample has exactly ``.mp4`` + ``.json`` (+ ``.cls`` iff labelled),
  no stray members, no key twice (within or across shards); sample count per shard as indexed;
- metadata: required fields present and well-typed, json ``key`` = member key, ``.cls`` = ``label``,
  ``label`` / ``label_name`` agree with ``label_map``; the shard's ``.stats.json`` (if present) agrees;
- with ``decode=True`` every video decodes from memory to ``num_frames`` frames of ``width x height``,
  and the loader's decoder (decord unless told otherwise) reads its first, middle and last frame;
- totals recomputed from the shards equal ``index["totals"]`` (samples, frames, seconds to 1e-3).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from ..utils.atomic import atomic_path
from .curation import ordered_histogram, render_curation, write_histograms_png
from .decoders import DEFAULT_DECODER, DecodeError, DecoderUnavailable, get_decoder
from .format import (REQUIRED_FIELDS, SAMPLE_SUFFIXES, ShardFormatError, TarBroken, iter_groups, read_index,
                     read_npz, stats_name)

DURATION_BINS = ((1.0, "<1s"), (2.0, "1-2s"), (5.0, "2-5s"), (10.0, "5-10s"), (30.0, "10-30s"),
                 (60.0, "30-60s"), (math.inf, ">60s"))
UNLABELLED = "(unlabelled)"
SHEET_FRAMES = 6  # thumbnails per contact-sheet row
THUMB_HEIGHT = 96  # px
SHEET_PAD = 4  # px
MAX_PROBLEMS_SHOWN = 20
SECONDS_TOLERANCE = 1e-3


class InspectError(Exception):
    """A usage problem (no such folder, no index.json, not a shard index); one clear line."""


@dataclass
class InspectReport:
    ok: bool = True  # no problems found
    problems: list[str] = field(default_factory=list)  # each names the shard (and key) and the defect
    totals: dict = field(default_factory=dict)  # from the shards: samples, seconds, hours, frames, bytes
    duration_hist: dict[str, int] = field(default_factory=dict)  # DURATION_BINS label -> samples
    resolution_hist: dict[str, int] = field(default_factory=dict)  # "WxH" -> samples (most common first)
    label_hist: dict[str, int] = field(default_factory=dict)  # label name -> samples (label id order)
    sheet_path: Path | None = None  # the contact sheet, when one was written
    shard_dir: Path | None = None
    index_totals: dict = field(default_factory=dict)  # index["totals"] plus "bytes" summed over listed shards
    num_shards: int = 0  # shards listed in index.json
    decoded: bool = False  # whether every video was decoded
    curation: dict | None = None  # index.json["curation"] (settings, counts, histograms) when the build curated
    curation_png: Path | None = None  # its motion / scene-length histograms as a picture, when written

    def render(self) -> str:
        lines = [f"shards: {self.shard_dir} ({self.num_shards} listed"
                 + (", every video decoded)" if self.decoded else ", videos not decoded)")]
        lines.append(f"  {'':8} {'in shards':>14} {'index.json':>14}")
        for name in ("samples", "seconds", "hours", "frames", "bytes"):
            got, want = self.totals.get(name), self.index_totals.get(name)
            mark = "" if _close(name, got, want) else "   <- differs"
            lines.append(f"  {name:8} {_fmt(got):>14} {_fmt(want):>14}{mark}")
        extra = [f"{self.index_totals[k]} {k}" for k in ("videos", "skipped") if k in self.index_totals]
        if extra:
            lines.append("  index.json: " + ", ".join(extra).replace("videos", "source videos"))
        for title, hist in (("duration", self.duration_hist), ("resolution", self.resolution_hist),
                            ("labels", self.label_hist)):
            lines.append(f"{title}:")
            lines.extend(_bars(hist) or ["  (none)"])
        if isinstance(self.curation, dict):
            lines.extend(render_curation(self.curation))
            hists = self.curation.get("histograms") or {}
            for title, key in (("motion score (grey levels per frame), every scored clip", "motion"),
                               ("scene length", "scene_seconds")):
                if isinstance(hists.get(key), dict):
                    lines.append(f"{title}:")
                    lines.extend(_bars(ordered_histogram(key, hists[key])) or ["  (none)"])
        if self.problems:
            lines.append(f"problems ({len(self.problems)}):")
            lines.extend(f"  - {p}" for p in self.problems[:MAX_PROBLEMS_SHOWN])
            if len(self.problems) > MAX_PROBLEMS_SHOWN:
                lines.append(f"  ... and {len(self.problems) - MAX_PROBLEMS_SHOWN} more")
        else:
            lines.append("problems: none")
        if self.sheet_path is not None:
            lines.append(f"contact sheet: {self.sheet_path}")
        if self.curation_png is not None:
            lines.append(f"curation histograms: {self.curation_png}")
        lines.append("OK" if self.ok else f"FAILED: {len(self.problems)} problem(s)")
        return "\n".join(lines)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.3f}"
    return str(value)


def _close(name: str, got, want) -> bool:
    if want is None:
        return True
    if got is None:
        return False
    if name in ("seconds", "hours"):
        tol = SECONDS_TOLERANCE if name == "seconds" else 1e-4
        return _is_number(want) and abs(float(got) - float(want)) <= tol + 1e-9
    return got == want


def _bars(hist: dict[str, int], width: int = 40) -> list[str]:
    if not hist:
        return []
    top = max(hist.values()) or 1
    pad = max(len(k) for k in hist)
    return [f"  {k:<{pad}} {v:>7} {'#' * (max(1, round(v / top * width)) if v else 0)}".rstrip()
            for k, v in hist.items()]


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_count(x, minimum: int = 1) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= minimum


def duration_bin(seconds: float) -> str:
    for upper, label in DURATION_BINS:
        if seconds < upper:
            return label
    return DURATION_BINS[-1][1]


# ---- reading ---------------------------------------------------------------------------------
class _HashingReader:
    """File wrapper that hashes and counts every byte read (the tar reader streams through it)."""

    def __init__(self, fh):
        self.fh, self.sha, self.size = fh, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def _decode(data: bytes, want: list[int], full: bool) -> tuple[int, tuple[int, int] | None, list]:
    """Decode the first video stream of ``data`` in memory. Returns (frames decoded, (w, h) of the
    first frame, thumbnails (PIL, THUMB_HEIGHT high) of the frames at indices ``want``). With
    ``full=False`` stops after the last wanted frame."""
    import av

    wanted = set(want)
    last = max(want) if want else -1
    thumbs, count, size = [], 0, None
    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if size is None:
                size = (frame.width, frame.height)
            if count in wanted:
                tw = max(1, round(THUMB_HEIGHT * frame.width / max(frame.height, 1)))
                thumbs.append(frame.reformat(width=tw, height=THUMB_HEIGHT, format="rgb24").to_image())
            count += 1
            if not full and count > last:
                break
    return count, size, thumbs


def _sheet_indices(num_frames: int) -> list[int]:
    if num_frames <= SHEET_FRAMES:
        return list(range(num_frames))
    return sorted({round(j * (num_frames - 1) / (SHEET_FRAMES - 1)) for j in range(SHEET_FRAMES)})


# ---- the inspection --------------------------------------------------------------------------
class _Inspector:
    def __init__(self, shard_dir: Path, index: dict, decode: bool, picks: set[int], loader_decoder=None):
        self.dir, self.index, self.decode, self.picks = shard_dir, index, decode, picks
        self.loader_decoder = loader_decoder  # the backend the training loader will use, or None
        self.problems: list[str] = []
        self.seen_keys: dict[str, str] = {}
        self.ordinal = 0  # global sample position, in index order
        self.samples = 0
        self.seconds = 0.0
        self.frames = 0
        self.bytes = 0
        self.durations = {label: 0 for _, label in DURATION_BINS}
        self.resolutions: dict[str, int] = {}
        self.labels: dict[tuple, int] = {}
        self.rows: list[tuple[str, list]] = []  # contact sheet (caption, thumbnails)
        label_map = index.get("label_map")
        if label_map is None:
            label_map = {}
        if not isinstance(label_map, dict) or not all(
                isinstance(k, str) and _is_count(v, 0) for k, v in label_map.items()):
            self.problems.append("index.json: label_map is not a mapping of names to integer ids")
            label_map = None  # reported once; samples are not checked against it
        self.label_map: dict | None = label_map

    # one shard
    def shard(self, entry, listed: set[str]) -> None:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            self.problems.append(f"index.json: shard entry without a name: {str(entry)[:80]}")
            return
        name = entry["name"]
        if PurePosixPath(name).name != name or Path(name).name != name or name in ("", ".", ".."):
            self.problems.append(f"index.json: shard name {name!r} is not a plain file name")
            return
        if name in listed:
            self.problems.append(f"{name}: listed twice in index.json")
            return
        listed.add(name)
        path = self.dir / name
        if not path.is_file():
            self.problems.append(f"{name}: listed in index.json but missing")
            return
        keys: list[str] = []
        key_set: set[str] = set()
        complete = 0
        odd: list[str] = []
        try:
            fh = open(path, "rb")
        except OSError as exc:
            self.problems.append(f"{name}: cannot be opened ({exc.strerror or exc})")
            return
        with fh:
            reader = _HashingReader(fh)
            broken = None
            try:
                for group in iter_groups(reader, odd):
                    keys.append(group["key"])
                    self.sample(name, group, key_set)
                    key_set.add(group["key"])
                    complete += not group.get("truncated")
            except TarBroken as exc:
                broken = str(exc)
            reader.drain()
        if broken is not None:
            if keys:
                self.problems.append(f"{name}: unreadable tar, truncated or corrupt after {complete} "
                                     f"complete samples ({broken})")
            else:
                self.problems.append(f"{name}: not a readable tar ({broken})")
        for s in odd:
            self.problems.append(f"{name}: {s}")
        self.bytes += reader.size
        want_bytes, want_sha = entry.get("bytes"), entry.get("sha256")
        sha = reader.sha.hexdigest()
        if want_bytes != reader.size:
            sha_note = "" if want_sha == sha else " (and its sha256 differs)"
            self.problems.append(f"{name}: size {reader.size} bytes but index.json says "
                                 f"{want_bytes}{sha_note}")
        elif want_sha != sha:
            self.problems.append(f"{name}: sha256 {sha[:16]}... does not match index.json "
                                 f"({str(want_sha)[:16]}...)")
        if entry.get("samples") != len(keys):
            self.problems.append(f"{name}: holds {len(keys)} samples but index.json says "
                                 f"{entry.get('samples')}")
        self.check_stats(name, entry, keys if broken is None and entry.get("samples") == len(keys) else None)

    def check_stats(self, name: str, entry: dict, keys: list[str] | None) -> None:
        """The shard's ``.stats.json`` (when present) must agree with the index and, when the tar
        read whole (``keys`` not None), with its samples."""
        stats_path = self.dir / stats_name(name)
        if not stats_path.exists():
            return
        try:
            stats = json.loads(stats_path.read_text())
            assert isinstance(stats, dict)
        except (OSError, ValueError, AssertionError):
            self.problems.append(f"{stats_path.name}: not a readable JSON object")
            return
        if keys is not None and "keys" in stats and stats["keys"] != keys:
            self.problems.append(f"{stats_path.name}: its key list differs from the samples in {name}")
        for k in ("samples", "bytes", "sha256"):
            if k in stats and k in entry and stats[k] != entry[k]:
                self.problems.append(f"{stats_path.name}: {k} {stats[k]} disagrees with index.json "
                                     f"({entry[k]})")

    # one sample
    def sample(self, shard: str, group: dict, shard_keys: set[str]) -> None:
        key = group["key"]
        where = f"{shard}: {key}"
        ordinal = self.ordinal
        self.ordinal += 1
        self.samples += 1
        bad = self.problems.append
        if key in shard_keys:
            bad(f"{where}: key appears twice in the shard (members not consecutive)")
        elif key in self.seen_keys:
            bad(f"{where}: duplicate key (also in {self.seen_keys[key]})")
        else:
            self.seen_keys[key] = shard
        if group.get("truncated"):
            return  # the tar broke inside this sample; reported by the caller
        suffixes = group["suffixes"]
        for suffix in sorted(set(suffixes)):
            if suffix not in SAMPLE_SUFFIXES:
                bad(f"{where}: stray member {key}.{suffix}")
            elif suffixes.count(suffix) > 1:
                bad(f"{where}: .{suffix} member appears {suffixes.count(suffix)} times")
        for suffix in ("mp4", "json"):
            if suffix not in group:
                bad(f"{where}: missing .{suffix}")

        meta = self.check_meta(where, key, group)
        if meta is not None and ("trajectory" in meta or "npz" in group):
            for problem in trajectory_problems(meta, group.get("npz")):
                bad(f"{where}: {problem}")
        mp4 = group.get("mp4")
        if mp4 is not None and not mp4:
            bad(f"{where}: empty .mp4")
            mp4 = None
        picked = ordinal in self.picks and meta is not None
        if mp4 is None or not (self.decode or picked):
            return
        want = _sheet_indices(meta["num_frames"]) if picked else []
        try:
            count, size, thumbs = _decode(mp4, want, full=self.decode)
        except Exception as exc:  # PyAV raises many types on garbage; all mean "does not decode"
            bad(f"{where}: video does not decode ({type(exc).__name__}: {str(exc)[:120]})")
            return
        if self.decode and meta is not None:
            if count != meta["num_frames"]:
                bad(f"{where}: video decodes to {count} frames but .json num_frames is {meta['num_frames']}")
            if size is not None and size != (meta["width"], meta["height"]):
                bad(f"{where}: video is {size[0]}x{size[1]} but .json says {meta['width']}x{meta['height']}")
        elif self.decode and count == 0:
            bad(f"{where}: video has no decodable frames")
        if self.decode and self.loader_decoder is not None and count > 0:
            try:  # PyAV reading a file does not mean the loader's decoder does (decord and 48 px widths)
                self.loader_decoder.decode(mp4, [0, count // 2, count - 1], count)
            except DecodeError as exc:
                bad(f"{where}: the loader's decoder cannot read it ({str(exc)[:160]})")
        if picked and thumbs:
            label = meta["label_name"] if meta["label_name"] is not None else (
                UNLABELLED if meta["label"] is None else str(meta["label"]))
            w, h = size or (meta["width"], meta["height"])
            self.rows.append((f"{key}  {label}  {meta['duration']:.2f} s  {w}x{h}  [{shard}]", thumbs))

    def check_meta(self, where: str, key: str, group: dict) -> dict | None:
        """Validate .json and .cls; returns the metadata when usable for totals, else None."""
        bad = self.problems.append
        raw_cls = group.get("cls")
        cls = None
        if raw_cls is not None:
            try:
                cls = int(raw_cls.decode("ascii").strip())
            except (UnicodeDecodeError, ValueError):
                bad(f"{where}: .cls is not an integer ({raw_cls[:20]!r})")
        raw = group.get("json")
        if raw is None:
            return None
        try:
            meta = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            bad(f"{where}: .json is not valid JSON ({exc})")
            return None
        if not isinstance(meta, dict):
            bad(f"{where}: .json is not an object")
            return None
        missing = [f for f in REQUIRED_FIELDS if f not in meta]
        if missing:
            bad(f"{where}: .json lacks required fields: {', '.join(missing)}")
        if "key" in meta and meta["key"] != key:
            bad(f"{where}: .json key {meta['key']!r} does not match the member key")
        usable = not missing
        for f, ok, expect in (("num_frames", _is_count, "a positive integer"),
                              ("width", _is_count, "a positive integer"),
                              ("height", _is_count, "a positive integer"),
                              ("fps", lambda x: _is_number(x) and x > 0, "a positive number"),
                              ("duration", lambda x: _is_number(x) and x >= 0, "a non-negative number")):
            if f in meta and not ok(meta[f]):
                bad(f"{where}: .json {f}={meta[f]!r} is not {expect}")
                usable = False
        label, name = meta.get("label"), meta.get("label_name")
        if label is not None and not _is_count(label, 0):
            bad(f"{where}: .json label {label!r} is not a non-negative integer")
            usable = False
        elif name is not None and not isinstance(name, str):
            bad(f"{where}: .json label_name {name!r} is not a string")
            usable = False
        elif label is not None:
            if raw_cls is None:
                bad(f"{where}: missing .cls (.json label is {label})")
            elif cls is not None and cls != label:
                bad(f"{where}: .cls {cls} does not match .json label {label}")
            if self.label_map is None:
                pass
            elif name not in self.label_map:
                bad(f"{where}: label_name {name!r} is not in the index label_map")
            elif self.label_map[name] != label:
                bad(f"{where}: label {label} does not match label_map[{name!r}] = {self.label_map[name]}")
        elif "label" in meta and raw_cls is not None:
            bad(f"{where}: unexpected .cls for an unlabelled sample (.json label is null)")
        if not usable:
            return None
        self.seconds += meta["duration"]
        self.frames += meta["num_frames"]
        self.durations[duration_bin(meta["duration"])] += 1
        res = f"{meta['width']}x{meta['height']}"
        self.resolutions[res] = self.resolutions.get(res, 0) + 1
        lab = (UNLABELLED,) if label is None else (label, name if name is not None else str(label))
        self.labels[lab] = self.labels.get(lab, 0) + 1
        return meta

    def label_hist(self) -> dict[str, int]:
        order = sorted(self.labels, key=lambda k: (k[0] == UNLABELLED, k[0] if k[0] != UNLABELLED else 0))
        return {(k[1] if len(k) > 1 else k[0]): self.labels[k] for k in order}


def load_index(shard_dir: str | os.PathLike) -> tuple[Path, dict]:
    """Resolve the folder and read its index.json; raises InspectError on usage problems."""
    try:
        return read_index(shard_dir)
    except ShardFormatError as exc:
        raise InspectError(str(exc)) from None


def _pick_samples(index: dict, k: int) -> set[int]:
    """Global sample positions for the contact sheet: ``k`` spread evenly over all shards."""
    n = sum(e["samples"] for e in index["shards"] if isinstance(e, dict) and _is_count(e.get("samples"), 0))
    if k <= 0 or n <= 0:
        return set()
    if k >= n:
        return set(range(n))
    return {int((i + 0.5) * n / k) for i in range(k)}


def inspect_shards(shard_dir: str | os.PathLike, decode: bool = True,
                   sheet_path: str | os.PathLike | None = None, sheet_samples: int = 12,
                   decoder: str = DEFAULT_DECODER) -> InspectReport:
    """Validate the shard folder and return the report (see the module docstring for the checks).
    ``sheet_path`` set: write a contact sheet PNG of ``sheet_samples`` samples spread over the
    shards (one row each, SHEET_FRAMES frames evenly spaced in time). With ``decode``, every video
    is also read by ``decoder`` (the loader's ``data.decoder``) when it is installed."""
    d, index = load_index(shard_dir)
    picks = _pick_samples(index, sheet_samples) if sheet_path is not None else set()
    try:
        backend = get_decoder(decoder) if decode else None
    except DecoderUnavailable:
        backend = None
    insp = _Inspector(d, index, decode, picks, backend)
    listed: set[str] = set()
    for entry in index["shards"]:
        insp.shard(entry, listed)
    for p in sorted(d.glob("*.tar")):
        if p.name not in listed:
            insp.problems.append(f"{p.name}: not listed in index.json (stray shard)")

    seconds = round(insp.seconds, 3)
    totals = {"samples": insp.samples, "seconds": seconds, "hours": round(insp.seconds / 3600, 4),
              "frames": insp.frames, "bytes": insp.bytes}
    index_totals = dict(index.get("totals") or {}) if isinstance(index.get("totals"), dict) else {}
    index_totals["bytes"] = sum(e.get("bytes", 0) for e in index["shards"]
                                if isinstance(e, dict) and _is_count(e.get("bytes"), 0))
    if not isinstance(index.get("totals"), dict):
        insp.problems.append("index.json: no totals")
    else:
        for name in ("samples", "frames", "seconds"):
            if name not in index_totals:
                insp.problems.append(f"index.json: totals lack {name}")
            elif not _close(name, totals[name], index_totals[name]):
                insp.problems.append(f"totals: {name} {totals[name]} in the shards but index.json says "
                                     f"{index_totals[name]}")

    written = None
    if sheet_path is not None and insp.rows:
        written = Path(sheet_path).expanduser()
        try:
            write_contact_sheet(written, insp.rows)
        except OSError as exc:
            insp.problems.append(f"contact sheet: cannot write {written} ({exc.strerror or exc})")
            written = None
    curation, curation_png = index.get("curation"), None
    if curation is not None:
        counts = curation.get("counts") if isinstance(curation, dict) else None
        if not isinstance(counts, dict):
            insp.problems.append("index.json: curation without counts")
            curation = None
        elif counts.get("kept") != totals["samples"]:
            insp.problems.append(f"index.json: curation kept {counts.get('kept')} clips but the shards hold "
                                 f"{totals['samples']} samples")
    if curation is not None and sheet_path is not None:
        curation_png = Path(sheet_path).expanduser().with_name("curation_histograms.png")
        try:
            write_histograms_png(curation_png, curation)
        except OSError as exc:
            insp.problems.append(f"curation histograms: cannot write {curation_png} ({exc.strerror or exc})")
            curation_png = None
    res_hist = dict(sorted(insp.resolutions.items(), key=lambda kv: (-kv[1], kv[0])))
    return InspectReport(ok=not insp.problems, problems=insp.problems, totals=totals,
                         duration_hist=dict(insp.durations), resolution_hist=res_hist,
                         label_hist=insp.label_hist(), sheet_path=written, shard_dir=d,
                         index_totals=index_totals, num_shards=len(index["shards"]), decoded=decode,
                         curation=curation, curation_png=curation_png)


def write_contact_sheet(path: Path, rows: list[tuple[str, list]]) -> None:
    """One row per sample: a caption line, then its thumbnails side by side. Written atomically."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    top, bottom = measure.textbbox((0, 0), "Ag|", font=font)[1::2]
    cap_h = (bottom - min(top, 0)) + 2 * SHEET_PAD
    widths = []
    for caption, thumbs in rows:
        strip = sum(t.width for t in thumbs) + SHEET_PAD * (len(thumbs) - 1)
        widths.append(max(strip, math.ceil(measure.textlength(caption, font=font))))
    size = (max(widths) + 2 * SHEET_PAD, SHEET_PAD + len(rows) * (cap_h + THUMB_HEIGHT + SHEET_PAD))
    sheet = Image.new("RGB", size, (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    y = SHEET_PAD
    for caption, thumbs in rows:
        draw.text((SHEET_PAD, y + SHEET_PAD - min(top, 0)), caption, fill=(235, 235, 235), font=font)
        y += cap_h
        x = SHEET_PAD
        for t in thumbs:
            sheet.paste(t, (x, y))
            x += t.width + SHEET_PAD
        y += THUMB_HEIGHT + SHEET_PAD
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


__all__ = ["InspectError", "InspectReport", "duration_bin", "inspect_shards", "load_index",
           "write_contact_sheet"]


def trajectory_problems(meta: dict, npz: bytes | None) -> list[str]:
    """What is wrong with a trajectory sample's arrays: readable without pickles, finite, one state
    (and extrinsics) row per frame, one action row per frame but the last, dimensions as the .json says
    (actions: unless the rule is pose_delta, whose actions are recomputed by the loader)."""
    traj = meta.get("trajectory")
    if not isinstance(traj, dict):
        return ["a .npz member without .json trajectory metadata"]
    if npz is None:
        return ["trajectory sample without its .npz arrays"]
    try:
        arrays = read_npz(npz)
    except ValueError as exc:
        return [f".npz unreadable ({str(exc)[:120]})"]
    n, out = meta.get("num_frames"), []
    rows = {"states": n, "extrinsics": n, "actions": None if n is None else n - 1}
    for name, arr in arrays.items():
        if name not in rows:
            out.append(f".npz holds an unknown array {name!r}")
        elif arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
            out.append(f".npz {name} is not a 2-D float array ({arr.dtype}, shape {arr.shape})")
        elif not np.isfinite(arr).all():
            out.append(f".npz {name} holds non-finite values")
        elif rows[name] is not None and len(arr) != rows[name]:
            out.append(f".npz has {len(arr)} {name} rows for {n} frames (expected {rows[name]})")
    if "states" not in arrays:
        out.append(".npz has no states")
    dims = [("states", traj.get("state_dim")), ("extrinsics", traj.get("extrinsics_dim"))]
    if traj.get("action_rule") != "pose_delta":
        dims.append(("actions", traj.get("action_dim")))
    for name, dim in dims:
        if name in arrays and arrays[name].ndim == 2 and arrays[name].shape[1] != dim:
            out.append(f".npz {name} are {arrays[name].shape[1]}-D but the .json says {dim}")
    if traj.get("action_rule") != "pose_delta" and "actions" not in arrays:
        out.append(f".npz has no actions (action rule {traj.get('action_rule')!r} needs them)")
    return out
