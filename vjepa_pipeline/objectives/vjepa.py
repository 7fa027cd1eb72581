"""The V-JEPA objective (``objective.kind: vjepa``): masked latent prediction against an EMA target.

Per (micro-)batch: normalise the uint8 clips on the device -> one (context, target) index pair per
mask generator, a pure function of (seed, rank, data step) -> target encoder on the full clip (no
grad, fp32 EMA weights, layer-normed) -> context encoder on the kept tokens -> predictor at the
masked positions -> L1, averaged over mask generators. After each optimizer step the target moves
once towards the context encoder (momentum schedule of ``optim.ema_*``).

The target encoder is a *frozen network* of the objective: trainers keep it out of strategy casts
(an fp32 target stops moving when DeepSpeed casts it to bf16) and store it as ``target_encoder``.

Collapse prevention (``objective.sigreg_weight`` / ``vicreg_*_weight``, objectives/regularizers.py)
adds weighted terms on clip embeddings (or every token, ``objective.regularize_unit``) of the
context encoder's and / or the predictor's outputs (``objective.regularize``), logged as ``loss_sigreg`` / ``loss_vicreg_var`` / ``loss_vicreg_cov``
next to ``loss_pred`` (the prediction loss alone). With ``optim.ema_schedule: none`` (LeJEPA) the
target is the online encoder behind a stop-gradient: the target network is kept as an exact copy
of the encoder after every optimizer step, so checkpoints and exports keep their three parts.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..data.batch import ClipBatch
from ..models.build import build_jepa
from ..models.flops import ModelDims, train_step_flops
from ..models.inputs import normalize_clips
from ..models.jepa import ema_momentum, used_mask_tokens
from ..models.masks import MaskCollator, grid_for, specs_from_config
from ..models.optim import ema_schedule_step
from ..utils.seeds import mix_seed
from .base import Objective, StepOutput
from .regularizers import RegularizerWeights, regularization

# Seeds the SIGReg directions (with train.seed and the data step), apart from the mask streams.
SIGREG_STREAM = 0x5167


class VJEPAObjective(Objective):
    kind = "vjepa"

    def __init__(self, cfg, total_steps: int | None = None):
        super().__init__(cfg)
        self.total_steps = total_steps or cfg.train.max_steps
        torch.manual_seed(cfg.train.seed)
        self.model = build_jepa(cfg)  # encoder, predictor and the fp32 EMA target
        # Only the mask tokens the generators use train (token i per generator, or token 0 for all
        # under mask_token_rule=shared); the rest (official checkpoints carry 10) are kept for
        # interoperability but frozen, so DDP sees no unused trainable parameters.
        tokens = self.model.predictor.mask_tokens
        used = used_mask_tokens(len(cfg.masks), len(tokens), cfg.model.predictor.mask_token_rule)
        for i, token in enumerate(tokens):
            token.requires_grad_(i in used)
        # A V-JEPA 2.1 encoder's image tokenizer, image embedding and the norms of its inner output
        # levels take no part in video pretraining: frozen for the same reason.
        for name, param in self.model.encoder.named_parameters():
            if not video_path_parameter(self.model.encoder, name):
                param.requires_grad_(False)
        self.grid = grid_for(cfg.data.num_frames, cfg.data.crop_size, cfg.model.patch_size, cfg.model.tubelet_size)
        self.num_tokens = self.grid[0] * self.grid[1] * self.grid[2]
        self.mask_specs = specs_from_config(cfg.masks)
        self.masks = MaskCollator(self.mask_specs, self.grid, seed=cfg.train.seed)
        self.dims = ModelDims.from_config(cfg.model)
        ob = cfg.objective
        self.regularizers = RegularizerWeights(ob.sigreg_weight, ob.vicreg_variance_weight,
                                               ob.vicreg_covariance_weight, ob.sigreg_slices)

    def trainable_networks(self) -> dict[str, nn.Module]:
        return {"encoder": self.model.encoder, "predictor": self.model.predictor}

    def frozen_networks(self) -> dict[str, nn.Module]:
        return {"target_encoder": self.model.target_encoder}

    def replace_network(self, name: str, module: nn.Module) -> None:
        super().replace_network(name, module)
        setattr(self.model, name, module)

    def setup(self, device, rank: int = 0) -> None:
        super().setup(device, rank)
        self.masks = MaskCollator(self.mask_specs, self.grid, seed=self.cfg.train.seed, rank=rank)

    def step(self, batch: ClipBatch) -> StepOutput:
        clips = normalize_clips(batch.clips)
        b = clips.shape[0]
        masks = [(c.to(clips.device), t.to(clips.device)) for c, t in self.masks.sample(b, batch.stream.step)]
        where = self.cfg.objective.regularize
        out = self.model(clips, masks)
        contexts = out.contexts if where in ("context", "both") else []
        loss = out.loss
        terms = {f"loss_mask_{i}": float(x.detach()) for i, x in enumerate(out.per_mask_loss)}
        if self.regularizers.active:
            # Default: one embedding per clip (tokens mean-pooled), per mask generator. LeJEPA regularises
            # one embedding per view, and per-clip spread is what the probe and the pooled RankMe read;
            # per-token statistics (regularize_unit: token) can also be met by tokens that differ only
            # by position, the fixed positional pattern seen in partially collapsed demo runs.
            views = list(contexts)
            if where in ("predictor", "both"):
                views += list(out.predictions)
            per_token = self.cfg.objective.regularize_unit == "token"
            views = [z.flatten(0, 1) if per_token else z.mean(dim=1) for z in views]
            extra, reg_terms = regularization(views, self.regularizers,
                                              seed=mix_seed(self.cfg.train.seed, SIGREG_STREAM, batch.stream.step))
            loss = out.loss + extra
            terms.update(loss_pred=float(out.loss.detach()), **reg_terms)
        sizes = [(c.shape[1], t.shape[1]) for c, t in masks]
        return StepOutput(
            loss=loss,
            terms=terms,
            flops=train_step_flops(self.dims, self.num_tokens, b, sizes)["total"],
            tokens=b * (self.num_tokens + sum(c + t for c, t in sizes)),
            features=out.targets,
        )

    def after_optimizer_step(self, step: int) -> dict[str, float]:
        o = self.cfg.optim
        if o.ema_schedule == "none":  # the target is the online encoder: momentum 0 copies it exactly
            self.model.update_target(0.0)
            return {"ema_momentum": 0.0}
        momentum = ema_momentum(ema_schedule_step(o, step), self.total_steps, o.ema_momentum[0], o.ema_momentum[1],
                                o.ema_schedule)
        self.model.update_target(momentum)
        return {"ema_momentum": momentum}


def video_path_parameter(encoder: nn.Module, name: str) -> bool:
    """Whether the encoder parameter ``name`` is used when it encodes video clips (the default
    output level): False for the image tokenizer, the image modality embedding and the
    ``norms_block`` entries of inner levels of a V-JEPA 2.1 encoder."""
    if name.startswith(("patch_embed_img.", "img_mod_embed")):
        return False
    if name.startswith("norms_block."):
        return int(name.split(".")[1]) == len(encoder.norms_block) - 1
    return True

