"""Evaluation labels must lie in [0, num_classes), the count coming from the suite or the label map
(issue "Reliability", item 11). A stray label used to grow the classes silently (label 2 in a
2-class map gave 3 classes with numeric names and exit code 0) and label 999999 made the probe
allocate by its value (a 10**12-cell confusion matrix). Now: one line naming the videos."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import pytest
import torch
import yaml

from vjepa_pipeline.checkpoint.interop import save_native
from vjepa_pipeline.config import config_to_dict, load_config
from vjepa_pipeline.data.synthetic import moving_objects_clip
from vjepa_pipeline.errors import UsageError
from vjepa_pipeline.eval.runner import run_suite
from vjepa_pipeline.eval.suite import load_suite
from vjepa_pipeline.models.build import build_encoder
from vjepa_pipeline.shards.media import write_video

MODEL = ["model.embed_dim=32", "model.depth=1", "model.num_heads=2", "model.patch_size=16", "data.num_frames=4",
         "data.crop_size=32"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("videos")
    paths = [d / f"v{i}.mp4" for i in range(4)]
    for i, p in enumerate(paths):
        write_video(p, moving_objects_clip(i, 8, 32).numpy(), fps=8)
    return paths


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    cfg = load_config(None, MODEL)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("enc") / "encoder.pt"
    save_native(path, {"target_encoder": build_encoder(cfg.model, 4, 32)}, config=config_to_dict(cfg))
    return path


def shards(root: Path, videos: list[Path], labels: list[int | None], label_map: dict | None) -> Path:
    """A shard folder as the builder lays it out: one tar (<key>.mp4, <key>.cls) and index.json."""
    root.mkdir(parents=True)
    with tarfile.open(root / "s-000000.tar", "w") as tar:
        for i, (video, label) in enumerate(zip(videos, labels, strict=True)):
            members = [("mp4", video.read_bytes())] + ([("cls", str(label).encode())] if label is not None else [])
            for suffix, data in members:
                info = tarfile.TarInfo(f"clip{i}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    index = {"format": "vjepa-shards", "version": 1, "shards": [{"name": "s-000000.tar", "samples": len(videos)}],
             "totals": {"samples": len(videos)}, "label_map": label_map or {}}
    (root / "index.json").write_text(json.dumps(index))
    return root


def csv(path: Path, videos: list[Path], labels: list[int]) -> Path:
    path.write_text("".join(f"{v} {label}\n" for v, label in zip(videos, labels, strict=True)))
    return path


def suite(tmp_path: Path, train: Path, val: Path, source: str = "shards", selection: str = "holdout",
          **extra) -> Path:
    ds = {"name": "toy", "source": source, "train": str(train), "val": str(val), "num_frames": 4, "frame_step": 1,
          "crop_size": 32, "probe": {"kind": "linear", "epochs": 1, "batch_size": 4, "lrs": [1e-3],
                                     "weight_decays": [0.0], "selection": selection}, **extra}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"name": "labels", "num_workers": 0, "datasets": [ds]}))
    return path


def run(tmp_path: Path, suite_path: Path, encoder: Path) -> dict:
    return run_suite(load_suite(suite_path), str(encoder), tmp_path / "out", device="cpu", log=lambda *a: None)


def test_labels_inside_the_label_map_use_its_names(tmp_path, videos, encoder):
    sh = shards(tmp_path / "sh", videos, [0, 1, 0, 1], {"left": 0, "right": 1})
    ds = run(tmp_path, suite(tmp_path, sh, sh), encoder)["datasets"]["toy"]
    assert ds["num_classes"] == 2 and ds["class_names"] == ["left", "right"]


def test_best_on_val_selection_reports_without_a_holdout(tmp_path, videos, encoder):
    """No holdout, so no holdout curve: the report keeps None there (it used to crash on it)."""
    sh = shards(tmp_path / "sh", videos, [0, 1, 0, 1], {"left": 0, "right": 1})
    ds = run(tmp_path, suite(tmp_path, sh, sh, selection="best_on_val"), encoder)["datasets"]["toy"]
    assert ds["curves"]["holdout_top1"] == [None] and len(ds["curves"]["val_top1"]) == 1


def test_a_label_outside_a_2_class_map_is_one_line_naming_the_video(tmp_path, videos, encoder):
    sh = shards(tmp_path / "sh", videos, [0, 1, 2, 1], {"left": 0, "right": 1})
    with pytest.raises(UsageError) as info:
        run(tmp_path, suite(tmp_path, sh, sh), encoder)
    msg = str(info.value)
    assert "\n" not in msg and "clip2 (label 2)" in msg and "[0, 2)" in msg and "has 2 classes" in msg, msg
    assert not (tmp_path / "out" / "results.json").exists()


def test_a_huge_label_is_refused_without_allocating_by_its_value(tmp_path, videos, encoder):
    sh = shards(tmp_path / "sh", videos, [0, 1, 0, 999999], {"left": 0, "right": 1})
    t0 = time.perf_counter()
    with pytest.raises(UsageError) as info:
        run(tmp_path, suite(tmp_path, sh, sh), encoder)
    assert time.perf_counter() - t0 < 60
    assert "clip3 (label 999999)" in str(info.value) and "\n" not in str(info.value)


def test_unlabelled_videos_are_named_too(tmp_path, videos, encoder):
    sh = shards(tmp_path / "sh", videos, [0, 1, None, 1], {"left": 0, "right": 1})
    with pytest.raises(UsageError, match=r"clip2 \(no label\)"):
        run(tmp_path, suite(tmp_path, sh, sh), encoder)


def test_a_file_list_names_the_offending_files_and_never_counts_by_the_largest_label(tmp_path, videos, encoder):
    train = csv(tmp_path / "train.csv", videos, [0, 1, 0, 1])  # its labels: 2 classes
    val = csv(tmp_path / "val.csv", videos, [0, 1, 0, 999999])
    with pytest.raises(UsageError) as info:
        run(tmp_path, suite(tmp_path, train, val, source="csv"), encoder)
    msg = str(info.value)
    assert "1 val video" in msg and f"{videos[3]} (label 999999)" in msg and "[0, 2)" in msg
    # sparse ids (0, 1, 999999) are no class count: the suite must say it
    sparse = csv(tmp_path / "sparse.csv", videos, [0, 1, 0, 999999])
    with pytest.raises(UsageError, match="set num_classes"):
        run(tmp_path, suite(tmp_path, sparse, sparse, source="csv"), encoder)
    # the suite's num_classes is the count: label 2 is outside a 2-class suite
    two = csv(tmp_path / "two.csv", videos, [0, 1, 2, 1])
    with pytest.raises(UsageError, match=r"num_classes: 2 in the suite\): \S*v2\.mp4 \(label 2\)"):
        run(tmp_path, suite(tmp_path, two, two, source="csv", num_classes=2), encoder)


def test_an_absurd_class_count_in_the_suite_is_a_config_error(tmp_path, videos):
    from vjepa_pipeline.config import ConfigError

    train = csv(tmp_path / "train.csv", videos, [0, 1, 0, 1])
    with pytest.raises(ConfigError, match="num_classes"):
        load_suite(suite(tmp_path, train, train, source="csv", num_classes=10**9))


@pytest.mark.parametrize("m, batch", [(3, 2), (5, 2), (7, 3), (4, 2), (1, 4)])
def test_probe_batches_cover_every_sample_once(m, batch):
    """A trailing batch of one sample is merged into the previous batch (BatchNorm): every sample
    exactly once. It used to be merged one slot too far: an IndexError with two batches, a dropped
    batch and a duplicated one with more."""
    from vjepa_pipeline.eval.grid import _batches

    out = _batches(m, batch, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(out).tolist()) == list(range(m))
    assert all(len(b) > 1 for b in out) or m == 1
