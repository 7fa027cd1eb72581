"""LightningModule adapter around the pure-PyTorch V-JEPA objective.

A training step reads top to bottom: normalise clips on the device -> masks for this step ->
target encoder on the full clip (no grad, fp32 EMA weights) -> context encoder on kept tokens ->
predictor at masked tokens -> L1 loss. After each *optimizer* step (not micro-batch) the EMA target
moves once and a step record is published for the metrics callback.

The target encoder is deliberately not a registered submodule: strategies that cast modules
(DeepSpeed bf16) would otherwise cast it too, and updates of (1 - m) x diff then round to zero.
It is moved to the device here and saved / restored through the checkpoint hooks.
"""

from __future__ import annotations

import copy
import math
import time

import lightning as L
import torch
import torch.distributed as dist

from ..config import config_to_dict
from ..data.synthetic import normalize_clips
from ..models.build import build_encoder, build_predictor
from ..models.collapse import collapse_stats
from ..models.flops import ModelDims, train_step_flops
from ..models.jepa import ema_momentum, ema_update, jepa_forward, param_groups
from ..models.masks import MaskCollator, grid_for, specs_from_config
from .schedules import apply_schedules

CHECKPOINT_FORMAT_VERSION = 1


class TrainingStopped(RuntimeError):
    """Training cannot continue (non-finite loss); the message says what to do."""


class JEPAModule(L.LightningModule):
    def __init__(self, cfg, last_checkpoint: str | None = None):
        super().__init__()
        self.cfg = cfg
        self.total_steps = cfg.train.max_steps
        self.accumulate = cfg.train.accumulate_grad_batches
        torch.manual_seed(cfg.train.seed)
        frames, crop = cfg.data.num_frames, cfg.data.crop_size
        self.encoder = build_encoder(cfg.model, frames, crop)
        self.predictor = build_predictor(cfg.model, frames, crop)
        # Only the first len(masks) mask tokens are used; the rest (official checkpoints carry 10)
        # are kept for interoperability but frozen, so DDP sees no unused trainable parameters.
        for i, token in enumerate(self.predictor.mask_tokens):
            token.requires_grad_(i < len(cfg.masks))
        object.__setattr__(self, "_target", copy.deepcopy(self.encoder).float().requires_grad_(False))
        self.grid = grid_for(frames, crop, cfg.model.patch_size, cfg.model.tubelet_size)
        self.mask_specs = specs_from_config(cfg.masks)
        self.masks: MaskCollator | None = None
        self.dims = ModelDims.from_config(cfg.model)
        self.data_state = None  # StreamState, attached by the data module
        self.last_checkpoint = last_checkpoint
        self.step_record: dict = {}
        self._reset_step_accumulators()
        self._batch_end_time: float | None = None
        self._ema_step = 0
        self._nan_skips = 0

    @property
    def target_encoder(self) -> torch.nn.Module:
        return self._target

    # ---- setup ---------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self._target.to(self.device)
        self.masks = MaskCollator(self.mask_specs, self.grid, seed=self.cfg.train.seed, rank=self.global_rank)
        self._ema_step = self.trainer.global_step

    def configure_optimizers(self):
        o = self.cfg.optim
        return torch.optim.AdamW(param_groups([self.encoder, self.predictor], o.weight_decay), lr=o.lr,
                                 betas=tuple(o.betas), eps=o.eps)

    # ---- the step ------------------------------------------------------------------------
    def _reset_step_accumulators(self) -> None:
        self._acc = {"loss": 0.0, "mask": None, "micro": 0, "clips": 0, "flops": 0, "tokens": 0,
                     "wait": 0.0, "t0": None, "bad": False, "loader": None, "collapse": None}

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        acc = self._acc
        if acc["micro"] == 0:
            acc["t0"] = now if self._batch_end_time is None else self._batch_end_time
            apply_schedules(self.optimizers().optimizer if hasattr(self.optimizers(), "optimizer")
                            else self.optimizers(), self.cfg.optim, self.trainer.global_step, self.total_steps)
        if self._batch_end_time is not None:
            acc["wait"] += now - self._batch_end_time

    def training_step(self, batch: dict, batch_idx: int):
        clips = normalize_clips(batch["clips"])
        b = clips.shape[0]
        stream_step = int(batch["stream"]["step"])
        masks = [(c.to(self.device), t.to(self.device)) for c, t in self.masks.sample(b, stream_step)]
        out = jepa_forward(self.encoder, self.predictor, self._target, clips, masks)
        if self.data_state is not None:
            self.data_state.update(batch)
        if self.cfg.logging.trace_sample_keys:
            self._trace_keys(stream_step, batch["keys"])
        acc = self._acc
        loss = float(out.loss.detach())
        acc["bad"] |= not math.isfinite(loss)
        acc["loss"] += loss / self.accumulate
        per_mask = [float(x.detach()) / self.accumulate for x in out.per_mask_loss]
        acc["mask"] = per_mask if acc["mask"] is None else [a + p for a, p in zip(acc["mask"], per_mask)]
        acc["micro"] += 1
        acc["clips"] += b
        sizes = [(c.shape[1], t.shape[1]) for c, t in masks]
        n_tok = self.grid[0] * self.grid[1] * self.grid[2]
        acc["flops"] += train_step_flops(self.dims, n_tok, b, sizes)["total"]
        acc["tokens"] += b * (n_tok + sum(c + t for c, t in sizes))
        acc["loader"] = {"attempts": batch["stream"].get("attempts", 0),
                         "failures": batch["stream"].get("failures", {})}
        next_step = self.trainer.global_step + 1
        if acc["micro"] == self.accumulate and (next_step % self.cfg.train.stats_every_steps == 0 or next_step == 1):
            acc["collapse"] = collapse_stats(out.targets)
        self.log("loss", out.loss.detach(), prog_bar=True, logger=False)
        return out.loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """Runs after backward, before clipping and the step: agree across ranks on non-finite
        losses, apply the NaN policy, and measure the (pre-clip) gradient norm."""
        bad = torch.tensor(float(self._acc["bad"]), device=self.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
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
            self._acc["grad_norm"] = float("nan")
            return
        self._nan_skips = 0
        norms = torch._foreach_norm([p.grad.detach().float() for p in params]) if params else []
        self._acc["grad_norm"] = float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # Runs before any callback's on_train_batch_end, so checkpoints and metrics see this step.
        # Lightning increments global_step after this hook; the step just taken is global_step + 1.
        # (Strategies that call this hook per micro-batch are filtered by the micro-batch count.)
        if self._acc["micro"] >= self.accumulate:
            self._after_optimizer_step(self.trainer.global_step + 1)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self._batch_end_time = time.perf_counter()

    def _after_optimizer_step(self, step: int) -> None:
        """Once per optimizer step: move the EMA target, publish the step record."""
        o = self.cfg.optim
        momentum = ema_momentum(step, self.total_steps, o.ema_momentum[0], o.ema_momentum[1], o.ema_schedule)
        ema_update(list(self._target.parameters()), list(self.encoder.parameters()), momentum)
        self._ema_step = step
        acc = self._acc
        now = time.perf_counter()
        opt = self.optimizers()
        group = (opt.optimizer if hasattr(opt, "optimizer") else opt).param_groups[0]
        self.step_record = {
            "step": step, "loss": acc["loss"], "loss_mask": acc["mask"] or [], "lr": group["lr"],
            "weight_decay": group["weight_decay"], "ema_momentum": momentum,
            "grad_norm": acc.get("grad_norm", float("nan")), "clips": acc["clips"], "tokens": acc["tokens"],
            "data_wait_s": acc["wait"], "step_time_s": now - (acc["t0"] or now),
            "flops": acc["flops"], "loader": acc["loader"] or {},
        }
        if acc["collapse"] is not None:
            self.step_record["collapse"] = acc["collapse"]
        self._reset_step_accumulators()

    def _trace_keys(self, step: int, keys: list[str]) -> None:
        from pathlib import Path

        path = Path(self.cfg.train.run_dir) / self.cfg.name / "sample_keys" / f"rank_{self.global_rank}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(f"{step} {' '.join(keys)}\n")

    # ---- checkpoints ---------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["target_encoder"] = {k: v.detach().to("cpu", torch.float32) for k, v in
                                        self._target.state_dict().items()}
        checkpoint["vjepa"] = {"format_version": CHECKPOINT_FORMAT_VERSION, "config": config_to_dict(self.cfg)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "target_encoder" not in checkpoint:
            raise TrainingStopped("checkpoint has no target_encoder: it was not written by vjepa pretrain")
        self._target.load_state_dict(checkpoint["target_encoder"])
