"""In-training k-NN probe: every N optimizer steps, the current EMA target encoder embeds a small
labelled set and a cosine k-NN classifier scores it, so representation quality is visible while
pretraining runs. Rank 0 only; the result goes to metrics.jsonl as ``probe/knn_top1``."""

from __future__ import annotations

import copy

import lightning as L
import torch

from ..eval.encoders import FrozenEncoder
from ..eval.features import extract_split, read_label_map
from ..eval.probes import knn_predict
from .metrics import MetricsWriter


class KNNProbeCallback(L.Callback):
    def __init__(self, data_cfg, train_path: str, val_path: str, every_steps: int, run_dir, k: int = 20,
                 temperature: float = 0.07):
        self.data_cfg, self.train_path, self.val_path = data_cfg, train_path, val_path
        self.every_steps, self.k, self.temperature = every_steps, k, temperature
        self.run_dir = run_dir
        self.history: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        record = getattr(pl_module, "step_record", {})
        step = record.get("step")
        if not trainer.is_global_zero or step is None or step % self.every_steps or record.get("_probed"):
            return
        record["_probed"] = True
        top1 = self.score(pl_module.target_encoder, pl_module.device)
        entry = {"step": step, "probe/knn_top1": top1}
        self.history.append(entry)
        writer = MetricsWriter(self.run_dir)
        writer.write(entry)
        writer.close()
        print(f"step {step} | in-training k-NN probe top-1 {100 * top1:.1f}%", flush=True)

    @torch.no_grad()
    def score(self, target_encoder, device) -> float:
        frozen = FrozenEncoder(copy.deepcopy(target_encoder).to(device))
        # the class count comes from the label map, not from the largest label seen: a label outside
        # the map is skipped (SplitFeatures.bad_labels) instead of growing the classifier
        label_map = read_label_map(self.train_path, self.data_cfg.source)
        classes = len(label_map) if label_map else None
        train = extract_split(frozen, self.data_cfg, self.train_path, 1, 1, 16, str(device), num_classes=classes)
        if classes is None:
            labels = train.labels[train.labels >= 0]
            classes = int(labels.max()) + 1 if len(labels) else 1
        val = extract_split(frozen, self.data_cfg, self.val_path, 1, 1, 16, str(device), num_classes=classes)
        pooled = lambda f: f.float().mean(dim=(1, 2, 3))  # noqa: E731  (M, S, V, N, D) -> (M, D)
        keep = train.labels >= 0  # unlabelled videos (-1) when there is no label map
        if not keep.any() or not len(val):
            return float("nan")
        train.feats, train.labels = train.feats[keep], train.labels[keep]
        probs = knn_predict(pooled(train.feats), train.labels, pooled(val.feats), classes, self.k, self.temperature)
        return float((probs.argmax(1) == val.labels).float().mean())
