"""The training stream: rank/worker coverage, reproducibility, exact resume, failure accounting,
file lists and deterministic eval views."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from vjepa_pipeline.config import load_config
from vjepa_pipeline.config.schema import ShardsConfig
from vjepa_pipeline.data.eval_stream import EvalVideos
from vjepa_pipeline.data.loader import StreamState, build_train_stream, make_dataloader
from vjepa_pipeline.data.sources import LoaderError, expand_urls, shuffle_buffer
from vjepa_pipeline.shards.build import ShardBuilder

DATA = ["data.source=shards", "data.num_frames=8", "data.frame_step=2", "data.crop_size=32", "data.batch_size=4",
        "data.num_clips=2", "data.shuffle_buffer=3", "data.batches_per_epoch=6", "data.num_workers=2"]


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, generated_clips) -> Path:
    out = tmp_path_factory.mktemp("loader_shards")
    ShardBuilder(generated_clips, out, ShardsConfig(short_side=64, samples_per_shard=1),
                 log=lambda *a: None).run(progress=False)
    return out


def data_cfg(shard_dir, *extra):
    return load_config(None, [*DATA, f"data.path={shard_dir}", *extra]).data


def run_epoch(cfg, rank=0, world=1, step=0, resume=None, workers=None):
    stream = build_train_stream(cfg, rank, world)
    stream.set_position(step, resume)
    loader = make_dataloader(stream) if workers is None else DataLoader(stream, batch_size=None, num_workers=workers)
    return list(loader)


def test_batches_have_the_configured_shape_and_labels(shard_dir):
    batches = run_epoch(data_cfg(shard_dir))
    assert len(batches) == 6
    b = batches[0]
    assert b.clips.shape == (4, 8, 32, 32, 3) and b.clips.dtype == torch.uint8
    assert len(b.keys) == 2  # 4 clips = 2 videos x 2 clips each
    assert set(b.labels.tolist()) <= {0, 1}
    assert [x.stream.step for x in batches] == list(range(6))
    assert [x.stream.role for x in batches] == [0, 1] * 3


def test_two_ranks_two_workers_cover_disjoint_shards_with_equal_batch_counts(shard_dir):
    cfg = data_cfg(shard_dir)
    per_rank = [run_epoch(cfg, rank=r, world=2) for r in range(2)]
    assert [len(b) for b in per_rank] == [6, 6]
    keys = [Counter(k for b in batches for k in b.keys) for batches in per_rank]
    assert not set(keys[0]) & set(keys[1])  # explicit node split: no video on both ranks
    # Each (rank, role) owns shards of its own; repeats only come from resampling its own subset.
    urls, _ = expand_urls(shard_dir)
    assert len(set(keys[0]) | set(keys[1])) == len(urls)


def test_reproducible_for_a_fixed_seed_and_different_for_another(shard_dir):
    a, b = run_epoch(data_cfg(shard_dir)), run_epoch(data_cfg(shard_dir))
    assert [x.keys for x in a] == [x.keys for x in b]
    assert all(torch.equal(x.clips, y.clips) for x, y in zip(a, b))
    c = run_epoch(data_cfg(shard_dir, "data.seed=1"))
    assert [x.keys for x in a] != [x.keys for x in c] or not all(
        torch.equal(x.clips, y.clips) for x, y in zip(a, c))


def test_resume_mid_epoch_continues_the_exact_stream(shard_dir):
    cfg = data_cfg(shard_dir)
    full = run_epoch(cfg)
    state = StreamState(world_size=1, num_workers=2, seed=cfg.seed)
    for batch in full[:3]:  # trained 3 batches, then the job died
        state.update(batch)
    restored = StreamState(world_size=1, num_workers=2, seed=cfg.seed)
    restored.load_state_dict(state.state_dict())
    step, roles = restored.position()
    rest = run_epoch(cfg, step=step, resume=roles)
    assert [b.stream.step for b in rest] == [3, 4, 5]
    assert [b.keys for b in rest] == [b.keys for b in full[3:]]
    assert all(torch.equal(x.clips, y.clips) for x, y in zip(rest, full[3:]))


def test_second_epoch_differs_and_starts_without_replay(shard_dir):
    cfg = data_cfg(shard_dir)
    first, second = run_epoch(cfg, step=0), run_epoch(cfg, step=6)
    assert [b.stream.epoch for b in second] == [1] * 6
    assert [b.keys for b in first] != [b.keys for b in second]


def test_changed_world_size_is_refused_unless_reseeded(shard_dir):
    state = StreamState(world_size=2, num_workers=2, seed=0)
    state.step = 10
    other = StreamState(world_size=4, num_workers=2, seed=0)
    with pytest.raises(LoaderError, match="world_size 2 -> 4"):
        other.load_state_dict(state.state_dict())
    other.load_state_dict(state.state_dict(), reseed=True)
    assert other.position() == (10, {})


def test_changed_shuffle_buffer_is_refused_unless_reseeded():
    # one data.path: the buffer size decides the sample order, so the saved positions would replay
    # another stream (a mixture records it per source in its signature)
    state = StreamState(world_size=1, num_workers=2, seed=0, shuffle_buffer=100)
    state.step = 7
    other = StreamState(world_size=1, num_workers=2, seed=0, shuffle_buffer=200)
    with pytest.raises(LoaderError, match="data.shuffle_buffer 100 -> 200"):
        other.load_state_dict(state.state_dict())
    other.load_state_dict(state.state_dict(), reseed=True)
    assert other.position() == (7, {})
    same = StreamState(world_size=1, num_workers=2, seed=0, shuffle_buffer=100)
    same.load_state_dict({**state.state_dict(), "roles": {"0": {"epoch": 0, "consumed": 5}}})
    assert same.position() == (7, {0: {"epoch": 0, "consumed": 5}})
    legacy = {k: v for k, v in state.state_dict().items() if k != "shuffle_buffer"}  # saved before it was recorded
    other.load_state_dict(legacy)
    assert other.position()[0] == 7


def test_startup_check_when_shards_are_fewer_than_readers(shard_dir):
    cfg = data_cfg(shard_dir, "data.num_workers=4")
    with pytest.raises(LoaderError, match="6 shards for 2 ranks x 4 workers"):
        build_train_stream(cfg, rank=0, world_size=2)
    build_train_stream(data_cfg(shard_dir, "data.num_workers=4", "data.allow_shared_shards=true"), 0, 2)


def test_failures_are_counted_and_a_broken_dataset_stops(tmp_path, shard_dir):
    broken = tmp_path / "broken"
    shutil.copytree(shard_dir, broken)
    import tarfile

    from vjepa_pipeline.shards.format import iter_shard

    # Replace the video bytes of half of the shards with junk (metadata intact).
    for i, tar_path in enumerate(sorted(broken.glob("*.tar"))):
        if i % 2:
            continue
        samples = list(iter_shard(tar_path))
        with tarfile.open(tar_path, "w") as tar:
            for s in samples:
                for suffix, data in (("mp4", b"junk" * 100), ("json", _json(s["json"])), ("cls", str(s["cls"]).encode())):
                    info = tarfile.TarInfo(f"{s['key']}.{suffix}")
                    info.size = len(data)
                    import io

                    tar.addfile(info, io.BytesIO(data))
    cfg = data_cfg(broken, "data.num_workers=0", "data.max_failure_rate=0.9")
    batches = run_epoch(cfg)
    fails = batches[-1].stream.failures
    assert sum(fails.values()) > 0 and all(r.startswith("decode") for r in fails)
    strict = data_cfg(broken, "data.num_workers=0", "data.max_failure_rate=0.1", "data.batches_per_epoch=60")
    with pytest.raises(LoaderError, match="above data.max_failure_rate=0.1"):
        run_epoch(strict)


def _json(obj) -> bytes:
    import json

    return json.dumps(obj).encode()


def test_file_list_source_reads_the_official_csv(tmp_path, generated_clips):
    clips = sorted(generated_clips.rglob("*.mp4"))
    csv = tmp_path / "train.csv"
    csv.write_text("".join(f"{p} {i % 2}\n" for i, p in enumerate(clips)))
    cfg = load_config(None, [*DATA, "data.source=csv", f"data.path={csv}", "data.num_workers=2"]).data
    batches = run_epoch(cfg)
    assert len(batches) == 6 and batches[0].clips.shape == (4, 8, 32, 32, 3)
    assert set(torch.cat([b.labels for b in batches]).tolist()) <= {0, 1}


def test_eval_views_are_deterministic_and_cover_every_video_once(shard_dir):
    cfg = data_cfg(shard_dir)
    ds = EvalVideos(cfg, str(shard_dir), segments=2, views=3)
    a = list(DataLoader(ds, batch_size=None, num_workers=2))
    b = list(DataLoader(ds, batch_size=None, num_workers=0))
    assert sorted(x["key"] for x in a) == sorted(x["key"] for x in b)
    assert len(a) == 6 and all(x["views"].shape == (2, 3, 8, 32, 32, 3) for x in a)
    by_key = {x["key"]: x["views"] for x in b}
    assert all(torch.equal(x["views"], by_key[x["key"]]) for x in a)
    halves = [list(EvalVideos(cfg, str(shard_dir), 1, 1, rank=r, world_size=2)) for r in range(2)]
    assert sorted(x["key"] for h in halves for x in h) == sorted(by_key)


def test_shuffle_buffer_is_a_permutation():
    import random

    out = list(shuffle_buffer(iter(range(100)), 10, random.Random(0)))
    assert sorted(out) == list(range(100)) and out != list(range(100))


def test_brace_patterns_and_pipe_urls_read_the_same_samples(shard_dir):
    n = len(list(shard_dir.glob("*.tar")))
    pattern = f"{shard_dir}/shard-{{000000..{n - 1:06d}}}.tar"
    urls, size = expand_urls(pattern)
    assert len(urls) == n and size is None
    with pytest.raises(LoaderError, match="set data.batches_per_epoch"):
        build_train_stream(load_config(None, [*DATA, f"data.path={pattern}", "data.batches_per_epoch=null"]).data)
    local = run_epoch(load_config(None, [*DATA, f"data.path={pattern}"]).data)
    piped = run_epoch(load_config(None, [*DATA, f"data.path=pipe:cat {pattern}"]).data)
    assert [b.keys for b in local] == [b.keys for b in piped]
    with pytest.raises(LoaderError, match="do not exist"):
        expand_urls(f"{shard_dir}/nope-{{0..3}}.tar")


def test_every_failure_path_is_counted(tmp_path, shard_dir):
    """A truncated shard, a sample without video and bad metadata are each counted under their
    own reason while the stream goes on; videos too short for a clip are skipped in skip mode."""
    import io
    import json
    import tarfile

    from vjepa_pipeline.shards.format import iter_shard

    bad = tmp_path / "bad"
    shutil.copytree(shard_dir, bad)
    tars = sorted(bad.glob("*.tar"))
    with tarfile.open(tars[0]) as tar:
        video = [m for m in tar.getmembers() if m.name.endswith(".mp4")][-1]
    tars[0].write_bytes(tars[0].read_bytes()[: video.offset_data + video.size // 2])  # truncated mid-video

    def rewrite(path, edit):
        samples = list(iter_shard(path))
        with tarfile.open(path, "w") as tar:
            for s in samples:
                for suffix, payload in edit(s):
                    info = tarfile.TarInfo(f"{s['key']}.{suffix}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))

    rewrite(tars[1], lambda s: [("json", json.dumps(s["json"]).encode())])  # no mp4
    rewrite(tars[2], lambda s: [("mp4", s["mp4"]), ("json", b"{not json"), ("cls", b"0")])
    cfg = data_cfg(bad, "data.num_workers=0", "data.max_failure_rate=0.9", "data.batches_per_epoch=8")
    last = run_epoch(cfg)[-1].stream
    assert {"unreadable shard", "incomplete sample", "bad metadata"} <= set(last.failures), last
    assert sum(last.failures.values()) < last.attempts
    # 32-frame videos cannot hold 16 frames at step 4: skip mode drops them all, and says so.
    too_short = data_cfg(shard_dir, "data.num_workers=0", "data.short_video=skip", "data.num_frames=16",
                         "data.frame_step=4")
    with pytest.raises(LoaderError, match="too short x"):
        run_epoch(too_short)
