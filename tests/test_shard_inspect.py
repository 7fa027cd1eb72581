"""`vjepa shards inspect`: a clean build passes, every kind of corruption is named precisely."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from vjepa_pipeline.shards.format import iter_shard
from vjepa_pipeline.shards.inspect import DURATION_BINS, InspectError, InspectReport, inspect_shards

# class -> (fps, source width): 12 frames each, so "cat" clips last 0.5 s and "dog" clips 1.5 s.
CLASSES = {"cat": (24, 64), "dog": (8, 96)}
CLIPS_PER_CLASS = 2
FRAMES = 12


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """2 classes x 2 clips of 12 frames (64x64 at 24 fps, 96x64 at 8 fps) in 2 shards of 2."""
    from vjepa_pipeline.config.schema import ShardsConfig
    from vjepa_pipeline.data.synthetic import moving_objects_clip
    from vjepa_pipeline.shards.build import ShardBuilder
    from vjepa_pipeline.shards.media import write_video

    root = tmp_path_factory.mktemp("inspect")
    src = root / "src"
    for c, (fps, width) in CLASSES.items():
        (src / c).mkdir(parents=True)
        for i in range(CLIPS_PER_CLASS):
            frames = moving_objects_clip(seed=len(c) * 10 + i, num_frames=FRAMES, size=width).numpy()
            write_video(src / c / f"clip{i}.mp4", frames[:, :64], fps)  # H 64, W 64 or 96
    out = root / "shards"
    opts = ShardsConfig(short_side=64, samples_per_shard=2)
    ShardBuilder(src, out, opts, log=lambda *a: None).run(progress=False)
    return out


@pytest.fixture
def shards(built, tmp_path) -> Path:
    """A private copy of the clean build, to corrupt."""
    return Path(shutil.copytree(built, tmp_path / "shards"))


def index_of(d: Path) -> dict:
    return json.loads((d / "index.json").read_text())


def first_sample(d: Path, shard: str = "shard-000000.tar") -> dict:
    return next(iter_shard(d / shard))


def rewrite_tar(path: Path, edit) -> None:
    """Rewrite the tar with ``edit(name, data)`` applied to each member: bytes replace the data,
    None drops the member; ``edit`` may also return (new_name, data)."""
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            new = edit(name, data)
            if new is None:
                continue
            if isinstance(new, tuple):
                name, new = new
            info = tarfile.TarInfo(name)
            info.size = len(new)
            tar.addfile(info, io.BytesIO(new))


def edit_json(d: Path, change, shard: str = "shard-000000.tar") -> dict:
    """Apply ``change(meta)`` to the first sample's .json; returns the original sample."""
    sample = first_sample(d, shard)

    def edit(name, data):
        if name == f"{sample['key']}.json":
            meta = json.loads(data)
            change(meta)
            return json.dumps(meta).encode()
        return data

    rewrite_tar(d / shard, edit)
    return sample


def has(report: InspectReport, *fragments: str) -> bool:
    """Some single problem line contains every fragment."""
    return any(all(f in p for f in fragments) for p in report.problems)


# ---- a clean build ---------------------------------------------------------------------------
def test_clean_build_is_ok(built, tmp_path):
    sheet = tmp_path / "sheet" / "contact.png"
    report = inspect_shards(built, sheet_path=sheet)
    assert report.ok and report.problems == [], report.problems
    index = index_of(built)
    n = len(CLASSES) * CLIPS_PER_CLASS
    assert report.totals["samples"] == index["totals"]["samples"] == n
    assert report.totals["frames"] == index["totals"]["frames"] == n * FRAMES
    assert report.totals["seconds"] == pytest.approx(index["totals"]["seconds"], abs=1e-3)
    assert report.totals["seconds"] == pytest.approx(2 * 0.5 + 2 * 1.5, abs=1e-3)
    assert report.totals["hours"] == pytest.approx(report.totals["seconds"] / 3600, abs=1e-4)
    assert report.totals["bytes"] == sum(s["bytes"] for s in index["shards"])
    assert report.num_shards == 2

    assert list(report.duration_hist) == [label for _, label in DURATION_BINS]
    assert report.duration_hist["<1s"] == 2 and report.duration_hist["1-2s"] == 2
    assert sum(report.duration_hist.values()) == n
    assert report.resolution_hist == {"64x64": 2, "96x64": 2}
    assert report.label_hist == {"cat": 2, "dog": 2}

    text = report.render()
    assert "OK" in text and "problems: none" in text and str(sheet) in text
    assert "cat" in text and "96x64" in text and "#" in text


def test_contact_sheet(built, tmp_path):
    from PIL import Image

    sheet = tmp_path / "contact.png"
    report = inspect_shards(built, decode=False, sheet_path=sheet)  # sheet frames decoded on their own
    assert report.ok and report.sheet_path == sheet and sheet.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["contact.png"]  # no temporary file left
    with Image.open(sheet) as img:
        assert img.format == "PNG"
        w, h = img.size
    # 4 rows (every sample), each a caption over 96 px thumbnails; widest row: 6 x 144 px (96x64 video)
    assert 4 * 96 < h < 4 * 150
    assert 6 * 144 <= w < 6 * 144 + 200
    again = tmp_path / "again.png"
    inspect_shards(built, sheet_path=again)  # decode=True path gives the same pixels
    assert again.read_bytes() == sheet.read_bytes()

    small = tmp_path / "small.png"
    inspect_shards(built, decode=False, sheet_path=small, sheet_samples=2)
    with Image.open(small) as img:
        assert img.size[1] < h / 1.5  # 2 rows


def test_no_sheet_unless_asked(built):
    report = inspect_shards(built, decode=False)
    assert report.ok and report.sheet_path is None
    assert not list(built.glob("*.png"))


# ---- corruption ------------------------------------------------------------------------------
def test_truncated_tar(shards):
    path = shards / "shard-000001.tar"
    path.write_bytes(path.read_bytes()[:1500])  # inside the first sample's mp4
    report = inspect_shards(shards)
    assert not report.ok
    assert has(report, "shard-000001.tar: unreadable tar", "after 0 complete samples")
    assert has(report, "shard-000001.tar: size 1500 bytes but index.json says")
    assert has(report, "totals: samples")


def test_deleted_shard(shards):
    (shards / "shard-000001.tar").unlink()
    report = inspect_shards(shards)
    assert has(report, "shard-000001.tar: listed in index.json but missing")
    assert has(report, "totals: samples 2 in the shards but index.json says 4")
    assert report.totals["samples"] == 2 and not report.ok


def test_stray_tar(shards):
    shutil.copy(shards / "shard-000000.tar", shards / "shard-000002.tar")
    report = inspect_shards(shards)
    assert report.problems == ["shard-000002.tar: not listed in index.json (stray shard)"]


def test_sha256_mismatch(shards):
    path = shards / "shard-000000.tar"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the tar's zero padding: contents intact, size intact, hash not
    path.write_bytes(bytes(data))
    report = inspect_shards(shards)
    assert len(report.problems) == 1
    assert has(report, "shard-000000.tar: sha256", "does not match index.json")


def test_tampered_json_key(shards):
    sample = edit_json(shards, lambda m: m.update(key="someone_else"))
    report = inspect_shards(shards)
    assert has(report, f"shard-000000.tar: {sample['key']}: .json key 'someone_else' does not match "
                       "the member key")
    assert any(p.startswith(("shard-000000.tar: sha256", "shard-000000.tar: size")) for p in report.problems)


def test_tampered_json_label(shards):
    label_map = index_of(shards)["label_map"]
    sample = edit_json(shards, lambda m: m.update(label=1 - m["label"]))
    key, label, name = sample["key"], sample["json"]["label"], sample["json"]["label_name"]
    report = inspect_shards(shards)
    assert has(report, f"shard-000000.tar: {key}: .cls {label} does not match .json label {1 - label}")
    assert has(report, f"{key}: label {1 - label} does not match label_map['{name}'] = {label_map[name]}")


def test_missing_required_field(shards):
    sample = edit_json(shards, lambda m: m.pop("duration"))
    report = inspect_shards(shards)
    assert has(report, f"shard-000000.tar: {sample['key']}: .json lacks required fields: duration")


def test_wrong_num_frames(shards):
    sample = edit_json(shards, lambda m: m.update(num_frames=m["num_frames"] + 1))
    report = inspect_shards(shards)
    assert has(report, f"shard-000000.tar: {sample['key']}: video decodes to {FRAMES} frames but .json "
                       f"num_frames is {FRAMES + 1}")
    assert has(report, f"totals: frames {4 * FRAMES + 1} in the shards but index.json says {4 * FRAMES}")
    quick = inspect_shards(shards, decode=False)  # without decoding only the totals disagree
    assert not has(quick, "video decodes") and has(quick, "totals: frames")


def test_wrong_size(shards):
    sample = edit_json(shards, lambda m: m.update(width=m["width"] + 16))
    w, h = sample["json"]["width"], sample["json"]["height"]
    report = inspect_shards(shards)
    assert has(report, f"{sample['key']}: video is {w}x{h} but .json says {w + 16}x{h}")


def test_missing_cls(shards):
    sample = first_sample(shards)
    rewrite_tar(shards / "shard-000000.tar", lambda name, data: None if name.endswith(".cls") and
                name.startswith(sample["key"]) else data)
    report = inspect_shards(shards)
    assert has(report, f"shard-000000.tar: {sample['key']}: missing .cls (.json label is {sample['cls']})")


def test_stray_member_and_missing_mp4(shards):
    sample = first_sample(shards)
    key = sample["key"]
    rewrite_tar(shards / "shard-000000.tar",
                lambda name, data: None if name == f"{key}.mp4" else
                (f"{key}.txt", b"hello") if name == f"{key}.cls" else data)
    report = inspect_shards(shards)
    assert has(report, f"shard-000000.tar: {key}: missing .mp4")
    assert has(report, f"shard-000000.tar: {key}: stray member {key}.txt")
    assert has(report, f"shard-000000.tar: {key}: missing .cls")


def test_junk_mp4_does_not_decode(shards):
    sample = first_sample(shards)
    junk = bytes(range(256)) * 8
    rewrite_tar(shards / "shard-000000.tar",
                lambda name, data: junk if name == f"{sample['key']}.mp4" else data)
    report = inspect_shards(shards, sheet_path=shards / "sheet.png")  # a broken sample never breaks the sheet
    assert has(report, f"shard-000000.tar: {sample['key']}: video does not decode")
    assert report.sheet_path is not None and report.sheet_path.is_file()
    assert not has(inspect_shards(shards, decode=False), "does not decode")


def test_duplicate_key_across_shards(shards):
    keys0 = [s["key"] for s in iter_shard(shards / "shard-000000.tar")]
    keys1 = [s["key"] for s in iter_shard(shards / "shard-000001.tar")]
    rename = dict(zip(keys1, keys0))

    def edit(name, data):
        key, _, suffix = name.partition(".")
        if suffix == "json":
            meta = json.loads(data)
            meta["key"] = rename[key]
            data = json.dumps(meta).encode()
        return f"{rename[key]}.{suffix}", data

    rewrite_tar(shards / "shard-000001.tar", edit)
    report = inspect_shards(shards, decode=False)
    assert has(report, f"shard-000001.tar: {keys0[0]}: duplicate key (also in shard-000000.tar)")


def test_report_render_lists_problems(shards):
    (shards / "shard-000001.tar").unlink()
    report = InspectReport(ok=False, problems=[f"shard-{i:06d}.tar: broken" for i in range(25)],
                           totals={"samples": 1}, index_totals={"samples": 2}, shard_dir=shards)
    text = report.render()
    assert "shard-000019.tar: broken" in text and "shard-000020.tar" not in text
    assert "... and 5 more" in text and "FAILED" in text and "<- differs" in text


# ---- usage errors ----------------------------------------------------------------------------
def test_missing_folder(tmp_path):
    with pytest.raises(InspectError, match="does not exist"):
        inspect_shards(tmp_path / "nowhere")


def test_folder_without_index(tmp_path):
    (tmp_path / "shard-000000.tar").write_bytes(b"")
    with pytest.raises(InspectError, match="no index.json"):
        inspect_shards(tmp_path)


def test_not_a_shard_index(tmp_path):
    (tmp_path / "index.json").write_text(json.dumps({"format": "something-else", "shards": []}))
    with pytest.raises(InspectError, match="not a vjepa-shards index"):
        inspect_shards(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(InspectError, match="not readable JSON"):
        inspect_shards(tmp_path)
