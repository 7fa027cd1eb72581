"""The demo's report folder: results table, loss / collapse curves, per-class accuracy, a PCA
picture of patch features and the shards' contact sheet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..utils.atomic import atomic_path, atomic_write_text, write_json
from ..utils.jsonl import read_jsonl
from .plan import pretrain_config


def plot_training_curves(path: Path, runs: dict[int, list[dict]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.6), dpi=110)
    axes = fig.subplots(1, 3)
    for seed, rows in runs.items():
        steps = [r["step"] for r in rows if r.get("loss") is not None]
        axes[0].plot(steps, [r["loss"] for r in rows if r.get("loss") is not None], label=f"seed {seed}")
        stats = [r for r in rows if r.get("collapse/target_std_mean") is not None]
        axes[1].plot([r["step"] for r in stats], [r["collapse/target_std_mean"] for r in stats], marker=".")
        axes[2].plot([r["step"] for r in stats], [r["collapse/pooled_rankme"] for r in stats], marker=".")
    for ax, title in zip(axes, ("JEPA loss (L1 in latent space)", "target feature std (collapse -> 0)",
                                "RankMe of clip embeddings")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimizer step", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


@torch.no_grad()
def plot_feature_pca(path: Path, encoder, shard_dir: Path, cfg, clips: int = 4) -> Path:
    """Patch features of a few clips projected on their 3 principal components, shown as RGB next
    to the frames: parts that move together get the same colour in a good encoder."""
    from PIL import Image

    from ..shards.decoders import get_decoder
    from ..models.inputs import normalize_clips
    from ..shards.format import iter_shard

    decoder = get_decoder("pyav")
    samples = []
    for tar in sorted(shard_dir.glob("*.tar")):
        for s in iter_shard(tar):
            samples.append(s)
            if len(samples) >= clips:
                break
        if len(samples) >= clips:
            break
    t, size = cfg.data.num_frames, cfg.data.crop_size
    frames = [torch.from_numpy(decoder.decode(s["mp4"], list(range(t)), s["json"]["num_frames"])) for s in samples]
    x = torch.stack([f[:, :size, :size] for f in frames])  # (B, T, H, W, C)
    tokens = encoder(normalize_clips(x))  # (B, N, D)
    b, n, d = tokens.shape
    flat = tokens.reshape(-1, d)
    flat = flat - flat.mean(0)
    _, _, v = torch.pca_lowrank(flat, q=3, center=False)
    proj = flat @ v[:, :3]
    proj = (proj - proj.min(0).values) / (proj.max(0).values - proj.min(0).values + 1e-6)
    gt, gh = t // cfg.model.tubelet_size, size // cfg.model.patch_size
    maps = proj.reshape(b, gt, gh, gh, 3)
    rows = []
    step = max(1, gt // 4)
    for i in range(b):
        cells = []
        for k in range(0, gt, step)[:4]:
            frame = x[i, k * cfg.model.tubelet_size].numpy()
            pca = (maps[i, k].numpy() * 255).astype(np.uint8)
            pca = np.asarray(Image.fromarray(pca).resize((size, size), Image.NEAREST))
            cells.append(np.concatenate([frame, pca], axis=0))
        rows.append(np.concatenate(cells, axis=1))
    image = Image.fromarray(np.concatenate(rows, axis=0)).resize((rows[0].shape[1] * 2, len(rows) * rows[0].shape[0] * 2),
                                                                 Image.NEAREST)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def save_json(path: Path, obj) -> None:
    write_json(path, obj, indent=1, default=str, newline=False)


def write_demo_report(plan, result: dict) -> dict:
    from ..eval.encoders import FrozenEncoder, load_encoder
    from ..eval.plots import plot_comparison
    from ..shards.inspect import inspect_shards

    out = plan.out / "report"
    out.mkdir(parents=True, exist_ok=True)
    metrics = {seed: read_jsonl(plan.out / "runs" / f"pretrain_seed{seed}" / "metrics.jsonl") for seed in plan.seeds}
    result["loss_first_last"] = {seed: [rows[0]["loss"], rows[-1]["loss"]] for seed, rows in metrics.items() if rows}
    save_json(out / "summary.json", result)
    paths = {"summary": out / "summary.json"}
    paths["curves"] = plot_training_curves(out / "training_curves.png", metrics)
    paths["comparison"] = plot_comparison(out / "comparison.png", result["comparisons"],
                                          title="demo: frozen attentive probe top-1 (mean +- std over seeds)")
    seed = plan.seeds[0]
    enc = load_encoder(plan.out / "runs" / f"pretrain_seed{seed}")
    paths["pca"] = plot_feature_pca(out / "feature_pca.png", FrozenEncoder(enc.encoder), plan.out / "shards" / "val",
                                    pretrain_config(plan, seed))
    sheet = inspect_shards(plan.out / "shards" / "val", decode=False, sheet_path=out / "contact_sheet.png",
                           sheet_samples=8)
    paths["contact_sheet"] = sheet.sheet_path
    lines = ["# vjepa demo report", "",
             f"Motion-defined classes: {', '.join(result['classes'])}. Seeds: {plan.seeds}; "
             f"{plan.steps} pretraining steps per seed; total {result['seconds']:.0f} s.", "",
             "| encoder | top-1 mean | std | runs |", "|---|---|---|---|"]
    for row in result["comparisons"]:
        runs = ", ".join(f"{100 * v:.1f}" for v in row["runs"])
        lines.append(f"| {row['label']} | {100 * row['top1']:.1f}% | {100 * row['top1_std']:.1f} | {runs} |")
    lines += ["", "Per-class top-1 (seed-averaged):", "", "| class | " + " | ".join(result["runs"]) + " |",
              "|---|" + "---|" * len(result["runs"])]
    classes = result["classes"]
    for c, name in enumerate(classes):
        cells = []
        for label in result["runs"]:
            vals = [r["per_class"][c] for r in result["runs"][label] if r["per_class"][c] is not None]
            cells.append(f"{100 * sum(vals) / len(vals):.0f}%" if vals else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "![training curves](training_curves.png)", "", "![comparison](comparison.png)", "",
              "![patch-feature PCA](feature_pca.png)", "", "![contact sheet](contact_sheet.png)", "",
              "Per-run eval reports (results.json, report.md, confusion matrices, learning curves): "
              + ", ".join(sorted({r["report"] for runs in result["runs"].values() for r in runs}))]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    paths["report"] = out / "report.md"
    return paths
