"""``vjepa eval world-model``: offline validation of a trained world model, as a table and a plot.

Loads the frozen encoder and the action-conditioned predictor of a run (or an exported file), reads
held-out trajectory shards in deterministic windows (:mod:`vjepa_pipeline.data.trajectory_eval`)
and measures the k-step latent prediction error against the two baselines of
:mod:`.world_model`. Writes ``results.json``, ``report.md`` and ``plots/world_model_errors.png``
(error per horizon, one line per method) under the output folder.

The rollout is fed the recorded states of frames 1 .. k-1, as the official training rollout does (not
integrated from the actions, as planning must): errors at k >= 2 are therefore a little optimistic
for open-loop use. A predictor is *useful* at horizon k when its error with the true actions is below
both baselines;
the report says so per horizon, and says plainly when it is not (e.g. a predictor that ignores its
actions scores the same with shuffled actions).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data.trajectory_eval import EvalWindows, trajectory_windows
from ..data.trajectory_stream import check_dataset_dims, dataset_dims
from ..errors import LoaderError
from ..utils.atomic import atomic_path, atomic_write_text, write_json
from .world_model import BASELINES, latent_prediction_errors

LABELS = {"true_actions": "predictor, true actions", "last_frame": "baseline: last frame stays",
          "shuffled_actions": "baseline: actions shuffled across the batch"}
PLOT = Path("plots") / "world_model_errors.png"


def validate_world_model(source: str, data: str, out: str | os.PathLike, horizons: Sequence[int] = (1, 2),
                         batch_size: int = 32, windows_per_sample: int = 4, device: str | None = None,
                         seed: int = 0, log=print) -> dict:
    """Run the validation and write the report; returns the results dict (also ``results.json``)."""
    from ..checkpoint.ac_checkpoint import load_world_model

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    wm = load_world_model(source, device=device)
    cfg = wm.config
    check_dataset_dims(dataset_dims(data), cfg.world_model, data)  # a data / model mismatch: one line, now
    horizons = sorted({int(k) for k in horizons})
    counts = EvalWindows()
    batches = trajectory_windows(data, horizons[-1] + 1, cfg.data.crop_size, batch_size, cfg.data.frame_step,
                                 cfg.data.target_fps, cfg.data.decoder, windows_per_sample=windows_per_sample,
                                 use_extrinsics=cfg.world_model.use_extrinsics, counts=counts,
                                 crop_ratio=cfg.data.crop_ratio)
    try:
        errors = latent_prediction_errors(wm.encoder, wm.predictor, batches, horizons,
                                          normalize_reps=cfg.world_model.normalize_reps, shuffle_seed=seed)
    except ValueError as exc:  # nothing (or one window) to evaluate, or samples too short for the horizon
        raise LoaderError(f"{data}: {counts.windows} windows of {horizons[-1] + 1} frames from {counts.samples} "
                          f"samples (skipped: {counts.skipped or 'none'}): {exc}") from None
    results = {
        "source": str(source), "data": str(data), "horizons": horizons, "trajectories": errors["trajectories"],
        "samples": counts.samples, "skipped": counts.skipped, "seed": seed,
        "errors": {name: {str(k): errors[name][k] for k in horizons} for name in BASELINES},
        "beats_baselines": {str(k): errors["true_actions"][k] < min(errors["last_frame"][k],
                                                                    errors["shuffled_actions"][k])
                            for k in horizons},
        "seconds": round(time.perf_counter() - t0, 2), "device": device,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results, indent=1)
    plot_errors(results, out / PLOT)
    atomic_write_text(out / "report.md", report_markdown(results))
    log(f"world model validation: {results['trajectories']} windows from {counts.samples} samples; "
        f"report {out / 'report.md'}")
    return results


def report_markdown(results: dict) -> str:
    """The table (one row per horizon, the best error in bold) and a one-line verdict per horizon."""
    e = results["errors"]
    lines = [f"# World model validation: {results['source']}", "",
             f"Held-out data: `{results['data']}`: {results['trajectories']} windows from {results['samples']} "
             f"samples (skipped: {results['skipped'] or 'none'}). Mean L1 latent error of the k-step rollout "
             "from frame 0 (lower is better).", "",
             "| horizon | " + " | ".join(LABELS[n] for n in BASELINES) + " | predictor below both baselines |",
             "|---|" + "---|" * (len(BASELINES) + 1)]
    for k in results["horizons"]:
        row = {n: e[n][str(k)] for n in BASELINES}
        best = min(row.values())
        cells = [f"**{v:.4f}**" if v == best else f"{v:.4f}" for v in row.values()]
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {'yes' if results['beats_baselines'][str(k)] else 'NO'} |")
    lines += ["", f"![errors per horizon]({PLOT.as_posix()})", ""]
    failing = [k for k in results["horizons"] if not results["beats_baselines"][str(k)]]
    if failing:
        lines.append(f"At horizon(s) {', '.join(map(str, failing))} the predictor is not below both baselines: "
                     "with shuffled actions close to true actions it is not using its actions; close to the "
                     "last frame it has not learnt the dynamics.")
    else:
        lines.append("The predictor is below both baselines at every horizon.")
    return "\n".join(lines) + "\n"


def plot_errors(results: dict, path: Path) -> Path:
    """Error per horizon, one line per method (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = results["horizons"]
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    styles = {"true_actions": "o-", "last_frame": "s--", "shuffled_actions": "^--"}
    for name in BASELINES:
        ax.plot(ks, [results["errors"][name][str(k)] for k in ks], styles[name], label=LABELS[name])
    ax.set_xlabel("horizon k (steps rolled out)")
    ax.set_ylabel("mean L1 latent error")
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("World model: k-step latent prediction error", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
