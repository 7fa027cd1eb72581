"""`vjepa shards build`: raw footage -> validated, re-encoded clips -> equal-size tar shards.

Three resumable phases, all state under ``<out>/.work``:
1. plan: discover inputs, shuffle them with the seed, fingerprint the settings (``plan.json``);
2. encode: each input (a "unit") is probed, clipped and re-encoded into the staging folder, then
   a ``done/<uid>.json`` marker records its samples or its skip reason. Parallel across processes
   or SLURM array tasks (disjoint slices of units);
3. pack: samples in plan order are cut into shards of exactly N samples (the last may be short),
   each written atomically, then ``index.json``.
Killed at any moment, re-running the same command redoes only unfinished units and shards, and
the result is byte-identical to an uninterrupted build.

Only verdicts about an input (corrupt, too short, no video stream, ...) are recorded as skips.
An environmental failure (disk full, I/O error, quota, unwritable output, memory exhausted,
ffmpeg killed) records nothing: the build stops with one line (:class:`EnvironmentalFailure`)
and re-running the same command retries those videos.

The builder writes only into a folder that is new, empty, or a build of ours (our index.json,
or a staging folder carrying our marker file, :data:`WORK_MARKER`, written before anything else).
Anything else is refused untouched, and cleaning up removes only the files the build wrote.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

from ..utils.atomic import remove_stale_temporaries, write_json
from .curation import CURATION_KEYS, analyse, curation_active, plan_pieces, score_clip, summarise
from .dedup import find_duplicates, priority
from .format import (INDEX_FORMAT, INDEX_NAME, INDEX_VERSION, ShardFormatError, read_index, shard_name,
                     stats_name)
from .items import SourceList
from .media import (EncodeSettings, EnvironmentalError, MediaError, VideoInfo, encode_readable, environmental,
                    environmental_text, loader_problem, probe)
from .sources import discover
from .tario import ShardSample, write_shard
from .trajectories import detect_layout, discover_trajectories
from .trajectory_build import process_trajectory


class BuildError(Exception):
    """A build that cannot proceed; the message says what to do."""


class EnvironmentalFailure(BuildError):
    """Videos (or a shard) failed because of the machine, not the input: nothing was recorded for
    them, and re-running the same command retries them. ``failures``: {path, reason, detail}."""

    def __init__(self, message: str, failures: list[dict] | None = None):
        super().__init__(message)
        self.failures = failures or []


# The staging folder's proof of ownership: written first, removed last; without it (or, for
# staging folders started before it existed, without our plan.json) .work is not ours to touch.
WORK_MARKER = "vjepa-shards-build.json"
WORK_FORMAT = "vjepa-shards-work"
_PLAN_KEYS = {"fingerprint", "settings", "label_map", "skipped", "items"}
_DISK_FULL = ("No space left on device", "Disk quota exceeded", "File too large")


# ---- helpers ---------------------------------------------------------------------------------
def _read_json(path: Path):
    return json.loads(path.read_text())


def _write_json(path: Path, obj) -> None:
    write_json(path, obj, indent=1, sort_keys=True, ensure_ascii=False)


def settings_of(opts) -> EncodeSettings:
    return EncodeSettings(opts.short_side, opts.fps, opts.crf, opts.preset, opts.gop_seconds)


def build_fingerprint(source: Path, opts) -> tuple[str, dict]:
    """Settings that determine the output; anything else (workers, keep_work) may change on resume."""
    settings = {k: v for k, v in asdict(opts).items() if k not in ("workers", "keep_work")
                and not (k in CURATION_KEYS and v is None)}  # curation off: fingerprints of older builds hold
    settings["source"] = str(source)
    blob = json.dumps(settings, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16], settings


def clip_ranges(duration: float, fps: float, start: float | None, end: float | None, max_clip: float | None,
                min_seconds: float) -> list[tuple[float, float]]:
    """Source time ranges of the samples cut from one input. Pieces shorter than ``min_seconds``
    (and trailing slivers of under two frames) are dropped."""
    a = max(0.0, start or 0.0)
    b = min(duration, end) if end is not None else duration
    shortest = max(min_seconds, 2.0 / fps)
    if b - a < shortest:
        return []
    if max_clip is None:
        return [(a, b)]
    count = math.ceil((b - a) / max_clip - 1e-9)
    ranges = [(a + i * max_clip, min(b, a + (i + 1) * max_clip)) for i in range(count)]
    return [(s, e) for s, e in ranges if e - s >= shortest]


# ---- phase 2: one unit ---------------------------------------------------------------------
def process_unit(item: dict, work: str, opts_dict: dict) -> dict:
    """Probe, clip and encode one input into the staging folder; write its done marker.
    Runs in worker processes: takes and returns plain data."""
    from ..config.schema import ShardsConfig

    opts = ShardsConfig(**opts_dict)
    work_dir = Path(work)
    uid = item["uid"]
    unit_dir = work_dir / "units" / uid
    record: dict = {"uid": uid, "samples": [], "skipped": None, "seconds": 0.0}
    try:
        if (item.get("extra") or {}).get("trajectory"):
            record["samples"], record["seconds"] = process_trajectory(item, unit_dir, work_dir, opts,
                                                                      settings_of(opts), sample_meta)
            return _record_done(work_dir, record, item, unit_dir)
        info = probe(item["path"])
        curated = None
        if curation_active(opts):  # shards/curation.py
            if not clip_ranges(info.duration, info.fps, item.get("start"), item.get("end"), None, opts.min_seconds):
                raise MediaError("too short", f"{info.duration:.2f} s (min_seconds {opts.min_seconds})")
            # the source is decoded for scene cuts only; motion and hashes come from each encoded clip
            source = analyse(item["path"], info, item.get("end")) if opts.scene_threshold is not None else None
            curated = plan_pieces(source, info, opts, item.get("start"), item.get("end"))
            ranges = [(c["start"], c["end"]) for c in curated["pieces"]]  # none left: every piece is in "dropped"
            record["curation"] = curated
        else:
            ranges = clip_ranges(info.duration, info.fps, item.get("start"), item.get("end"),
                                 opts.max_clip_seconds, opts.min_seconds)
            if not ranges:
                raise MediaError("too short", f"{info.duration:.2f} s (min_seconds {opts.min_seconds})")
        unit_dir.mkdir(parents=True, exist_ok=True)
        settings = settings_of(opts)
        for i, (s, e) in enumerate(ranges):
            key = f"{uid}_{i:04d}"
            dst = unit_dir / f"{key}.mp4"
            tmp = unit_dir / f".{key}.tmp.mp4"
            whole = s <= 0 and e >= info.duration
            fallback = None
            if not opts.reencode:
                shutil.copyfile(item["path"], tmp)
                out = info
                # a source the loader's decoder cannot read is re-encoded rather than shipped broken
                fallback = loader_problem(tmp, info.num_frames)
            if opts.reencode or fallback:
                out = encode_readable(item["path"], tmp, info, settings, None if whole else s, None if whole else e)
                check_frames(info, out, s, e)
            if curated is not None:
                score = score_clip(analyse(str(tmp), out), opts)
                curated["motion"].append(score["motion"])
                if score["static"]:  # encoded, then dropped: cheaper than decoding every source once more
                    tmp.unlink()
                    curated["dropped"].append({"start": round(s, 6), "end": round(e, 6), "reason": "static",
                                               "motion": score["motion"]})
                    continue
            os.replace(tmp, dst)
            meta = sample_meta(item, info, out, opts, s, e, key, encoded=opts.reencode or bool(fallback))
            if curated is not None:
                piece = curated["pieces"][i]
                meta["curation"] = {"scene": piece["scene"], "scene_seconds": piece["scene_seconds"],
                                    "motion": score["motion"], "signature": score["signature"]}
            if fallback:
                meta["passthrough_fallback"] = fallback
            record["samples"].append({"key": key, "file": str(dst.relative_to(work_dir)), "label": item["label"],
                                      "meta": meta})
            record["seconds"] += out.duration
    except MediaError as exc:  # a verdict about the input: recorded, never retried
        shutil.rmtree(unit_dir, ignore_errors=True)
        record = {"uid": uid, "samples": [], "seconds": 0.0,
                  "skipped": {"path": item["rel"], "reason": exc.reason, "detail": exc.detail}}
    except (EnvironmentalError, OSError, MemoryError) as exc:
        # probe() turns the input's own problems into MediaError, so what is left is the machine:
        # our writes failing (ENOSPC, EIO, EDQUOT, EROFS, EACCES on our output), ffmpeg killed, ...
        return _failed(item, unit_dir, exc)
    return _record_done(work_dir, record, item, unit_dir)


def _record_done(work_dir: Path, record: dict, item: dict, unit_dir: Path) -> dict:
    try:
        _write_json(work_dir / "done" / f"{record['uid']}.json", record)
    except OSError as exc:
        return _failed(item, unit_dir, exc)
    return record


def _failed(item: dict, unit_dir: Path, exc: BaseException) -> dict:
    """An environmental failure of one unit: its partial outputs are removed (they may be what
    filled the disk) and nothing is recorded, so the next run retries it."""
    shutil.rmtree(unit_dir, ignore_errors=True)
    env = environmental(exc) or EnvironmentalError(exc.strerror if isinstance(exc, OSError) and exc.strerror
                                                   else type(exc).__name__, str(exc)[:160])
    return {"uid": item["uid"], "samples": [], "seconds": 0.0, "skipped": None,
            "failed": {"path": item["rel"], "reason": env.reason, "detail": env.detail}}


def _poisoned(record: dict) -> bool:
    """A skip that an older version recorded for an environmental failure (e.g. 'ffmpeg failed:
    No space left on device'): not a verdict about the video, so it is redone."""
    skipped = record.get("skipped")
    text = f"{skipped.get('reason', '')} {skipped.get('detail', '')}" if skipped else ""
    return environmental_text(text) is not None


def environmental_message(failures: list[dict], not_started: int = 0) -> str:
    """The one line an environmental failure of the encode step ends with."""
    counts: dict[str, int] = {}
    for f in failures:
        counts[f["reason"]] = counts.get(f["reason"], 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    reasons = ", ".join(r if n == 1 else f"{r} x{n}" for r, n in ranked)
    n = len(failures)
    rest = f", {not_started} more not started" if not_started else ""
    fix = "free space" if any(r in _DISK_FULL for r in counts) else "fix the cause"
    return (f"{n} video{'s' if n != 1 else ''} failed for environmental reasons ({reasons}; e.g. "
            f"{failures[0]['path']}){rest}; nothing was recorded for them: {fix} and re-run the same "
            f"command to retry them")


FRAME_TOLERANCE = 0.1  # an encoded clip may miss this share of its expected frames (rounding at cuts)


def expected_frames(src: VideoInfo, out_fps: float, start: float, end: float) -> float:
    """Frames a clip of [start, end) should hold at ``out_fps``, from the source's counted frames."""
    share = min(1.0, max(0.0, end - start) / src.duration) if src.duration > 0 else 1.0
    return src.num_frames * share * out_fps / src.fps


def check_frames(src: VideoInfo, out: VideoInfo, start: float, end: float) -> None:
    """Compare an encoded clip's frame count with what the source holds for that range; a clip that
    lost frames (timestamps that reset mid-file, a broken cut) is a verdict about the input."""
    expected = expected_frames(src, out.fps, start, min(end, src.duration))
    if out.num_frames < (1 - FRAME_TOLERANCE) * expected - 2:
        raise MediaError("frames lost in re-encode",
                         f"{out.num_frames} of ~{expected:.0f} frames for {start:.2f}-{end:.2f} s "
                         "(timestamps that jump or reset?)")


def sample_meta(item: dict, src: VideoInfo, out: VideoInfo, opts, start: float, end: float, key: str,
                encoded: bool = True) -> dict:
    gop = max(1, round(out.fps * opts.gop_seconds)) if encoded else None
    return {
        "key": key, "source": item["rel"], "clip_start": round(start, 6), "clip_end": round(end, 6),
        "fps": out.fps, "num_frames": out.num_frames, "width": out.width, "height": out.height,
        "duration": out.duration, "label": item["label"], "label_name": item["label_name"],
        "keyframe_interval": gop,
        "encoder": settings_of(opts).to_dict() if encoded else "passthrough",
        "frames_expected": round(expected_frames(src, out.fps, start, min(end, src.duration)), 1),
        "decoder_errors": out.decoder_errors,
        "source_video": {"width": src.width, "height": src.height, "fps": src.fps, "codec": src.codec,
                         "num_frames": src.num_frames, "duration": src.duration, "rotation": src.rotation,
                         "sar": round(src.sar, 6), "interlaced": src.interlaced,
                         "variable_rate": src.variable_rate, "timestamps_reset": src.timestamps_reset},
        "extra": item.get("extra") or {},
    }


# ---- the build -------------------------------------------------------------------------------
class ShardBuilder:
    def __init__(self, source: str | os.PathLike, out_dir: str | os.PathLike, opts, log=print):
        self.source = Path(source).expanduser().resolve()
        self.out = Path(out_dir).expanduser().resolve()
        self.work = self.out / ".work"
        self.opts = opts
        self.log = log
        self.fingerprint, self.settings = build_fingerprint(self.source, opts)

    # ownership of the output folder
    def _marked(self) -> bool:
        """The staging folder carries our marker."""
        try:
            marker = _read_json(self.work / WORK_MARKER)
        except (OSError, ValueError):
            return False
        return isinstance(marker, dict) and marker.get("format") == WORK_FORMAT

    def _work_is_ours(self) -> bool:
        """Ours: our marker, or (a build started before the marker existed) our plan.json."""
        if not self.work.is_dir():
            return False
        if self._marked():
            return True
        try:
            plan = _read_json(self.work / "plan.json")
        except (OSError, ValueError):
            return False
        return isinstance(plan, dict) and _PLAN_KEYS <= plan.keys()

    def _write_marker(self) -> None:
        _write_json(self.work / WORK_MARKER, {
            "format": WORK_FORMAT, "version": 1, "fingerprint": self.fingerprint,
            "note": "staging folder of `vjepa shards build`; removed when the build completes "
                    "(files it did not write are kept)"})

    def _check_work(self) -> None:
        """Refuse (touching nothing) a staging folder that this tool did not create."""
        if (self.work.exists() or self.work.is_symlink()) and not self._work_is_ours():
            raise BuildError(f"{self.work} was not created by `vjepa shards build`; refusing to touch "
                             f"{self.out} (nothing was changed): use a new or empty output folder")

    def _existing_index(self) -> dict | None:
        """The index.json of a complete build of ours with these settings; None when there is none.
        A foreign index, or ours with other settings, is refused."""
        if not (self.out / INDEX_NAME).exists():
            return None
        try:
            index = read_index(self.out)[1]
        except ShardFormatError as exc:
            raise BuildError(f"{exc}; refusing to write into {self.out} (nothing was changed): "
                             "use another output folder") from None
        if index.get("fingerprint") != self.fingerprint:
            raise BuildError(f"{self.out} already holds shards built with other settings; "
                             "use another output folder")
        return index

    def _claim(self) -> None:
        """Make the output folder ours before anything is written: it must be new, empty, a build
        of ours; then the staging folder gets our marker (also the test that we can write)."""
        self._check_claim()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.work.mkdir(exist_ok=True)
            if not self._marked():
                self._write_marker()
        except OSError as exc:
            raise BuildError(f"output folder {self.out} is not writable ({exc.strerror})") from None

    def _check_claim(self) -> None:
        """Refuse an output folder that is not new, empty or ours; writes nothing."""
        self._check_work()
        if not self.work.exists():
            self._existing_index()  # a foreign index.json or other settings: refused
            if self.out.is_dir() and not (self.out / INDEX_NAME).exists():
                entries = sorted(p.name for p in self.out.iterdir())
                if entries:
                    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
                    raise BuildError(f"output folder {self.out} is not empty and holds no build of ours "
                                     f"({shown}); refusing to write into it (nothing was changed): use a new "
                                     "or empty folder")

    # phase 1
    def plan(self) -> dict:
        self._check_work()
        path = self.work / "plan.json"
        if path.exists():
            plan = _read_json(path)
            if plan["fingerprint"] != self.fingerprint:
                raise BuildError(f"{self.out} holds an unfinished build with different settings; "
                                 "re-run with the original settings, or use another output folder")
            if not self._marked():  # started before the marker existed
                self._claim()
            return plan
        if not self.source.exists():
            raise BuildError(f"source {self.source} does not exist")
        self._check_claim()  # a folder we may not use is refused before a long discovery ...
        found: SourceList = self._discover()
        self._claim()  # ... and a source without videos leaves no output folder behind
        plan = {"fingerprint": self.fingerprint, "settings": self.settings, "label_map": found.label_map,
                "skipped": found.skipped, "ignored": found.ignored, "items": [asdict(i) for i in found.items]}
        with _environment_guard("writing the build plan"):
            _write_json(path, plan)
        return plan

    def _discover(self) -> SourceList:
        """Videos, or trajectories (``shards.layout``; auto: a DROID episode or a folder with actions /
        states makes the source a trajectory source)."""
        o = self.opts
        layout = o.layout if o.layout != "auto" else detect_layout(str(self.source))
        if layout == "videos":
            return discover(self.source, labels=o.labels, seed=o.seed, labelled=o.labelled)
        if not o.reencode:
            raise BuildError(f"{self.source} holds trajectories, which are always re-encoded (frame-exact cuts "
                             "keep actions aligned with frames): drop --no-reencode / shards.reencode=false")
        if o.fps is not None:
            raise BuildError(f"{self.source} holds trajectories: their shards keep every recorded frame (the "
                             "loader samples them at data.target_fps and combines the actions in between): "
                             "unset shards.fps")
        if o.labels is not None or o.labelled:
            raise BuildError("trajectory shards are unlabelled: drop shards.labels / shards.labelled")
        if curation_active(o):
            raise BuildError(f"{self.source} holds trajectories: curation (scene_threshold, min_motion, dedup_distance) "
                             "applies to video sources only; unset those shards.* keys")
        return discover_trajectories(str(self.source), o)

    def done_records(self, plan: dict) -> dict[str, dict]:
        done = {}
        for item in plan["items"]:
            marker = self.work / "done" / f"{item['uid']}.json"
            if marker.exists():
                record = _read_json(marker)
                if not _poisoned(record):
                    done[item["uid"]] = record
        return done

    # phase 2
    def encode(self, plan: dict, task_index: int = 0, num_tasks: int = 1, progress: bool = True) -> None:
        items = [it for i, it in enumerate(plan["items"]) if i % num_tasks == task_index]
        done = self.done_records(plan)
        todo = [it for it in items if it["uid"] not in done]
        if len(todo) < len(items):
            self.log(f"resuming: {len(items) - len(todo)} of {len(items)} videos already processed")
        if not todo:
            return
        bar = _progress(len(todo), progress)
        stats = {"seconds": 0.0, "skipped": 0, "t0": time.perf_counter()}
        failures: list[dict] = []  # environmental: nothing recorded, retried by the next run
        finished = 0

        def account(rec: dict) -> None:
            nonlocal finished
            finished += 1
            if rec.get("failed"):
                failures.append(rec["failed"])
                bar.set_postfix(failed=len(failures), refresh=False)
                bar.update(1)
                return
            stats["seconds"] += rec["seconds"]
            stats["skipped"] += rec["skipped"] is not None
            hours_per_s = stats["seconds"] / 3600 / max(time.perf_counter() - stats["t0"], 1e-6)
            bar.set_postfix(footage_h_per_s=f"{hours_per_s:.3f}", skipped=stats["skipped"], refresh=False)
            bar.update(1)

        # The first environmental failure stops the build: on a full disk every further video
        # would fail too. Units already running finish (and are recorded when they succeed).
        opts = asdict(self.opts)
        if self.opts.workers <= 1:
            for it in todo:
                account(process_unit(it, str(self.work), opts))
                if failures:
                    break
        else:
            with ProcessPoolExecutor(self.opts.workers, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(process_unit, it, str(self.work), opts): it for it in todo}
                for fut in as_completed(futures):
                    if fut.cancelled():
                        continue
                    try:
                        account(fut.result())
                    except BrokenProcessPool:  # a worker was killed (OOM killer, ...)
                        account({"failed": {"path": futures[fut]["rel"], "reason": "encoder process killed",
                                            "detail": "worker process died"}})
                    if failures:
                        for other in futures:
                            other.cancel()
        bar.close()
        if failures:
            raise EnvironmentalFailure(environmental_message(failures, len(todo) - finished), failures)

    # phase 3
    def pack(self, plan: dict) -> dict:
        done = self.done_records(plan)
        missing = [it["rel"] for it in plan["items"] if it["uid"] not in done]
        if missing:
            raise BuildError(f"{len(missing)} videos are not processed yet (e.g. {missing[0]}); "
                             "run the encode step for every task first")
        samples = [s for it in plan["items"] for s in done[it["uid"]]["samples"]]
        curation = None
        if curation_active(self.opts):
            samples, curation = self._curate(plan, done, samples)
        if not samples:
            if curation is not None and curation["dropped"]:
                raise BuildError(f"no usable clips: curation dropped all {len(curation['dropped'])} clips "
                                 "(loosen shards.min_motion / min_seconds / dedup_distance)")
            raise BuildError("no usable videos: every input was skipped (see the reasons above)")
        kept_keys = {s["key"] for s in samples}
        layout = self._layout(samples)
        shards = []
        for i, keys in enumerate(layout["shards"]):
            name = shard_name(self.opts.prefix, i)
            stats_path = self.out / stats_name(name)
            for written in (name, stats_name(name)):  # a build killed mid-write left its temporary file
                remove_stale_temporaries(self.out, written)
            members = [samples[k] for k in keys]
            if not (self.out / name).exists() or not stats_path.exists():
                with _environment_guard(f"writing {name}"):
                    write_shard(self.out / name, (ShardSample(s["key"], str(self.work / s["file"]), s["meta"],
                                                              s["label"], _staged(self.work, s.get("npz")))
                                                  for s in members))
                    _write_json(stats_path, shard_stats(name, members, self.out / name))
            shards.append(_read_json(stats_path))
        skipped = plan["skipped"] + [r["skipped"] for r in (done[it["uid"]] for it in plan["items"]) if r["skipped"]]
        index = {
            "format": INDEX_FORMAT, "version": INDEX_VERSION, "fingerprint": self.fingerprint,
            "shards": [{k: s[k] for k in ("name", "samples", "bytes", "sha256")} for s in shards],
            "samples_per_shard": layout["samples_per_shard"],
            "totals": totals(samples, len(plan["items"]) + len(plan["skipped"]), len(skipped),
                             sum(1 for it in plan["items"]
                                 if any(s["key"] in kept_keys for s in done[it["uid"]]["samples"]))),
            "label_map": plan["label_map"], "build_config": plan["settings"], "skipped": skipped,
            "ignored": plan.get("ignored", []),
        }
        if curation is not None:
            index["curation"] = curation
        trajectories = trajectory_summary(samples)
        if trajectories is not None:
            index["trajectories"] = trajectories
        remove_stale_temporaries(self.out, INDEX_NAME)
        with _environment_guard(f"writing {INDEX_NAME}"):
            _write_json(self.out / INDEX_NAME, index)
        return index

    def _curate(self, plan: dict, done: dict, samples: list[dict]) -> tuple[list[dict], dict]:
        """Near-duplicates are decided here, over every unit's done record, so the result does not
        depend on how the encode step was split (array tasks, workers); then the curation summary."""
        duplicates: list[dict] = []
        if self.opts.dedup_distance is not None:
            clips = [{"key": s["key"], "signature": (s["meta"].get("curation") or {}).get("signature"),
                      "duration": s["meta"]["duration"], "priority": priority(s["meta"])} for s in samples]
            copy_of = find_duplicates(clips, self.opts.dedup_distance)
            by_key = {s["key"]: s["meta"] for s in samples}
            duplicates = [{"source": m["source"], "clip_start": m["clip_start"], "clip_end": m["clip_end"],
                           "reason": "near_duplicate", "key": key,
                           "duplicate_of": {"key": copy_of[key], "source": by_key[copy_of[key]]["source"]}}
                          for key, m in by_key.items() if key in copy_of]
            samples = [s for s in samples if s["key"] not in copy_of]
        units = [(it["rel"], done[it["uid"]]["curation"]) for it in plan["items"] if "curation" in done[it["uid"]]]
        return samples, summarise(self.opts, units, duplicates, len(samples))

    def _layout(self, samples: list[dict]) -> dict:
        """Which samples go to which shard, fixed on first use so a resumed pack agrees."""
        path = self.work / "layout.json"
        if path.exists():
            return _read_json(path)
        n = self.opts.samples_per_shard
        if n is None:
            mean = sum(tar_bytes(self.work / s["file"], s) for s in samples) / len(samples)
            n = max(1, round(self.opts.target_shard_mb * 2**20 / mean))
        layout = {"samples_per_shard": n,
                  "shards": [list(range(i, min(i + n, len(samples)))) for i in range(0, len(samples), n)]}
        with _environment_guard("writing the shard layout"):
            _write_json(path, layout)
        return layout

    def finish(self) -> None:
        """Remove the staging folder: only the files this build wrote, and only when the folder
        carries our marker. Anything else found in it is kept (and said so)."""
        if self.opts.keep_work or not self.work.is_dir() or not self._marked():
            return
        try:
            uids = [it["uid"] for it in _read_json(self.work / "plan.json")["items"]]
        except (OSError, ValueError, KeyError, TypeError):
            uids = []
        for uid in uids:
            shutil.rmtree(self.work / "units" / uid, ignore_errors=True)
            _remove_written(self.work / "done", f"{uid}.json")
        shutil.rmtree(self.work / "submitit", ignore_errors=True)  # local job-array files (launch.submit)
        # plan.json last: a folder with our index.json and no plan.json is complete (see run)
        for name in ("layout.json", "plan.json"):
            _remove_written(self.work, name)
        for sub in ("units", "done"):
            _rmdir_if_empty(self.work / sub)
        leftovers = sorted(p.name for p in self.work.iterdir() if p.name != WORK_MARKER)
        if leftovers:
            shown = ", ".join(leftovers[:5])
            self.log(f"kept {self.work}: it holds files this build did not write ({shown})")
            return
        _remove_written(self.work, WORK_MARKER)
        _rmdir_if_empty(self.work)

    def run(self, progress: bool = True) -> dict:
        self._check_work()
        index = self._existing_index()  # a foreign index.json, or ours with other settings: refused
        if index is not None and not (self.work / "plan.json").exists():  # complete (and cleaned up)
            self.finish()  # a staging folder kept for files we did not write: nothing to redo
            self.log(f"{self.out} is already complete ({index['totals']['samples']} samples); nothing to do")
            return index
        plan = self.plan()
        episodes = any((it.get("extra") or {}).get("trajectory") for it in plan["items"])
        self.log(f"{len(plan['items'])} {'episodes' if episodes else 'videos'} to shard ({len(plan['skipped'])} "
                 f"rejected at discovery), {'trajectories' if episodes else str(len(plan['label_map'])) + ' labels'}"
                 f" -> {self.out}")
        self.encode(plan, progress=progress)
        index = self.pack(plan)
        self.finish()
        return index


@contextmanager
def _environment_guard(what: str):
    """Our own writes failing for environmental reasons become one line (EnvironmentalFailure);
    every write is atomic, so nothing half-written is left to resume from."""
    try:
        yield
    except (OSError, MemoryError) as exc:
        env = environmental(exc)
        if env is None:
            raise
        fix = "free space" if env.reason in _DISK_FULL else "fix the cause"
        raise EnvironmentalFailure(f"{what} failed for environmental reasons ({env.reason}); "
                                   f"{fix} and re-run the same command to finish the build") from None


def _remove_written(folder: Path, name: str) -> None:
    """Remove ``name`` and the temporary files an interrupted atomic write of it left behind."""
    (folder / name).unlink(missing_ok=True)
    remove_stale_temporaries(folder, name)


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:  # not empty (files we did not write), or already gone
        pass


def tar_bytes(video: Path, sample: dict) -> int:
    """Bytes one sample occupies in a tar: 512-byte header per member, data padded to 512."""
    def block(n: int) -> int:
        return 512 + -(-n // 512) * 512

    meta = len(json.dumps(sample["meta"], sort_keys=True, ensure_ascii=False).encode())
    npz = block((video.parent / Path(sample["npz"]).name).stat().st_size) if sample.get("npz") else 0
    return block(video.stat().st_size) + block(meta) + (block(8) if sample["label"] is not None else 0) + npz


def _staged(work: Path, rel: str | None) -> str | None:
    return None if rel is None else str(work / rel)


def trajectory_summary(samples: list[dict]) -> dict | None:
    """What the loader checks a trajectory dataset against (None for video shards): the dimensions,
    the action rules and the frames held."""
    metas = [s["meta"]["trajectory"] for s in samples if "trajectory" in s["meta"]]
    if not metas:
        return None
    def values(key):
        return sorted({m[key] for m in metas if m.get(key) is not None})
    return {"episodes_samples": len(metas), "action_dim": values("action_dim"), "state_dim": values("state_dim"),
            "extrinsics_dim": values("extrinsics_dim"), "action_rule": values("action_rule"),
            "layout": values("layout"), "frames": sum(m["frames"] for m in metas),
            "with_extrinsics": sum(1 for m in metas if m.get("extrinsics_dim") is not None),
            # what the build did to samples that did not fit exactly (see shards/trajectories.py)
            "trimmed": sum(1 for m in metas if m.get("trimmed")),
            "extrinsics_dropped": sum(1 for m in metas if m.get("extrinsics_dropped")),
            "states_recorded": sum(1 for m in metas if m.get("states_recorded", True)),
            "fps_from_episode": sum(1 for m in metas if m.get("fps_source") == "episode")}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shard_stats(name: str, members: list[dict], path: Path) -> dict:
    labels: dict[str, int] = {}
    for s in members:
        if s["label"] is not None:
            labels[str(s["label"])] = labels.get(str(s["label"]), 0) + 1
    return {"name": name, "samples": len(members), "bytes": path.stat().st_size, "sha256": file_sha256(path), "seconds": round(sum(s["meta"]["duration"] for s in members), 3),
            "frames": sum(s["meta"]["num_frames"] for s in members), "labels": labels,
            "keys": [s["key"] for s in members]}


def totals(samples: list[dict], videos: int, skipped: int, sharded: int) -> dict:
    """``videos``: every input considered (rejected at discovery included); ``sharded``: those that
    gave at least one sample; ``skipped``: entries of the skip list."""
    seconds = sum(s["meta"]["duration"] for s in samples)
    return {"samples": len(samples), "videos": videos, "sharded": sharded, "skipped": skipped,
            "seconds": round(seconds, 3),
            "hours": round(seconds / 3600, 4), "frames": sum(s["meta"]["num_frames"] for s in samples)}


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="video", desc="encoding", disable=not enabled, dynamic_ncols=True)
