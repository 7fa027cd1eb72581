"""LightningModule adapter around any training objective (``vjepa_pipeline.objectives``).

A training step reads top to bottom: the objective's forward (``objective.step(batch)`` ->
loss + named terms) -> Lightning's backward -> non-finite check and gradient norm -> optimizer
step -> ``objective.after_optimizer_step`` (the EMA target moves once per *optimizer* step, not
per micro-batch) -> one :class:`StepRecord` published as ``step_record`` for the callbacks
(metrics, checkpoints, preemption, probes), which read it after the step.

The objective's frozen networks (the V-JEPA EMA target) are deliberately not registered
submodules: strategies that cast modules (DeepSpeed bf16) would otherwise cast them too, and
updates of (1 - m) x diff then round to zero. They are moved to the device here and saved /
restored through the checkpoint hooks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import lightning as L
import torch
import torch.distributed as dist

from ..config import config_to_dict
from ..data.batch import ClipBatch
from ..models.collapse import collapse_stats
from ..models.optim import apply_schedules, build_adamw
from ..objectives import Objective, build_objective

CHECKPOINT_FORMAT_VERSION = 1
# Top-level keys of a Lightning checkpoint (and ours): frozen networks are stored beside them.
RESERVED_CHECKPOINT_KEYS = {
    "epoch", "global_step", "pytorch-lightning_version", "state_dict", "loops", "callbacks", "optimizer_states",
    "lr_schedulers", "hparams_name", "hyper_parameters", "datamodule_hparams_name", "datamodule_hyper_parameters",
    "vjepa",
}


class TrainingStopped(RuntimeError):
    """Training cannot continue (non-finite loss); the message says what to do."""


@dataclass
class StepAccumulator:
    """Sums over the micro-batches of one optimizer step."""

    micro: int = 0
    loss: float = 0.0
    terms: dict[str, float] = field(default_factory=dict)
    clips: int = 0
    flops: int = 0
    tokens: int = 0
    wait: float = 0.0
    t0: float | None = None
    bad: bool = False
    grad_norm: float = float("nan")
    loader: dict | None = None
    collapse: dict | None = None
    # Videos per mixture source summed over the ranks (recomputed from this rank's loader["sources"] by
    # every all-reduce of the step, so a hook that runs per micro-batch does not count twice).
    global_sources: dict | None = None

    def add(self, out, batch: ClipBatch, accumulate: int) -> None:
        loss = float(out.loss.detach())
        self.bad |= not math.isfinite(loss)
        self.loss += loss / accumulate
        for k, v in out.terms.items():
            self.terms[k] = self.terms.get(k, 0.0) + v / accumulate
        self.micro += 1
        self.clips += batch.size
        self.flops += out.flops
        self.tokens += out.tokens
        if batch.stream is not None:
            sources = dict((self.loader or {}).get("sources") or {})
            for name, n in (getattr(batch.stream, "sources", None) or {}).items():
                sources[name] = sources.get(name, 0) + n  # videos per mixture source, over the micro-batches
            self.loader = {"attempts": batch.stream.attempts, "failures": batch.stream.failures}
            if sources:
                self.loader["sources"] = sources


def step_record(step: int, acc: StepAccumulator, group: dict, extra: dict[str, float], now: float) -> dict:
    """The per-optimizer-step record the callbacks read (keys documented in train/metrics.py)."""
    record = {
        "step": step, "loss": acc.loss, "loss_mask": [v for k, v in acc.terms.items() if k.startswith("loss_mask_")],
        "lr": group["lr"], "weight_decay": group["weight_decay"], **extra,
        "grad_norm": acc.grad_norm, "clips": acc.clips, "tokens": acc.tokens, "data_wait_s": acc.wait,
        "step_time_s": now - (acc.t0 or now), "flops": acc.flops, "loader": dict(acc.loader or {}),
    }
    if acc.global_sources is not None:  # the realised mixture of every rank, not this one's alone
        record["loader"]["sources"] = acc.global_sources
    record.update({k: v for k, v in acc.terms.items() if not k.startswith("loss_mask_")})
    if acc.collapse is not None:
        record["collapse"] = acc.collapse
    return record


class ObjectiveModule(L.LightningModule):
    def __init__(self, cfg, last_checkpoint: str | None = None, objective: Objective | None = None):
        super().__init__()
        self.cfg = cfg
        self.total_steps = cfg.train.max_steps
        self.accumulate = cfg.train.accumulate_grad_batches
        objective = objective or build_objective(cfg)
        clash = RESERVED_CHECKPOINT_KEYS & set(objective.frozen_networks())
        if clash:
            raise ValueError(f"frozen network name(s) {sorted(clash)} collide with checkpoint keys; rename them")
        object.__setattr__(self, "objective", objective)  # not a submodule: see the module docstring
        for name, net in objective.trainable_networks().items():
            self.add_module(name, net)  # checkpoint keys stay `encoder.*`, `predictor.*`
        self.last_checkpoint = last_checkpoint
        self.step_record: dict = {}
        self._acc = StepAccumulator()
        self._batch_end_time: float | None = None
        self._nan_skips = 0

    @property
    def target_encoder(self) -> torch.nn.Module:
        """The network frozen evaluation reads: the EMA target when the objective has one, else
        its (online) encoder."""
        for networks in (self.objective.frozen_networks(), self.objective.trainable_networks()):
            for name in ("target_encoder", "encoder"):
                if name in networks:
                    return networks[name]
        raise AttributeError(f"objective {self.cfg.objective.kind!r} has no encoder to evaluate")

    def compile_networks(self) -> None:
        for name, net in self.objective.trainable_networks().items():
            compiled = torch.compile(net)
            self.objective.replace_network(name, compiled)
            setattr(self, name, compiled)

    # ---- setup ---------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.objective.setup(self.device, rank=self.global_rank)

    def configure_optimizers(self):
        return build_adamw(list(self.objective.trainable_networks().values()), self.cfg.optim)

    def _optimizer(self):
        opt = self.optimizers()
        return opt.optimizer if hasattr(opt, "optimizer") else opt

    # ---- the step ------------------------------------------------------------------------
    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        acc = self._acc
        if acc.micro == 0:
            acc.t0 = now if self._batch_end_time is None else self._batch_end_time
            apply_schedules(self._optimizer(), self.cfg.optim, self.trainer.global_step, self.total_steps)
        if self._batch_end_time is not None:
            acc.wait += now - self._batch_end_time

    def training_step(self, batch: ClipBatch, batch_idx: int):
        out = self.objective.step(batch)
        if self.cfg.logging.trace_sample_keys and batch.stream is not None:
            self._trace_keys(batch.stream.step, batch.keys)
        acc = self._acc
        acc.add(out, batch, self.accumulate)
        next_step = self.trainer.global_step + 1
        if (acc.micro == self.accumulate and out.features is not None
                and (next_step % self.cfg.train.stats_every_steps == 0 or next_step == 1)):
            acc.collapse = collapse_stats(out.features)
        self.log("loss", out.loss.detach(), prog_bar=True, logger=False)
        return out.loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """Runs after backward, before clipping and the step: agree across ranks on non-finite
        losses, apply the NaN policy, and measure the (pre-clip) gradient norm."""
        # One all-reduce: [non-finite loss on any rank, videos per mixture source summed over ranks].
        names = [src.label(i) for i, src in enumerate(self.cfg.data.sources)]
        local = ((self._acc.loader or {}).get("sources") or {}) if names else {}
        agreed = torch.tensor([float(self._acc.bad), *(float(local.get(n, 0)) for n in names)], device=self.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(agreed, op=dist.ReduceOp.SUM)
        bad = agreed[0]
        if names:  # the realised mixture (mix/<name>) counts every rank's videos, not the logging rank's
            self._acc.global_sources = {n: int(c) for n, c in zip(names, agreed[1:].tolist()) if c}
        params = [p for p in self.parameters() if p.grad is not None]
        if bad.item() > 0:
            self._nan_skips += 1
            where = self.last_checkpoint or "none yet"
            if self.cfg.train.nan_policy == "stop" or self._nan_skips > self.cfg.train.max_nan_skips:
                raise TrainingStopped(
                    f"non-finite loss at step {self.trainer.global_step + 1} "
                    f"({self._nan_skips} consecutive); last good checkpoint: {where}. Lower optim.lr, check the "
                    "data, or set train.nan_policy=skip to skip isolated spikes")
            for p in params:  # AdamW skips parameters without gradients: the step is a no-op
                p.grad = None
            self._acc.grad_norm = float("nan")
            return
        self._nan_skips = 0
        norms = torch._foreach_norm([p.grad.detach().float() for p in params]) if params else []
        self._acc.grad_norm = float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # Runs before any callback's on_train_batch_end, so checkpoints and metrics see this step.
        # Lightning increments global_step after this hook; the step just taken is global_step + 1.
        # (Strategies that call this hook per micro-batch are filtered by the micro-batch count.)
        if self._acc.micro >= self.accumulate:
            self._after_optimizer_step(self.trainer.global_step + 1)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self._batch_end_time = time.perf_counter()

    def _after_optimizer_step(self, step: int) -> None:
        """Once per optimizer step: the objective's post-step update, then the step record."""
        extra = self.objective.after_optimizer_step(step)
        group = self._optimizer().param_groups[0]
        self.step_record = step_record(step, self._acc, group, extra, time.perf_counter())
        self._acc = StepAccumulator()

    def _trace_keys(self, step: int, keys: list[str]) -> None:
        from pathlib import Path

        path = Path(self.cfg.train.run_dir) / self.cfg.name / "sample_keys" / f"rank_{self.global_rank}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(f"{step} {' '.join(keys)}\n")

    # ---- checkpoints ---------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint.update(self.objective.frozen_state_dict())
        checkpoint["vjepa"] = {"format_version": CHECKPOINT_FORMAT_VERSION, "config": config_to_dict(self.cfg)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        try:
            self.objective.load_frozen_state_dict(checkpoint)
        except KeyError as missing:
            raise TrainingStopped(f"checkpoint has no {missing.args[0]}: it was not written by vjepa pretrain "
                                  f"with the {type(self.objective).__name__} objective") from None
