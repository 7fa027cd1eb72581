"""`vjepa demo surprise`: intuitive physics of the demo's checkpoints, pretrained vs random init.

Generates the violation-of-expectation set in the demo's world (:mod:`.violations`), shards it with
the shard builder, and scores it with ``vjepa eval surprise``'s machinery for every pretrained seed
of a finished ``vjepa demo`` working folder and for the same architecture randomly initialised with
that seed. Writes ``<out>/surprise/{violations, shards, seed<k>/<pretrained|random_init>/,
summary.json, summary.md}``; shards are rebuilt when the set's parameters (``--pairs``) change, and finished
reports are reused only for the same checkpoint fingerprint, stride and violation set.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

from ..errors import UsageError
from ..utils.atomic import atomic_write_text, write_json

LABELS = ("pretrained", "random init")


def _runs(out: Path, seeds: list[int] | None) -> list[tuple[int, Path]]:
    runs = sorted((int(p.name.removeprefix("pretrain_seed")), p) for p in (out / "runs").glob("pretrain_seed*")
                  if p.name.removeprefix("pretrain_seed").isdigit() and (p / "checkpoints").is_dir())
    if seeds:
        runs = [r for r in runs if r[0] in seeds]
    if not runs:
        raise UsageError(f"{out}/runs: no finished demo pretraining run (pretrain_seed<k>/checkpoints); "
                         f"run `vjepa demo --out {out}` first")
    return runs


def violation_shards(work: Path, pairs: int, seed: int = 0) -> tuple[Path, dict]:
    """(shard folder, generator parameters) of the demo's violation set under ``work``: the set is
    (re)written for these parameters, and the shards are rebuilt whenever the parameters recorded
    with them (``shards.params.json``, written after a finished build) differ or the index is missing."""
    from .violations import build_violation_shards, write_violation_set

    params = write_violation_set(work / "violations", pairs_per_violation=pairs, seed=seed, progress=False)["params"]
    shards, record = work / "shards", work / "shards.params.json"
    try:
        built = json.loads(record.read_text()) if record.is_file() else None
    except ValueError:  # a damaged record: rebuild
        built = None
    if built != params or not (shards / "index.json").is_file():
        record.unlink(missing_ok=True)
        shutil.rmtree(shards, ignore_errors=True)  # ours alone (the demo's working folder)
        build_violation_shards(work / "violations", shards)
        write_json(record, params, indent=1)
    return shards, params


def cached_results(dest: Path, fingerprint: str, stride: int, params: dict) -> dict | None:
    """``dest/results.json`` when it scored this checkpoint, stride and violation set with the current
    results layout; else None."""
    from ..eval.surprise_report import RESULTS_VERSION

    try:
        cached = json.loads((dest / "results.json").read_text()) if (dest / "results.json").is_file() else None
    except ValueError:
        return None
    if (isinstance(cached, dict) and cached.get("results_version") == RESULTS_VERSION
            and cached.get("fingerprint") == fingerprint and cached.get("stride") == stride
            and cached.get("violation_params") == params):
        return cached
    return None


def run_demo_surprise(out: str | Path = "runs/demo", seeds: list[int] | None = None, pairs: int = 40,
                      stride: int = 1, device: str = "cpu", log=print, set_seed: int = 0) -> dict:
    """Score pretrained and random-init models of every demo seed; returns summary.json's content.
    ``set_seed``: the violation set's seed; a set other than 0 (held out) lives in ``surprise_set<seed>``."""
    from ..config import load_config
    from ..eval.surprise import load_surprise_model, random_surprise_model
    from ..eval.surprise_data import pairs_from_shards
    from ..eval.surprise_report import margin_text, run_surprise, summarize_runs

    out = Path(out)
    runs = _runs(out, seeds)
    work = out / ("surprise" if set_seed == 0 else f"surprise_set{set_seed}")
    shards, params = violation_shards(work, pairs, set_seed)
    pair_list, skipped = pairs_from_shards(shards)
    for pair in pair_list:  # every model scores the same videos: decode each once (~150 MB for 400 clips)
        for ref in (pair.possible, pair.impossible):
            ref.load = functools.cache(ref.load)
    log(f"violation set: {len(pair_list)} pairs ({len(skipped)} skipped) in {shards}")
    results: dict[str, list[dict]] = {label: [] for label in LABELS}
    for seed, run in runs:
        cfg = load_config(run / "config.yaml")
        models = {"pretrained": lambda run=run: load_surprise_model(str(run)),
                  "random init": lambda cfg=cfg, seed=seed: random_surprise_model(
                      cfg.model, cfg.data.num_frames, cfg.data.crop_size, seed, cfg.data.frame_step)}
        for label in LABELS:
            model = models[label]()
            dest = work / f"seed{seed}" / label.replace(" ", "_")
            res = cached_results(dest, model.fingerprint, stride, params)
            if res is None:
                res = run_surprise(model, pair_list, skipped, dest, str(shards), model.frame_step, stride,
                                   device=device, progress=False, log=lambda *a: None)
                res["violation_params"] = params  # part of the cache key: another --pairs rescores
                write_json(dest / "results.json", res, indent=1)
            results[label].append(res)
            per = ", ".join(f"{k} {100 * v['relative_accuracy']:.0f}%" for k, v in res["per_violation"].items())
            quad = res.get("quadruplets")
            quad_text = "" if not quad else (f"  quadruplets {100 * quad['quadruplet_accuracy']:.0f}% "
                                             f"(margin {margin_text(quad['margin'])})")
            log(f"  seed {seed} {label:<11} relative accuracy {100 * res['relative_accuracy']:5.1f}%  "
                f"AUROC {res['auroc']:.3f}  ({per}){quad_text}")
    summary = {"seeds": [s for s, _ in runs], "set_seed": set_seed, "pairs": results["pretrained"][0]["pairs"],
               "context_frames": results["pretrained"][0]["primary"]["context_frames"], "stride": stride,
               **{label: summarize_runs(rs) for label, rs in results.items()}}
    write_json(work / "summary.json", summary, indent=1)
    atomic_write_text(work / "summary.md", summary_markdown(summary))
    log("\n" + summary_markdown(summary))
    return summary


def summary_markdown(summary: dict) -> str:
    """Relative accuracy (mean +- std over seeds) per violation type, pretrained vs random init."""
    kinds = sorted(summary["pretrained"]["per_violation"])
    quads = all("quadruplets" in summary[label] for label in LABELS)
    held_out = f", violation set seed {summary['set_seed']}" if summary.get("set_seed") else ""
    lines = [f"Relative accuracy, mean +- std over seeds {summary['seeds']} ({summary['pairs']} pairs{held_out}; max surprise "
             f"over time, {summary['context_frames']} context frames; chance 50 %)"
             + ("; last columns: the vanish / appear quadruplets (mean surprise over time, where the object's "
                "content cancels), their accuracy and margin (how much more surprising the impossible movies are, "
                "in % of the possible ones)" if quads else ""), "",
             "| model | all | " + " | ".join(kinds) + " | AUROC |" + (" quadruplets | margin |" if quads else ""),
             "|---|---|" + "---|" * len(kinds) + "---|" + ("---|---|" if quads else "")]

    def margin_cell(stat):
        return "n/a" if stat is None else f"{100 * stat['mean']:+.3f} +- {100 * stat['std']:.3f} %"

    def cell(stat):
        return f"{100 * stat['mean']:.1f} +- {100 * stat['std']:.1f}"
    for label in LABELS:
        s = summary[label]
        lines.append(f"| {label} | {cell(s['relative_accuracy'])} | "
                     + " | ".join(cell(s["per_violation"][k]["relative_accuracy"]) for k in kinds)
                     + f" | {s['auroc']['mean']:.3f} +- {s['auroc']['std']:.3f} |"
                     + (f" {cell(s['quadruplets']['quadruplet_accuracy'])} | {margin_cell(s['quadruplets']['margin'])} |"
                        if quads else ""))
    return "\n".join(lines) + "\n"


__all__ = ["cached_results", "run_demo_surprise", "summary_markdown", "violation_shards"]
