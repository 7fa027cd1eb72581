"""The V-JEPA objective as small pure functions plus a convenience container (pure PyTorch).

One step: target encoder on the full clip (no grad, fp32 EMA weights) -> layer-normed targets;
per mask configuration: context encoder on the kept tokens -> predictor at the masked positions
-> L1 against the targets gathered at those positions; the loss is the mean over configurations.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .predictor import Predictor
from .vit import VisionTransformer, gather_tokens

MaskPair = tuple[torch.Tensor, torch.Tensor]  # (context indices (B, Nc), target indices (B, Nt))
MASK_TOKEN_RULES = ("per_generator", "shared")


def mask_token_index(generator: int, rule: str = "per_generator") -> int:
    """The predictor mask token that mask generator ``generator`` uses.

    ``per_generator`` (V-JEPA 1): token i for generator i. ``shared`` (V-JEPA 2): the official
    trainer passes the index of the clip-length group (``PredictorMultiSeqWrapper``), so with one
    clip length every generator uses token 0."""
    if rule == "per_generator":
        return generator
    if rule == "shared":
        return 0
    raise ValueError(f"unknown mask token rule {rule!r}; use one of {MASK_TOKEN_RULES}")


def used_mask_tokens(num_generators: int, num_tokens: int, rule: str = "per_generator") -> set[int]:
    """Indices of the mask tokens that ``num_generators`` generators use (the predictor wraps
    indices modulo its token count, like the official one)."""
    return {mask_token_index(i, rule) % num_tokens for i in range(num_generators)}


def l1_latent_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error between predicted and target features (V-JEPA's loss_exp = 1)."""
    return (pred.float() - target.float()).abs().mean()


@torch.no_grad()
def target_features(target_encoder: nn.Module, clips: torch.Tensor) -> torch.Tensor:
    """Full-clip features of the target encoder, layer-normed without affine: (B, N, D)."""
    h = target_encoder(clips)
    return F.layer_norm(h.float(), (h.shape[-1],))


@dataclass
class JEPAOutput:
    loss: torch.Tensor
    per_mask_loss: list[torch.Tensor]
    targets: torch.Tensor = field(repr=False)  # (B, N, D) layer-normed target features, detached
    predictions: list[torch.Tensor] = field(repr=False)  # (B, Nt_i, D) per mask configuration
    contexts: list[torch.Tensor] = field(default_factory=list, repr=False)  # (B, Nc_i, D) context-encoder outputs


def jepa_forward(encoder: VisionTransformer, predictor: Predictor, target_encoder: nn.Module,
                 clips: torch.Tensor, masks: Sequence[MaskPair], mask_token_rule: str = "per_generator") -> JEPAOutput:
    """One V-JEPA forward pass; ``masks[i]`` uses the predictor's mask token
    ``mask_token_index(i, mask_token_rule)`` (token i, or token 0 for every generator)."""
    if not masks:
        raise ValueError("jepa_forward needs at least one (context, target) mask pair")
    index = [mask_token_index(i, mask_token_rule) for i in range(len(masks))]  # checks the rule
    targets = target_features(target_encoder, clips)
    tokens, grid = encoder.embed(clips)
    losses, preds, contexts = [], [], []
    for i, (ctx, tgt) in enumerate(masks):
        z = encoder.encode_tokens(tokens, grid, ctx)
        p = predictor(z, ctx, tgt, grid, mask_index=index[i])
        losses.append(l1_latent_loss(p, gather_tokens(targets, tgt)))
        preds.append(p)
        contexts.append(z)
    return JEPAOutput(torch.stack(losses).mean(), losses, targets, preds, contexts)


@torch.no_grad()
def ema_update(target_params: Sequence[torch.Tensor], online_params: Sequence[torch.Tensor],
               momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, in the target's dtype (fp32).

    Online weights (possibly bf16) are upcast before the update, so updates of (1 - m) x diff that
    would round to zero in bf16 still move an fp32 target.
    """
    targets = list(target_params)
    online = [p.detach().to(dtype=t.dtype, device=t.device) for p, t in zip(online_params, targets)]
    if len(online) != len(targets):
        raise ValueError(f"EMA: {len(targets)} target vs {len(online)} online parameters")
    torch._foreach_lerp_(targets, online, 1.0 - momentum)


def ema_momentum(step: int, total_steps: int, start: float, end: float, schedule: str = "linear") -> float:
    """EMA momentum at optimizer step ``step``: V-JEPA 1 ramps linearly start -> end over training,
    V-JEPA 2 keeps it constant at ``start``."""
    if schedule == "constant":
        return start
    if schedule != "linear":
        raise ValueError(f"unknown EMA schedule {schedule!r}; use 'linear' or 'constant'")
    frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return start + (end - start) * frac


class JEPA(nn.Module):
    """Container for the three networks. The target encoder is an fp32 copy of the context encoder
    that never receives gradients; trainers that cast modules (DeepSpeed) may keep it elsewhere and
    call :func:`jepa_forward` / :func:`ema_update` directly."""

    def __init__(self, encoder: VisionTransformer, predictor: Predictor, mask_token_rule: str = "per_generator"):
        super().__init__()
        mask_token_index(0, mask_token_rule)  # refuse an unknown rule here, not at the first step
        self.encoder = encoder
        self.predictor = predictor
        self.target_encoder = copy.deepcopy(encoder).float().requires_grad_(False)
        self.mask_token_rule = mask_token_rule

    def forward(self, clips: torch.Tensor, masks: Sequence[MaskPair]) -> JEPAOutput:
        return jepa_forward(self.encoder, self.predictor, self.target_encoder, clips, masks, self.mask_token_rule)

    def update_target(self, momentum: float) -> None:
        ema_update(list(self.target_encoder.parameters()), list(self.encoder.parameters()), momentum)

    def trainable_parameters(self):
        yield from self.encoder.parameters()
        yield from self.predictor.parameters()
