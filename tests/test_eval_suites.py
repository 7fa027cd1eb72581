"""The evaluation suites in eval/ and the dataset recipes in data/: every suite loads through the
typed schema, the published suites carry the official protocols, and the documentation they
point to exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vjepa_pipeline.eval.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "eval"
DATA = ROOT / "data"
SUITES = sorted(EVAL.glob("*.yaml"))
PUBLISHED = [p for p in SUITES if p.name != "demo.yaml"]
REQUIRED_SUITES = {
    "k400.yaml", "ssv2.yaml", "hmdb51.yaml", "ucf101.yaml", "diving48.yaml", "jester.yaml", "k600.yaml",
    "k700.yaml", "imagenet.yaml", "vjepa1_paper.yaml", "vjepa2_paper.yaml", "demo.yaml",
}
V2_LRS = [5e-3, 3e-3, 1e-3, 3e-4, 1e-4]
V2_WDS = [0.01, 0.1, 0.4, 0.8]


def _ids(paths):
    return [p.name for p in paths]


def _datasets(prefix: str):
    """(suite file, dataset) for every dataset named ``prefix`` in any suite."""
    return [(p.name, d) for p in SUITES for d in load_suite(p).datasets if d.name == prefix]


def test_required_suites_exist():
    assert REQUIRED_SUITES <= {p.name for p in SUITES}


@pytest.mark.parametrize("path", SUITES, ids=_ids(SUITES))
def test_suite_loads(path):
    suite = load_suite(path)
    assert suite.datasets
    assert suite.name == path.stem


@pytest.mark.parametrize("path", PUBLISHED, ids=_ids(PUBLISHED))
def test_published_suite_has_grid_placeholders_and_classes(path):
    suite = load_suite(path)
    for d in suite.datasets:
        assert d.probe.lrs and d.probe.weight_decays, d.name
        assert all(lr > 0 for lr in d.probe.lrs) and all(wd >= 0 for wd in d.probe.weight_decays)
        assert d.num_classes is not None and d.num_classes > 1, d.name
        for split in (d.train, d.val):  # placeholders, documented in the suite's comments
            assert split.startswith("/path/to/shards/"), (d.name, split)
        assert d.probe.selection == "holdout", "best_on_val is opt-in (optimistic), never a default"
    assert "vjepa shards build" in path.read_text() or path.name.endswith("_paper.yaml")


def test_k400_official_views():
    found = _datasets("k400")
    assert {name for name, _ in found} >= {"k400.yaml", "vjepa1_paper.yaml", "vjepa2_paper.yaml"}
    for name, d in found:
        assert (d.num_frames, d.frame_step, d.segments, d.views) == (16, 4, 8, 3), name
        assert (d.train_segments, d.train_views) == (8, 1), name
        assert d.num_classes == 400


def test_ssv2_official_views():
    found = _datasets("ssv2")
    assert {name for name, _ in found} >= {"ssv2.yaml", "vjepa1_paper.yaml", "vjepa2_paper.yaml"}
    for name, d in found:
        assert (d.num_frames, d.frame_step, d.segments, d.views) == (16, 4, 2, 3), name
        assert (d.train_segments, d.train_views) == (2, 1), name
        assert d.num_classes == 174


def test_vjepa1_protocol():
    suite = load_suite(EVAL / "vjepa1_paper.yaml")
    assert [d.name for d in suite.datasets] == ["k400", "ssv2", "in1k"]
    assert suite.layers == [-1]
    for d in suite.datasets:
        assert d.crop_size == 224 and d.num_frames == 16
        assert d.probe.kind == "attentive" and d.probe.epochs == 20 and d.probe.warmup_epochs == 0
        assert 1e-3 in d.probe.lrs  # the official single head is a point of the grid
    assert 0.01 in suite.datasets[0].probe.weight_decays and 0.001 in suite.datasets[2].probe.weight_decays


def test_vjepa2_protocol():
    suite = load_suite(EVAL / "vjepa2_paper.yaml")
    assert [d.name for d in suite.datasets] == ["ssv2", "diving48", "k400"]
    for d in suite.datasets:
        assert d.crop_size == 256
        assert d.probe.kind == "attentive_v2" and d.probe.self_attn_blocks == 3 and d.probe.num_heads == 16
        assert d.probe.lrs == V2_LRS and d.probe.weight_decays == V2_WDS  # 20 heads
    diving = suite.datasets[1]
    assert (diving.num_frames, diving.frame_step, diving.segments, diving.views) == (32, 2, 4, 3)
    assert diving.probe.epochs == 100


def test_diving48_suite_matches_paper_entry():
    alone = load_suite(EVAL / "diving48.yaml")
    (d,) = alone.datasets
    paper = next(x for x in load_suite(EVAL / "vjepa2_paper.yaml").datasets if x.name == "diving48")
    assert d == paper  # same protocol; only `layers` (suite-wide) differs
    assert alone.layers == [-7, -5, -3, -1]


@pytest.mark.parametrize("name,classes", [("hmdb51", 51), ("ucf101", 101)])
def test_three_official_splits(name, classes):
    suite = load_suite(EVAL / f"{name}.yaml")
    assert [d.name for d in suite.datasets] == [f"{name}_split{k}" for k in (1, 2, 3)]
    assert len({d.train for d in suite.datasets}) == 3 and len({d.val for d in suite.datasets}) == 3
    assert all(d.num_classes == classes for d in suite.datasets)


def test_imagenet_static_clips():
    (d,) = load_suite(EVAL / "imagenet.yaml").datasets
    assert (d.num_frames, d.crop_size, d.segments, d.views, d.num_classes) == (16, 224, 1, 1, 1000)


def test_demo_suite():
    suite = load_suite(EVAL / "demo.yaml")
    (d,) = suite.datasets
    assert d.train.replace("\\", "/").endswith("runs/demo/shards/train")
    assert d.val.replace("\\", "/").endswith("runs/demo/shards/val")
    from vjepa_pipeline.config import load_config

    recipe = load_config(EVAL.parent / "configs" / "pretrain" / "demo.yaml")
    # the probe sees exactly the clips the demo encoder was pretrained on
    assert (d.num_frames, d.frame_step, d.crop_size) == (recipe.data.num_frames, recipe.data.frame_step,
                                                         recipe.data.crop_size)
    assert (d.segments, d.views) == (1, 1)
    assert d.num_classes is None
    assert d.probe.kind == "attentive" and recipe.model.embed_dim % d.probe.num_heads == 0
    assert (d.probe.epochs, d.probe.batch_size) == (80, 32)
    assert d.probe.lrs == [3e-3, 1e-2] and d.probe.weight_decays == [0.01, 0.05]


def test_eval_readme_lists_every_suite():
    text = (EVAL / "README.md").read_text()
    missing = [p.name for p in SUITES if f"`{p.name}`" not in text]
    assert not missing, f"eval/README.md does not mention {missing}"
    assert (EVAL / "reference_results.md").exists()


def test_reference_results_carry_published_numbers():
    text = (EVAL / "reference_results.md").read_text()
    for number in ("80.8", "69.5", "82.0", "71.4", "73.7", "77.3"):  # DESIGN.md section 2
        assert number in text
    assert "published" in text.lower() and "not measured" in text.lower()


def _readme_recipes() -> list[str]:
    return re.findall(r"\]\(([^)#]+\.md)\)", (DATA / "README.md").read_text())


def test_data_readme_recipes_exist():
    linked = _readme_recipes()
    assert linked, "data/README.md links no recipe"
    missing = [name for name in linked if not (DATA / name).is_file()]
    assert not missing, f"data/README.md links missing recipes: {missing}"
    expected = {"kinetics.md", "ssv2.md", "hmdb51.md", "ucf101.md", "diving48.md", "jester.md", "imagenet.md",
                "demo.md"}
    assert expected <= set(linked)


def test_every_recipe_is_indexed_and_names_its_suite():
    linked = set(_readme_recipes())
    for recipe in DATA.glob("*.md"):
        if recipe.name == "README.md":
            continue
        assert recipe.name in linked, f"{recipe.name} is not linked from data/README.md"
        text = recipe.read_text()
        assert "vjepa shards build" in text, recipe.name
        for suite in re.findall(r"eval/([\w-]+\.yaml)", text):
            assert (EVAL / suite).is_file(), f"{recipe.name} names a missing suite eval/{suite}"


def test_suites_name_existing_recipes():
    for path in SUITES:
        for recipe in re.findall(r"data/([\w-]+\.md)", path.read_text()):
            assert (DATA / recipe).is_file(), f"{path.name} names a missing recipe data/{recipe}"
