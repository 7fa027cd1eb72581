"""Run an evaluation suite on one frozen encoder: extract features per dataset, train the probe
grid, pick a head by the stated rule, low-shot runs, save probes, write the report."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import UsageError
from ..utils.atomic import atomic_torch_save
from .encoders import FrozenEncoder, LoadedEncoder, load_encoder
from .features import (
    bad_labels_message,
    dataset_classes,
    eval_data_config,
    extract_split,
    label_names,
    video_names,
)
from .hf_classifier import GivenHead
from .results import DatasetResult, EncoderInfo, LowShotResult, SuiteResults
from .suite import SuiteConfig, probe_protocol


def _frac(percent):
    """The probe code reports percentages; results.json stores fractions."""
    return None if percent is None else percent / 100.0


def _log(msg: str) -> None:
    print(msg, flush=True)


def check_geometry(enc: LoadedEncoder, suite: SuiteConfig, datasets) -> None:
    """Clips the encoder cannot tile (crop not divisible by its patch size, frames not divisible by
    its tubelet size) are a usage error, found before any video is read."""
    patch, tubelet = enc.encoder.patch_size, enc.encoder.tubelet_size
    for i, ds in enumerate(suite.datasets):
        if not any(ds is d for d in datasets):
            continue
        if ds.crop_size % patch:
            raise UsageError(f"datasets[{i}].crop_size: {ds.crop_size} px is not divisible by the encoder's patch "
                             f"size {patch} ({ds.name})")
        if ds.num_frames % tubelet:
            raise UsageError(f"datasets[{i}].num_frames: {ds.num_frames} frames are not divisible by the encoder's "
                             f"tubelet size {tubelet} ({ds.name})")


def dataset_features(enc: LoadedEncoder, suite: SuiteConfig, ds, device: str, log=_log,
                     classes: tuple[int, str] | None = None):
    """Train and val features of one dataset. With ``classes`` = (num_classes, where that count
    comes from), a video labelled outside [0, num_classes) is a UsageError naming it."""
    frozen = FrozenEncoder(enc.encoder.to(device), suite.layers)
    data_cfg = eval_data_config(ds, suite)
    num_classes = classes[0] if classes else None

    def split(name: str, path: str, segments: int, views: int):
        out = extract_split(frozen, data_cfg, path, segments, views, suite.feature_batch_size, device,
                            single_frame=ds.single_frame, num_classes=num_classes)
        if out.bad_labels:
            names = video_names(path, ds.source, [k for k, _ in out.bad_labels[:5]])
            raise UsageError(bad_labels_message(ds.name, name, out.bad_labels, *classes, names=names))
        return out

    train = split("train", ds.train, ds.train_segments, ds.train_views)
    val = split("val", ds.val, ds.segments, ds.views)
    clips = len(train) * ds.train_segments * ds.train_views + len(val) * ds.segments * ds.views
    log(f"[{ds.name}] features: {len(train)} train / {len(val)} val videos ({train.failed + val.failed} failed), "
        f"{clips / max(train.seconds + val.seconds, 1e-9):.1f} clips/s")
    return train, val


def evaluate_dataset(enc: LoadedEncoder, suite: SuiteConfig, ds, out_dir: Path, device: str, val_only: bool = False,
                     log=_log) -> DatasetResult:
    from .grid import evaluate_head, train_probe_grid
    from .lowshot import low_shot_indices, summarize

    num_classes, names, origin = dataset_classes(ds)
    train, val = dataset_features(enc, suite, ds, device, log, classes=(num_classes, origin))
    if len(val) == 0 or (len(train) == 0 and not val_only):
        raise UsageError(f"[{ds.name}] no readable videos (train {len(train)}, val {len(val)}; "
                         f"{train.failed + val.failed} failed): check the paths")
    probe_path = out_dir / "probes" / f"{ds.name}.pt"
    protocol = {"num_frames": ds.num_frames, "frame_step": ds.frame_step, "target_fps": ds.target_fps,
                "crop_size": ds.crop_size, "segments": ds.segments, "views": ds.views, **probe_protocol(ds.probe)}
    t0 = time.perf_counter()
    if val_only:
        saved = torch.load(probe_path, map_location="cpu", weights_only=True)
        metrics = evaluate_head(saved["head_state"], saved["head_config"], val.feats.float(), val.labels,
                                ds.probe.segment_mode, device)
        entry = {"selected": saved.get("selected"), "selection_rule": saved.get("selection_rule")}
    else:
        result = train_probe_grid(train.feats.float(), train.labels, val.feats.float(), val.labels, num_classes,
                                  ds.probe, seed=suite.seed, device=device)
        metrics = {"top1": result.top1, "top5": result.top5, "per_class": result.per_class,
                   "mean_class_acc": result.mean_class_acc, "confusion": result.confusion}
        atomic_torch_save({"head_state": result.head_state, "head_config": result.head_config,
                           "selected": result.chosen, "selection_rule": result.selection_rule,
                           "protocol": protocol, "encoder_fingerprint": enc.fingerprint}, probe_path)
        entry = {"selected": result.chosen, "selection_rule": result.selection_rule,
                 "grid": [{k: _frac(v) if k.endswith("top1") else v for k, v in row.items()} for row in result.grid],
                 "curves": {k: (v if k in ("epoch", "train_loss") else
                                [None if row is None else [_frac(x) for x in row] for row in v])
                            for k, v in result.curves.items()},
                 "probe_checkpoint": str(probe_path.relative_to(out_dir))}
    log(f"[{ds.name}] top-1 {metrics['top1']:.1f}%  top-5 {metrics['top5']:.1f}%  "
        f"({time.perf_counter() - t0:.1f} s probe{' re-evaluation' if val_only else ' grid'})")
    low_shot: dict[str, LowShotResult] = {}
    if not val_only and ds.low_shot:
        # k samples per class leave nothing to hold out: low-shot heads use the hyper-parameters
        # selected on the full training split (no selection on val).
        fixed = dataclasses.replace(ds.probe, selection="best_on_val")
        settings = [(result.chosen["lr"], result.chosen["wd"])] if "lr" in result.chosen else None
        for k in ds.low_shot:
            runs = []
            for seed in ds.low_shot_seeds:
                idx = low_shot_indices(train.labels, k, seed)
                r = train_probe_grid(train.feats[idx].float(), train.labels[idx], val.feats.float(), val.labels,
                                     num_classes, fixed, seed=seed, device=device, settings=settings)
                runs.append(_frac(r.top1))
            stats = summarize(runs)
            low_shot[str(k)] = LowShotResult(stats["mean"], stats["std"], stats["values"])
            log(f"[{ds.name}] {k}-shot: {100 * low_shot[str(k)].mean:.1f} +- {100 * low_shot[str(k)].std:.1f}%")
    return DatasetResult(protocol=protocol, num_train=len(train), num_val=len(val), num_classes=num_classes,
                         class_names=names, failed_videos=train.failed + val.failed, top1=_frac(metrics["top1"]),
                         top5=_frac(metrics["top5"]), mean_class_acc=_frac(metrics["mean_class_acc"]),
                         per_class=[_frac(x) for x in metrics["per_class"]], confusion=metrics["confusion"],
                         low_shot=low_shot, **entry)


def evaluate_given_head(enc: LoadedEncoder, suite: SuiteConfig, ds, head: GivenHead, device: str,
                        log=_log) -> DatasetResult:
    """Evaluate a trained head as it is (``vjepa eval --head``): validation features only, no probe
    training, no selection. The head must read this encoder's features and this dataset's classes."""
    from ..errors import CheckpointError
    from .grid import evaluate_head

    frozen = FrozenEncoder(enc.encoder.to(device), suite.layers)
    cfg = head.head_config
    if cfg["dim"] != frozen.dim:
        raise CheckpointError(f"head {head.source} reads {cfg['dim']}-wide features; the encoder gives {frozen.dim} "
                              f"(layers {list(suite.layers)})")
    num_classes = cfg["num_classes"]
    if ds.num_classes is not None and ds.num_classes != num_classes:
        raise CheckpointError(f"[{ds.name}] has {ds.num_classes} classes, the head {head.source} {num_classes}")
    val = extract_split(frozen, eval_data_config(ds, suite), ds.val, ds.segments, ds.views, suite.feature_batch_size,
                        device, single_frame=ds.single_frame, num_classes=num_classes)
    if val.bad_labels:
        raise UsageError(bad_labels_message(ds.name, "val", val.bad_labels, num_classes,
                                            f"the head {head.source} has {num_classes} classes",
                                            video_names(ds.val, ds.source, [k for k, _ in val.bad_labels[:5]])))
    if len(val) == 0:
        raise UsageError(f"[{ds.name}] no readable validation videos ({val.failed} failed): check the paths")
    names = label_names(ds.val, num_classes, ds.source)
    names = names if len(names) == num_classes else (head.class_names or [str(i) for i in range(num_classes)])
    protocol = {"num_frames": ds.num_frames, "frame_step": ds.frame_step, "target_fps": ds.target_fps,
                "crop_size": ds.crop_size, "segments": ds.segments, "views": ds.views, "probe": cfg["kind"],
                "segment_mode": ds.probe.segment_mode, "head": head.source, "head_kind": head.kind}
    metrics = evaluate_head(head.head_state, cfg, val.feats.float(), val.labels, ds.probe.segment_mode, device)
    log(f"[{ds.name}] given head: top-1 {metrics['top1']:.1f}%  top-5 {metrics['top5']:.1f}% ({len(val)} val videos)")
    return DatasetResult(protocol=protocol, num_train=0, num_val=len(val), num_classes=num_classes, class_names=names,
                         failed_videos=val.failed, top1=_frac(metrics["top1"]), top5=_frac(metrics["top5"]),
                         mean_class_acc=_frac(metrics["mean_class_acc"]),
                         per_class=[_frac(x) for x in metrics["per_class"]], confusion=metrics["confusion"],
                         selected=None, selection_rule=f"given head ({head.kind}: {Path(head.source).name}), not trained here")


def run_suite(suite: SuiteConfig, encoder_source: str, out_dir: str | Path, model_overrides: Sequence[str] = (),
              val_only: bool = False, datasets: Sequence[str] | None = None, device: str | None = None,
              encoder: LoadedEncoder | None = None, log=_log, head: GivenHead | None = None) -> dict:
    """Evaluate one encoder on the suite's (chosen) datasets, write the report under ``out_dir`` and
    return the results dict (what ``results.json`` holds: :meth:`SuiteResults.to_dict`). With
    ``head`` (a trained head, e.g. a Hugging Face classifier's), that head is evaluated as it is."""
    from .report import write_all

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out_dir = Path(out_dir)
    enc = encoder or load_encoder(encoder_source, model_overrides)
    log(f"encoder {enc.source} ({enc.kind}, {enc.params / 1e6:.2f}M params, {enc.fingerprint})")
    chosen = [d for d in suite.datasets if datasets is None or d.name in datasets]
    check_geometry(enc, suite, chosen)
    encoder_info = EncoderInfo(enc.source, enc.kind, enc.fingerprint, enc.params, list(suite.layers))
    results = SuiteResults(suite.name, encoder_info, created_by="vjepa-pipeline")
    for ds in chosen:
        results.datasets[ds.name] = (evaluate_given_head(enc, suite, ds, head, device, log) if head is not None
                                     else evaluate_dataset(enc, suite, ds, out_dir, device, val_only, log))
    out = results.to_dict()
    write_all(out_dir, out)
    return out
