"""Weighted multi-source mixtures (data.sources): realised proportions, exact mid-epoch resume through
the real trainer, the rank split, image sources as still clips, refused weight changes, bad configs."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import pytest
import torch
from torchvision.io import encode_jpeg, encode_png

from helpers import StopAt
from vjepa_pipeline.config import ConfigError, load_config
from vjepa_pipeline.config.schema import ShardsConfig
from vjepa_pipeline.data.loader import StreamState, build_train_stream, make_dataloader
from vjepa_pipeline.data.mixture import mixture_signature
from vjepa_pipeline.errors import LoaderError
from vjepa_pipeline.shards.build import ShardBuilder
from vjepa_pipeline.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = {"k710": 0.6, "ssv2": 0.3, "imagenet": 0.1}
DATA = ["data.source=shards", "data.num_frames=8", "data.frame_step=2", "data.crop_size=32", "data.batch_size=4",
        "data.shuffle_buffer=3", "data.num_workers=2"]


def _image(seed: int, h: int = 40, w: int = 48) -> torch.Tensor:
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def data(tmp_path_factory, generated_clips) -> dict:
    """A video shard folder (6 one-sample shards), an ImageNet-style image folder and image shards."""
    root = tmp_path_factory.mktemp("mixture_data")
    ShardBuilder(generated_clips, root / "videos", ShardsConfig(short_side=64, samples_per_shard=1),
                 log=lambda *a: None).run(progress=False)
    for i in range(6):
        folder = root / "imagenet" / ("n01" if i % 2 else "n02")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img_{i}.png").write_bytes(encode_png(_image(i)).numpy().tobytes())
    for s in range(2):  # image shards: tars of <key>.jpg + <key>.cls
        with tarfile.open(root / f"images-{s:06d}.tar", "w") as tar:
            for i in range(3):
                for suffix, payload in (("jpg", encode_jpeg(_image(10 * s + i)).numpy().tobytes()),
                                        ("cls", str(i).encode())):
                    info = tarfile.TarInfo(f"im{s}{i}.{suffix}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return {"videos": root / "videos", "pattern": str(root / "videos" / "shard-{000000..000005}.tar"),
            "imagenet": root / "imagenet", "image_shards": str(root / "images-{000000..000001}.tar")}


def sources_override(data: dict, weights: dict = WEIGHTS) -> str:
    """k710: the shard folder; ssv2: the same shards as a brace-pattern pipe: URL, with its own frame
    step; imagenet: class folders of images as still clips."""
    return ("data.sources=["
            f"{{name: k710, path: '{data['videos']}', weight: {weights['k710']}}}, "
            f"{{name: ssv2, path: 'pipe:cat {data['pattern']}', weight: {weights['ssv2']}, frame_step: 1}}, "
            f"{{name: imagenet, path: '{data['imagenet']}', weight: {weights['imagenet']}, kind: image}}]")


def run_epoch(cfg, rank=0, world=1, step=0, resume=None):
    stream = build_train_stream(cfg, rank, world)
    stream.set_position(step, resume)
    return list(make_dataloader(stream))


def test_realised_proportions_over_many_samples_match_the_weights(data):
    cfg = load_config(None, [*DATA, sources_override(data), "data.batches_per_epoch=150"]).data
    batches = run_epoch(cfg)
    counts = Counter()
    for b in batches:
        counts.update(b.stream.sources)
        assert Counter(k.split("/")[0] for k in b.keys) == Counter({k: v for k, v in b.stream.sources.items() if v})
    total = sum(counts.values())
    assert total == 600
    for name, weight in WEIGHTS.items():  # 3 sigma of a binomial proportion at n = 600 is <= 0.06
        assert counts[name] / total == pytest.approx(weight, abs=0.06), counts
    assert all(b.clips.shape == (4, 8, 32, 32, 3) for b in batches)


def test_mixture_is_deterministic_split_by_rank_and_resumes_mid_epoch(data):
    cfg = load_config(None, [*DATA, sources_override(data), "data.batches_per_epoch=8"]).data
    full = run_epoch(cfg)
    again = run_epoch(cfg)
    assert [b.keys for b in full] == [b.keys for b in again]
    assert all(torch.equal(x.clips, y.clips) for x, y in zip(full, again))
    state = StreamState(1, 2, cfg.seed, mixture_signature(cfg))
    for b in full[:5]:
        state.update(b)
    restored = StreamState(1, 2, cfg.seed, mixture_signature(cfg))
    restored.load_state_dict(json.loads(json.dumps(state.state_dict())))
    step, roles = restored.position()
    rest = run_epoch(cfg, step=step, resume=roles)
    assert [b.stream.step for b in rest] == [5, 6, 7]
    assert [b.keys for b in rest] == [b.keys for b in full[5:]]
    assert all(torch.equal(x.clips, y.clips) for x, y in zip(rest, full[5:]))
    # two ranks: each source is split by rank, so no sample of a source is on both ranks
    ranks = [run_epoch(cfg, rank=r, world=2) for r in range(2)]
    assert [len(r) for r in ranks] == [8, 8]
    seen = [{k for b in r for k in b.keys} for r in ranks]
    assert seen[0] and seen[1] and not seen[0] & seen[1]


def cfg_for(tmp_path, data, *extra, weights=WEIGHTS):
    return load_config(ROOT / "configs/pretrain/debug.yaml",
                       [f"train.run_dir={tmp_path}", "train.max_steps=8", "train.checkpoint_every_steps=4",
                        "logging.log_every_steps=1", "logging.trace_sample_keys=true", *DATA,
                        "data.batches_per_epoch=20", sources_override(data, weights), *extra])


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def trained_keys(run: Path) -> list[str]:
    return (run / "sample_keys/rank_0.txt").read_text().splitlines()


@pytest.mark.slow
def test_trainer_on_a_three_source_mixture_reports_it_and_resumes_exactly(tmp_path, data):
    straight = cfg_for(tmp_path / "a", data)
    pretrain(straight, progress=False)
    split = cfg_for(tmp_path / "b", data)
    pretrain(split, extra_callbacks=[StopAt(4)], progress=False)  # killed after the step-4 checkpoint
    summary = pretrain(split, progress=False)  # mid-epoch (epoch = 20 batches): the same command resumes
    assert summary["resumed_from"].endswith("step_0000000004") and summary["global_step"] == 8
    a, b = tmp_path / "a/debug", tmp_path / "b/debug"
    assert trained_keys(b) == trained_keys(a)  # the same samples, in the same order, after the resume
    for ra, rb in zip(metrics(a), metrics(b)):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5, abs=1e-6)
    # the realised mixture in metrics.jsonl: this rank's videos per source since the start
    last = metrics(a)[-1]
    drawn = Counter(k.split("/")[0] for line in trained_keys(a) for k in line.split()[1:])
    assert {n: last[f"mix_videos/{n}"] for n in WEIGHTS} == {n: drawn[n] for n in WEIGHTS}
    assert sum(last[f"mix/{n}"] for n in WEIGHTS) == pytest.approx(1.0)
    assert sum(drawn.values()) == 8 * 4
    state = json.loads((a / "checkpoints/step_0000000008/data_state/rank_0.json").read_text())
    assert [row[:2] for row in state["mixture"]] == [[n, w] for n, w in WEIGHTS.items()]


@pytest.mark.slow
def test_two_ddp_ranks_report_the_mixture_of_both(tmp_path, data):
    """Under DDP the realised mixture in metrics.jsonl counts the videos of every rank (summed in the
    step's all-reduce), not the logging rank's alone: it equals the sources of both ranks' traced keys.
    With gradient accumulation over an epoch of 3 batches, Lightning also steps on the epoch's last,
    lone micro-batch: the all-reduce then runs twice within one recorded step, and counts once."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "vjepa_pipeline", "pretrain", "--config", str(ROOT / "configs/pretrain/debug.yaml"),
           "--no-progress", f"train.run_dir={tmp_path}", "train.max_steps=3", "train.devices=2", "train.strategy=ddp",
           "train.accumulate_grad_batches=2", "train.checkpoint_every_steps=3", "logging.log_every_steps=1",
           "logging.trace_sample_keys=true", *DATA, "data.num_workers=1", "data.batches_per_epoch=3",
           sources_override(data)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    run_dir = tmp_path / "debug"
    drawn = Counter(k.split("/")[0] for r in (0, 1)
                    for line in (run_dir / f"sample_keys/rank_{r}.txt").read_text().splitlines()
                    for k in line.split()[1:])
    assert sum(drawn.values()) == 2 * 4 * 5  # two ranks, batch 4; steps of 2 + 1 (the epoch's end) + 2 micro-batches
    last = metrics(run_dir)[-1]
    assert {n: last.get(f"mix_videos/{n}", 0) for n in WEIGHTS} == {n: drawn[n] for n in WEIGHTS}


@pytest.mark.slow
def test_a_weight_change_on_resume_is_refused_unless_reseeded(tmp_path, data):
    pretrain(cfg_for(tmp_path, data, "train.max_steps=2", "train.checkpoint_every_steps=2"), progress=False)
    changed = {**WEIGHTS, "k710": 0.5}
    with pytest.raises(LoaderError, match=r"the mixture changed \(k710 weight 0.6 -> 0.5\)") as err:
        pretrain(cfg_for(tmp_path, data, "train.max_steps=3", weights=changed), progress=False)
    assert "\n" not in str(err.value) and "data.reseed_on_mixture_change=true" in str(err.value)
    summary = pretrain(cfg_for(tmp_path, data, "train.max_steps=3", "data.reseed_on_mixture_change=true",
                               weights=changed), progress=False)
    assert summary["resumed_from"].endswith("step_0000000002") and summary["global_step"] == 3
    state = json.loads((tmp_path / "debug/checkpoints/step_0000000003/data_state/rank_0.json").read_text())
    assert state["mixture"][0][:2] == ["k710", 0.5]


def test_image_sources_are_still_clips_from_class_folders_and_image_shards(data):
    for path, labels in ((data["imagenet"], {0, 1}), (data["image_shards"], {0, 1, 2})):
        cfg = load_config(None, [*DATA, "data.num_workers=1", "data.num_clips=2", "data.batches_per_epoch=6",
                                 f"data.sources=[{{name: img, path: '{path}', kind: image}}]"]).data
        batches = run_epoch(cfg)
        for b in batches:
            assert b.clips.shape == (4, 8, 32, 32, 3)
            assert torch.equal(b.clips, b.clips[:, :1].expand_as(b.clips))  # every frame is the image
            assert b.stream.sources == {"img": 2} and not b.stream.failures
        assert {int(x) for b in batches for x in b.labels} == labels
        assert not torch.equal(batches[0].clips[0], batches[0].clips[1])  # two crops of the same image


def test_a_broken_image_is_counted_under_its_source(tmp_path, data):
    folder = tmp_path / "imgs" / "cls"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"ok_{i}.png").write_bytes(encode_png(_image(i)).numpy().tobytes())
    (folder / "broken.png").write_bytes(b"\x89PNG not an image")
    png = bytearray(encode_png(_image(9)).numpy().tobytes())  # a header claiming 100k x 100k pixels
    png[16:24] = (100_000).to_bytes(4, "big") * 2
    png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")
    (folder / "bomb.png").write_bytes(bytes(png))
    cfg = load_config(None, [*DATA, "data.num_workers=1", "data.batches_per_epoch=4", "data.max_failure_rate=1.0",
                             f"data.sources=[{{name: img, path: '{tmp_path / 'imgs'}', kind: image}}]"]).data
    failures = run_epoch(cfg)[-1].stream.failures
    assert set(failures) == {"img: image: unreadable", "img: image: too many pixels"}, failures


@pytest.mark.parametrize("override, message", [
    ("data.sources=[{path: a, weight: 0}]", r"data.sources\[0\].weight: must be > 0, got 0.0"),
    ("data.sources=[{path: a}, {path: b, weight: -0.5}]", r"data.sources\[1\].weight: must be > 0, got -0.5"),
    ("data.sources=[]", r"data.path: required when data.source is 'shards'.*data.sources"),
    ("data.sources=[{path: a, weigth: 2}]", r"data.sources\[0\].weigth: unknown key; did you mean "
                                             r"'data.sources\[0\].weight'"),
    ("data.sources=[{weight: 1}]", r"data.sources\[0\].path: required"),
    ("data.sources=[{path: a, name: x}, {path: b, name: x}]", r"data.sources\[1\].name: 'x' is also the name"),
    ("data.sources=[{path: a, num_frames: 16}]", r"data.sources\[0\].num_frames: 16 differs from data.num_frames 8"),
    ("data.sources=[{path: a, kind: picture}]", r"data.sources\[0\].kind: must be one of"),
])
def test_bad_sources_are_one_line_config_errors(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, [*DATA, override])
    assert "\n" not in str(err.value)


def test_path_and_sources_together_are_refused():
    with pytest.raises(ConfigError, match="give data.path .* or data.sources .*not both") as err:
        load_config(None, [*DATA, "data.path=x", "data.sources=[{path: a}]"])
    assert "\n" not in str(err.value)


def test_a_missing_source_is_named_when_the_stream_is_built(tmp_path, data):
    cfg = load_config(None, [*DATA, "data.batches_per_epoch=2", f"data.sources=[{{name: k710, path: '{data['videos']}'}}, "
                             f"{{name: gone, path: '{tmp_path / 'none-{000000..000003}.tar'}'}}]"]).data
    with pytest.raises(LoaderError, match=r"data.sources\[1\] \(gone\): 4 of 4 shards do not exist"):
        build_train_stream(cfg)


def test_official_vjepa2_recipes_carry_the_official_mixture():
    for name, frames in (("vjepa2_vitl16", 16), ("vjepa2_vith16", 16), ("vjepa2_vitg16", 16),
                         ("vjepa2_vitl16_cooldown", 64), ("vjepa2_vitg16_cooldown", 64)):
        cfg = load_config(ROOT / f"configs/pretrain/{name}.yaml")
        d = cfg.data
        assert d.path is None and d.target_fps == 4.0
        assert [(s.name, s.weight, s.kind) for s in d.sources] == [
            ("k710", 0.335, "video"), ("ssv2", 0.100, "video"), ("howto100m", 0.565, "video")]
        assert [s.num_frames for s in d.sources] == [frames] * 3 == [d.num_frames] * 3  # official dataset_fpcs
        header = (ROOT / f"configs/pretrain/{name}.yaml").read_text()
        assert "approximates the weights" not in header


def test_file_list_sources_mix_official_csvs(tmp_path, generated_clips):
    """data.source=csv: every source is an official V-JEPA CSV (as the released configs' datasets)."""
    clips = sorted(generated_clips.rglob("*.mp4"))
    for name, part in (("a", clips[:3]), ("b", clips[3:])):
        (tmp_path / f"{name}.csv").write_text("".join(f"{p} {i % 2}\n" for i, p in enumerate(part)))
    cfg = load_config(None, [*DATA, "data.source=csv", "data.num_workers=1",
                             f"data.sources=[{{name: a, path: '{tmp_path / 'a.csv'}', weight: 3}}, "
                             f"{{name: b, path: '{tmp_path / 'b.csv'}', weight: 1}}]"]).data
    batches = run_epoch(cfg)
    assert len(batches) == 2  # no batches_per_epoch: ceil(6 listed videos / batch 4)
    keys = [k for b in batches for k in b.keys]
    assert {k.split("/")[0] for k in keys} <= {"a", "b"} and len(keys) == 8


def test_vjepa_pretrain_checks_every_source_before_any_work(tmp_path, data, capsys):
    from vjepa_pipeline.cli.main import main
    from vjepa_pipeline.cli.pretrain_cmd import check_inputs

    check_inputs(cfg_for(tmp_path, data))  # a good mixture passes the command's up-front data check
    gone = tmp_path / "gone-{000000..000003}.tar"
    code = main(["pretrain", "--config", str(ROOT / "configs/pretrain/debug.yaml"), "--no-progress",
                 f"train.run_dir={tmp_path}", *DATA, "data.batches_per_epoch=2",
                 f"data.sources=[{{name: k710, path: '{data['videos']}'}}, {{name: gone, path: '{gone}'}}]"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "data.sources[1] (gone): 4 of 4 shards do not exist" in err, err


def test_an_empty_image_folder_is_named(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    cfg = load_config(None, [*DATA, "data.batches_per_epoch=2",
                             f"data.sources=[{{name: img, path: '{tmp_path / 'empty'}', kind: image}}]"]).data
    with pytest.raises(LoaderError, match=r"^data.sources\[0\] \(img\): image source .* holds no .jpg"):
        build_train_stream(cfg)


def _tar_bytes(members: list[tuple[str, bytes]], lie: tuple[str, int] | None = None) -> bytes:
    """A tar of ``members``; ``lie``: one more member whose header declares that many bytes, followed
    by 64 KiB (the tar then ends inside it)."""
    def header(name: str, size: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size = size
        return info.tobuf(tarfile.GNU_FORMAT)  # base-256 sizes above 8 GiB

    out = io.BytesIO()
    for name, payload in members:
        out.write(header(name, len(payload)) + payload + b"\0" * (-len(payload) % 512))
    if lie is not None:
        out.write(header(*lie) + b"\xff" * (64 << 10))
    else:
        out.write(b"\0" * 1024)
    return out.getvalue()


def _image_samples_within(url: str, seconds: float = 10.0) -> tuple[list[dict], Counter, list[str]]:
    """image_tar_samples over one URL in a thread that must finish within ``seconds``."""
    from vjepa_pipeline.data.images import image_tar_samples

    failures, unreadable, result = Counter(), [], {}

    def read():
        result["samples"] = list(image_tar_samples(iter([url]), lambda reason: failures.update([reason]),
                                                   lambda u, exc: unreadable.append(str(exc))))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"the image shard reader still spins after {seconds} s"
    return result["samples"], failures, unreadable


@pytest.mark.parametrize("claimed", [100 << 30, 1 << 30], ids=["100GB", "1GB"])
@pytest.mark.parametrize("via", ["file", "pipe"])
def test_an_image_shard_with_a_lying_header_ends_at_once_with_one_failure(tmp_path, claimed, via):
    """A header declaring 100 GB (above any member) or 1 GB (an oversized image, skipped) in a tar of
    ~64 KiB: the reader stops at once (file: the size check; pipe: the end-of-stream guard), keeps the
    sample before it and counts the shard once, not the broken sample again."""
    jpg = encode_jpeg(_image(1)).numpy().tobytes()
    path = tmp_path / "liar.tar"
    path.write_bytes(_tar_bytes([("a.jpg", jpg), ("a.cls", b"3")], lie=("b.jpg", claimed)))
    url = str(path) if via == "file" else f"pipe:cat {path}"
    start = time.monotonic()
    samples, failures, unreadable = _image_samples_within(url)
    assert time.monotonic() - start < 5
    assert [(s["key"], s["label"]) for s in samples] == [("a", 3)]
    assert failures == Counter({"unreadable shard": 1}) and len(unreadable) == 1, (failures, unreadable)


def test_an_oversized_image_member_is_skipped_and_counted_once(tmp_path, monkeypatch):
    from vjepa_pipeline.data import images

    small = [encode_jpeg(_image(i)).numpy().tobytes() for i in range(2)]
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", max(map(len, small)) + 1)
    big = bytes(images.MAX_IMAGE_BYTES + 100)
    path = tmp_path / "big.tar"
    path.write_bytes(_tar_bytes([("a.jpg", small[0]), ("b.jpg", big), ("b.cls", b"1"), ("c.JPG", small[1])]))
    samples, failures, unreadable = _image_samples_within(str(path))
    assert [s["key"] for s in samples] == ["a", "c"]  # the read goes on after the skipped member
    assert samples[1]["image"] == small[1]  # suffixes are matched case-insensitively (.JPG)
    assert failures == Counter({"oversized member": 1}) and not unreadable, failures  # not "no image" too


def test_sources_share_the_shuffle_buffer_by_weight(data, monkeypatch):
    from vjepa_pipeline.data import mixture

    assert mixture.source_buffers(1000, [0.335, 0.1, 0.565]) == [335, 100, 565]  # the V-JEPA 2 recipe
    assert mixture.source_buffers(3, [0.6, 0.3, 0.1]) == [2, 1, 1]  # at least 1 each
    cfg = load_config(None, [*DATA, sources_override(data), "data.batches_per_epoch=2",
                             "data.num_workers=0"]).data  # in this process, so the sizes are seen
    used = []
    real = mixture.shuffle_buffer
    monkeypatch.setattr(mixture, "shuffle_buffer", lambda s, size, rng: used.append(size) or real(s, size, rng))
    run_epoch(cfg)
    assert sorted(used) == [1, 1, 2], used  # k710 2, ssv2 1, imagenet 1 of data.shuffle_buffer=3
    # the sizes are in the signature: a resume with another data.shuffle_buffer is refused
    saved = StreamState(1, 1, cfg.seed, mixture_signature(cfg)).state_dict()
    assert [row[-1] for row in saved["mixture"]] == [2, 1, 1]
    bigger = load_config(None, [*DATA, sources_override(data), "data.shuffle_buffer=30"]).data
    with pytest.raises(LoaderError, match=r"k710 shuffle_buffer 2 -> 18; ssv2 shuffle_buffer 1 -> 9; "
                                          r"imagenet shuffle_buffer 1 -> 3\)"):
        StreamState(1, 1, cfg.seed, mixture_signature(bigger)).load_state_dict(saved)
    older = {**saved, "mixture": [row[:-1] for row in saved["mixture"]]}  # saved before the split
    with pytest.raises(LoaderError, match=r"k710 shuffle_buffer unrecorded -> 2"):
        StreamState(1, 1, cfg.seed, mixture_signature(cfg)).load_state_dict(older)
