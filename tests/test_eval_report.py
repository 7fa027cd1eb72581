"""Evaluation report: results.json, report.md and the PNG plots from a realistic results dict."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from vjepa_pipeline.eval import report as R

LRS = [1e-4, 5e-4, 1e-3]
WDS = [0.01, 0.1]


def _confusion(rng: np.random.Generator, n: int, per_class: int, acc: float) -> np.ndarray:
    """Counts with about ``acc`` on the diagonal, rest spread over two confusable neighbours."""
    cm = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        correct = int(rng.binomial(per_class, np.clip(acc + rng.normal(0, 0.1), 0.05, 1.0)))
        cm[i, i] = correct
        wrong = per_class - correct
        a = wrong // 2
        cm[i, (i + 1) % n] += a
        cm[i, (i + 3) % n] += wrong - a
    return cm


def _curves(rng: np.random.Generator, epochs: int, heads: int, with_holdout: bool) -> dict:
    ep = np.arange(1, epochs + 1)
    rates = rng.uniform(0.1, 0.4, size=heads)
    loss = [[float(2.0 * math.exp(-r * e) + 0.3) for r in rates] for e in ep]
    val = [[float(0.9 * (1 - math.exp(-r * e))) for r in rates] for e in ep]
    out = {"epoch": ep.tolist(), "train_loss": loss, "val_top1": val}
    if with_holdout:
        out["holdout_top1"] = [[v - 0.02 for v in row] for row in val]
    return out


def _grid(rng: np.random.Generator, with_holdout: bool) -> tuple[list[dict], dict]:
    """The lr x wd grid and the selected head: best holdout top-1, or best val top-1 without holdout."""
    grid = [
        {
            "lr": lr,
            "wd": wd,
            "holdout_top1": float(rng.uniform(0.5, 0.8)) if with_holdout else float("nan"),
            "val_top1": float(rng.uniform(0.5, 0.8)),
        }
        for lr in LRS
        for wd in WDS
    ]
    best = max(grid, key=lambda g: g["holdout_top1"] if with_holdout else g["val_top1"])
    return grid, {"lr": best["lr"], "wd": best["wd"]}


def make_results() -> dict:
    rng = np.random.default_rng(0)
    # dataset 1: 5 classes, held-out selection, low-shot
    names5 = ["walking", "running", "jumping", "waving", "clapping"]
    cm5 = _confusion(rng, 5, 40, 0.82)
    pc5 = (np.diag(cm5) / cm5.sum(1)).tolist()
    top1_5 = float(np.trace(cm5) / cm5.sum())
    grid5, sel5 = _grid(rng, True)
    # dataset 2: 50 classes, best-on-val selection, one class without validation clips
    names50 = [f"action_{i:02d}" for i in range(50)]
    cm50 = _confusion(rng, 50, 8, 0.6)
    cm50[7] = 0
    with np.errstate(invalid="ignore", divide="ignore"):
        pc50 = (np.diag(cm50) / cm50.sum(1)).tolist()  # class 7 -> NaN
    top1_50 = float(np.trace(cm50) / cm50.sum())
    grid50, sel50 = _grid(rng, False)
    protocol = {
        "num_frames": 16,
        "frame_step": 4,
        "crop_size": 224,
        "probe": "attentive",
        "epochs": 12,
        "batch_size": 32,
        "lrs": LRS,
        "weight_decays": WDS,
        "segment_mode": "attend",
    }
    return {
        "suite": "demo",
        "created_by": "vjepa-pipeline 0.1.0",
        "encoder": {
            "source": "runs/demo/pretrain",
            "kind": "run",
            "fingerprint": "sha256:abcd1234ef567890",
            "params": 21_874_560,
            "layers": [-1],
        },
        "datasets": {
            "moves5": {
                "protocol": {**protocol, "segments": 8, "views": 3, "selection": "holdout"},
                "num_train": 1000,
                "num_val": 200,
                "num_classes": 5,
                "class_names": names5,
                "failed_videos": 0,
                "top1": top1_5,
                "top5": 0.9951,
                "mean_class_acc": 0.8102,
                "per_class": pc5,
                "selected": sel5,
                "selection_rule": "held-out 10% of train",
                "grid": grid5,
                "confusion": cm5.tolist(),
                "curves": _curves(rng, 12, 6, True),
                "low_shot": {
                    "5": {"mean": 0.41, "std": 0.03, "runs": [0.38, 0.41, 0.44]},
                    "10": {"mean": 0.5512, "std": 0.021, "runs": [0.53, 0.55, 0.57]},
                },
                "probe_checkpoint": "probes/moves5.pt",
            },
            "actions50": {
                "protocol": {**protocol, "segments": 2, "views": 3, "selection": "best_on_val"},
                "num_train": 5000,
                "num_val": 392,
                "num_classes": 50,
                "class_names": names50,
                "failed_videos": 3,
                "top1": top1_50,
                "top5": 0.8899,
                "mean_class_acc": float("nan"),
                "per_class": pc50,
                "selected": sel50,
                "selection_rule": "best on val",
                "grid": grid50,
                "confusion": cm50.tolist(),
                "curves": _curves(rng, 12, 6, False),
                "low_shot": {},
                "probe_checkpoint": "probes/actions50.pt",
            },
        },
        "comparisons": [
            {
                "label": "pretrained",
                "dataset": "moves5",
                "top1": 0.8234,
                "top1_std": 0.012,
                "runs": [0.81, 0.825, 0.835],
            },
            {
                "label": "random init",
                "dataset": "moves5",
                "top1": 0.31,
                "top1_std": 0.02,
                "runs": [0.29, 0.31, 0.33],
            },
            {
                "label": "single frame",
                "dataset": "moves5",
                "top1": 0.55,
                "top1_std": 0.015,
                "runs": [0.54, 0.55, 0.565],
            },
            {
                "label": "pretrained",
                "dataset": "actions50",
                "top1": 0.5047,
                "top1_std": 0.01,
                "runs": [0.5, 0.51],
            },
            {
                "label": "random init",
                "dataset": "actions50",
                "top1": 0.05,
                "top1_std": 0.01,
                "runs": [0.04, 0.06],
            },
        ],
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_out")
    results = make_results()
    paths = R.write_all(out, results)
    return out, results, paths


def test_write_all_writes_every_file(written):
    out, _, paths = written
    names = {p.relative_to(out).as_posix() for p in paths}
    assert names == {
        "results.json",
        "report.md",
        "plots/comparison.png",
        "plots/confusion_moves5.png",
        "plots/curves_moves5.png",
        "plots/confusion_actions50.png",
        "plots/curves_actions50.png",
    }
    for p in paths:
        assert p.is_file() and p.stat().st_size > 0
    assert paths[0].name == "results.json" and paths[-1].name == "report.md"
    leftovers = [f for f in out.rglob("*") if f.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_pngs_open_and_have_sane_sizes(written):
    out, _, paths = written
    for p in paths:
        if p.suffix != ".png":
            continue
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.format == "PNG"
            w, h = im.size
            assert 300 <= w <= 2500 and 250 <= h <= 2500, (p.name, im.size)
            px = np.asarray(im.convert("RGB"), dtype=np.float64)
        assert px.std() > 10, f"{p.name} looks blank"
    # the 50-class matrix gets a bigger canvas than the 5-class one
    small = Image.open(out / "plots/confusion_moves5.png").size
    big = Image.open(out / "plots/confusion_actions50.png").size
    assert big[0] > small[0] and big[1] > small[1]


def _dark_blue(path) -> np.ndarray:
    px = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)
    return (px[..., 2] - px[..., 0] > 60) & (px[..., 0] < 80)  # dark "Blues" cells, not black text


def _matrix_pixels(path) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of dark-blue pixels of the matrix, dropping the colour bar (the right-most block
    of dark-blue columns, separated from the matrix by a white gap)."""
    ys, xs = np.nonzero(_dark_blue(path))
    cols = np.unique(xs)
    breaks = np.nonzero(np.diff(cols) > 5)[0]
    cut = cols[breaks[-1]] if breaks.size else cols.max()
    keep = xs <= cut
    return xs[keep], ys[keep]


def test_confusion_pixels_follow_the_diagonal(tmp_path):
    """A perfect classifier: dark cells on the diagonal only; the mirrored matrix on the anti-diagonal."""
    n = 4
    names = [f"c{i}" for i in range(n)]
    xs, ys = _matrix_pixels(R.plot_confusion(tmp_path / "eye.png", (np.eye(n) * 10).astype(int), names))
    assert xs.size > 2000  # four dark cells
    assert np.corrcoef(xs, ys)[0, 1] > 0.9  # 4 square blocks on the diagonal: (n*n-1)/(n*n) = 0.94
    # the upper-right and lower-left quarters of the matrix hold no dark pixels (3 px margin for the
    # anti-aliased edge where two diagonal cells touch)
    xm, ym = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    assert ((xs > xm + 3) & (ys < ym - 3)).sum() == 0 and ((xs < xm - 3) & (ys > ym + 3)).sum() == 0
    xs, ys = _matrix_pixels(
        R.plot_confusion(tmp_path / "anti.png", np.fliplr(np.eye(n) * 10).astype(int), names)
    )
    assert np.corrcoef(xs, ys)[0, 1] < -0.9
    # rows are normalised: a 1-of-1 row is as dark as a 10-of-10 row; an empty row stays white
    cm = np.eye(n, dtype=int) * 10
    cm[1, 1], cm[2, 2] = 1, 0
    p = R.plot_confusion(tmp_path / "uneven.png", cm, names)
    xs2, _ = _matrix_pixels(p)
    assert 0.6 < xs2.size / xs.size < 0.9  # three dark cells of four


def test_report_contents(written):
    out, results, _ = written
    md = (out / "report.md").read_text()
    # header
    for s in ("demo", "runs/demo/pretrain", "run", "sha256:abcd1234ef567890", "21.9M", "21,874,560", "-1"):
        assert s in md, s
    # summary numbers as percentages, protocol, selected hyperparameters
    top1 = {name: f"{100 * ds['top1']:.1f}%" for name, ds in results["datasets"].items()}
    for s in (*top1.values(), "99.5%", "81.0%", "89.0%", "16 × 8 × 3", "16 × 2 × 3"):
        assert s in md, s
    for name, ds in results["datasets"].items():  # selected lr / wd in the summary row
        row = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {ds['selected']['lr']:g} | {ds['selected']['wd']:g} |" in row, row
    for ds in results["datasets"].values():  # fractions never leak into the text
        assert f"{ds['top1']:.3f}" not in md and str(ds["top1"]) not in md
    # the selection rule is visible; best-on-val is flagged as optimistic, held-out is not
    assert "held-out 10% of train" in md
    assert "best on val" in md and "optimistic" in md.lower()
    summary = md.split("## Low-shot")[0]
    row5 = next(line for line in summary.splitlines() if line.startswith("| moves5"))
    row50 = next(line for line in summary.splitlines() if line.startswith("| actions50"))
    assert "optimistic" not in row5 and "optimistic" in row50
    # NaN mean class acc is shown as missing, never as nan
    assert "nan" not in md.lower().replace("nanosecond", "")
    # low-shot table (mean ± std over seeds), comparisons table
    assert "## Low-shot" in md and "41.0 ± 3.0%" in md and "55.1 ± 2.1%" in md
    assert "## Comparisons" in md and "82.3 ± 1.2%" in md and "31.0 ± 2.0%" in md and "-51.3 pp" in md
    # the grid table ticks the selected head: one tick per dataset
    assert md.count("| ✔ |") == 2
    # per-dataset sections: grid table with the selected head, per-class accuracy
    assert "### moves5" in md and "### actions50" in md
    assert "Hyperparameter grid" in md and "✔" in md
    for name in ("walking", "running", "jumping", "waving", "clapping"):
        assert name in md
    a50 = md.split("### actions50")[1]
    assert "Top 5:" in a50 and "Bottom 5:" in a50
    assert "action_07" in a50  # class without val clips is named
    assert sum(f"action_{i:02d}" in a50 for i in range(50)) <= 11  # only extremes (+ the missing one)
    assert "Failed videos" in a50 and "Failed videos" not in md.split("### actions50")[0]
    # links to every PNG, all resolving
    for png in (
        "plots/comparison.png",
        "plots/confusion_moves5.png",
        "plots/curves_moves5.png",
        "plots/confusion_actions50.png",
        "plots/curves_actions50.png",
    ):
        assert f"]({png})" in md, png
        assert (out / png).is_file()


def test_results_json_round_trips_with_nan_as_null(written):
    out, results, _ = written
    text = (out / "results.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["datasets"]["actions50"]["mean_class_acc"] is None
    assert data["datasets"]["actions50"]["per_class"][7] is None
    assert all(g["holdout_top1"] is None for g in data["datasets"]["actions50"]["grid"])
    assert data["datasets"]["moves5"]["top1"] == results["datasets"]["moves5"]["top1"]
    assert data["datasets"]["moves5"]["confusion"] == results["datasets"]["moves5"]["confusion"]
    assert data["comparisons"] == results["comparisons"]
    assert data["encoder"] == results["encoder"]
    # sorted keys
    assert list(data) == sorted(data)
    assert list(data["datasets"]["moves5"]) == sorted(data["datasets"]["moves5"])


def test_write_results_plain_json_from_numpy(tmp_path):
    res = {"b": np.float32(0.5), "a": np.arange(3), "c": {5: float("inf"), "x": (np.int64(2), float("nan"))}}
    path = R.write_results(tmp_path, res)
    assert json.loads(path.read_text()) == {"a": [0, 1, 2], "b": 0.5, "c": {"5": None, "x": [2, None]}}
    R.write_results(tmp_path, {"a": 1})  # overwrite in place
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["results.json"]


def test_report_without_plots_or_optional_parts(tmp_path):
    res = make_results()
    del res["comparisons"]
    for ds in res["datasets"].values():
        ds["low_shot"] = {}
    path = R.write_report(tmp_path, res)
    md = path.read_text()
    assert "## Low-shot" not in md and "## Comparisons" not in md
    assert ".png" not in md  # no dead links when the plots were not written
    assert f"{100 * res['datasets']['moves5']['top1']:.1f}%" in md


def test_optimistic_detection():
    assert R.is_optimistic({"selection_rule": "best on val"})
    assert R.is_optimistic({"selection_rule": "best_on_val"})
    assert R.is_optimistic({"protocol": {"selection": "best_on_val"}, "selection_rule": "whatever"})
    assert not R.is_optimistic({"selection_rule": "held-out 10% of train"})
    assert not R.is_optimistic({"protocol": {"selection": "holdout"}})


def test_chosen_index_matches_grid():
    ds = make_results()["datasets"]["moves5"]
    i = R.chosen_index(ds)
    assert ds["grid"][i]["lr"] == ds["selected"]["lr"] and ds["grid"][i]["wd"] == ds["selected"]["wd"]
    assert (
        R.chosen_index({"selected": {"lr": 1.0000001e-3, "wd": 0.1}, "grid": ds["grid"]}) == 5
    )  # float noise
    assert R.chosen_index({"selected": {}, "grid": ds["grid"]}) is None


def test_plot_confusion_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError):
        R.plot_confusion(tmp_path / "x.png", [[1, 2, 3], [4, 5, 6]], ["a", "b"])
    with pytest.raises(ValueError):
        R.plot_confusion(tmp_path / "x.png", np.eye(3), ["a", "b"])
    assert not (tmp_path / "x.png").exists()


def test_learning_curve_tolerates_single_head_and_no_choice(tmp_path):
    curves = {"epoch": [1, 2, 3], "train_loss": [2.0, 1.5, 1.2], "val_top1": [0.2, 0.4, 0.5]}
    p = R.plot_learning_curve(tmp_path / "c.png", curves, None)
    with Image.open(p) as im:
        assert im.size[0] > 300


def test_comparison_computes_std_from_runs(tmp_path):
    p = R.plot_comparison(tmp_path / "cmp.png", [{"label": "a", "dataset": "d", "runs": [0.4, 0.5, 0.6]}])
    with Image.open(p) as im:
        assert im.format == "PNG"
