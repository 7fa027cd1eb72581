"""V-JEPA 2-AC (world model) checkpoints: load the action-conditioned predictor, the whole world model, and
export an action-conditioned run (pure PyTorch; files read weights-only).

    load_ac_predictor_weights(predictor, "runs/ac")        # -> "run" | "native" | "official"
    wm = load_world_model("runs/ac")                       # frozen encoder + predictor + config, eval mode
    export_ac_run("runs/ac", "ac.pt", "official")          # an app/vjepa_droid training checkpoint

An action-conditioned run (``objective.kind: action_conditioned``) writes the usual Lightning
``model.ckpt`` (train/module.py, train/checkpointing.py): ``state_dict`` holds the trainable predictor
(``predictor.*``), the frozen encoder is the top-level ``encoder`` entry, ``vjepa.config`` the run's config.

Formats:

- ``native``: our single file (``interop.save_native``): format marker, config, step, ``encoder`` (the
  frozen encoder) and ``predictor``, fp32. Read back by :func:`load_world_model`,
  :func:`load_ac_predictor_weights` and ``interop.load_part``.
- ``official``: the dict ``app/vjepa_droid/train.py`` ``save_checkpoint`` writes and its ``load_checkpoint``
  (app/vjepa_droid/utils.py) reads: ``encoder`` and ``target_encoder`` (both the frozen encoder: the AC
  trainer encodes with ``target_encoder`` and reads both on resume) and ``predictor``, DDP-wrapped
  (``module.`` keys; the predictor in the official layout, ``ac_layout.ac_predictor_to_official``),
  ``opt`` (AdamW in the official ``init_opt``'s four groups, the predictor's moments moved by name; the
  encoder's parameters are in the official optimizer but never get a gradient, so they have no state),
  ``scaler`` (a GradScaler state: the official bf16 recipe loads one and fails on None), ``epoch``,
  ``loss``, ``batch_size``, ``world_size``, ``lr``. There is no Hugging Face class for this predictor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError, ConfigError
from ..models.ac_predictor import ActionConditionedPredictor
from ..utils.atomic import atomic_torch_save
from .ac_layout import (ACPredictorShape, ac_predictor_from_official, ac_predictor_to_official,
                        describe_ac_predictor)
from .export import (OFFICIAL_GROUPS, TRAINING_FORMAT_VERSION, ExportResult, adamw_group, clean_key,
                     group_hyperparameters, lightning_optimizer_state, objective_kind, official_epoch_of, official_no_decay,
                     official_order_key, official_parameters, official_scaler, resolve_checkpoint,
                     safe_torch_load)
from .interop import NATIVE_FORMAT, load_state_strict, save_native, with_position_tables
from .layouts import StateDict, strip_prefixes

AC_KIND = "action_conditioned"  # objective.kind of an action-conditioned run
AC_FORMATS = ("native", "official")
HF_REFUSAL = "Hugging Face has no V-JEPA 2-AC predictor class; use --format native or official"
# Registration order of the official VisionTransformerPredictorAC (src/models/ac_predictor.py): the order of
# its named_parameters(), which the official init_opt's groups follow.
_AC_OFFICIAL_ORDER = ("predictor_embed", "action_encoder", "state_encoder", "extrinsics_encoder",
                      "predictor_blocks", "predictor_norm", "predictor_proj")


@dataclass
class ACRun:
    """One action-conditioned training checkpoint or native file, read: fp32 CPU state dicts."""

    config: object  # vjepa_pipeline.config.Config
    encoder_sd: StateDict
    predictor_sd: StateDict
    step: int | None
    source: Path
    kind: str  # run | native
    optimizer_state: dict | None = None
    optimizer_note: str = "the checkpoint holds no optimizer state"
    scaler_state: dict | None = None


@dataclass
class LoadedWorldModel:
    """A V-JEPA 2-AC world model ready for evaluation / planning: ``encoder`` frozen (eval, no gradient),
    ``predictor`` in eval mode, both on the requested device; ``config`` the run's Config."""

    encoder: nn.Module
    predictor: ActionConditionedPredictor
    config: object
    kind: str  # run | native
    source: str
    step: int | None = None


# ---- reading ---------------------------------------------------------------------------------
def _fp32(sd: dict) -> StateDict:
    return {clean_key(k): (v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu())
            for k, v in sd.items() if isinstance(v, torch.Tensor)}


def _stored_config(config: dict, where: str):
    from ..config import config_from_dict

    try:
        return config_from_dict(config, validate=False, source=f"{where} (stored config)")
    except ConfigError as exc:
        raise CheckpointError(str(exc).replace("\n", "; ")) from None


def _not_ac(where: str, kind: str | None) -> CheckpointError:
    return CheckpointError(f"{where}: a V-JEPA (objective.kind {kind}) checkpoint, not an action-conditioned "
                           "one: its encoder loads with vjepa_pipeline.eval.encoders.load_encoder, its "
                           "masked predictor with load_predictor")


def _read_run(obj: dict, where: Path) -> ACRun:
    """An action-conditioned Lightning checkpoint (already read) -> :class:`ACRun`."""
    kind = objective_kind(obj)
    if kind is None:
        raise CheckpointError(f"{where}: no 'vjepa' entry with the training config: not a checkpoint written "
                              "by vjepa pretrain")
    if kind != AC_KIND:
        raise _not_ac(str(where), kind)
    version = obj["vjepa"].get("format_version")
    if version != TRAINING_FORMAT_VERSION:
        raise CheckpointError(f"{where}: training checkpoint format_version {version!r}; this version of "
                              f"vjepa_pipeline reads {TRAINING_FORMAT_VERSION}")
    config = _stored_config(obj["vjepa"]["config"], str(where))
    state = _fp32(obj["state_dict"])
    # world_model.train_encoder: the encoder (and the inverse-dynamics head) trained with the predictor
    joint = bool(getattr(config.world_model, "train_encoder", False))
    trained = ("predictor.", "encoder.", "inverse_dynamics.") if joint else ("predictor.",)
    if joint:
        encoder_sd = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    elif isinstance(obj.get("encoder"), dict) and obj["encoder"]:
        encoder_sd = _fp32(obj["encoder"])
    else:
        encoder_sd = {}
    if not encoder_sd:
        raise CheckpointError(f"{where}: no encoder weights (" + ("no encoder.* in state_dict" if joint else
                              f"no frozen 'encoder' entry; top-level keys: {sorted(map(str, obj))[:10]}") + ")")
    other = sorted(k for k in state if not k.startswith(trained))
    if other or not any(k.startswith("predictor.") for k in state):
        raise CheckpointError(f"{where}: expected only {', '.join(p + '*' for p in trained)} weights in state_dict, "
                              f"found {len(state) - len(other)} of those and {len(other)} other tensors "
                              f"({other[:4]})")
    step = obj.get("global_step")
    opt, note = lightning_optimizer_state(obj)
    scaler = obj.get("MixedPrecision")  # Lightning's AMP plugin state: the GradScaler's (16-mixed only)
    return ACRun(config, encoder_sd,
                 {k[len("predictor."):]: v for k, v in state.items() if k.startswith("predictor.")},
                 step if isinstance(step, int) else None, where, "run", opt, note,
                 scaler if isinstance(scaler, dict) and "scale" in scaler else None)


def _read_native(obj: dict, where: Path) -> ACRun:
    """Our native file of an action-conditioned run (already read) -> :class:`ACRun`."""
    kind = ((obj.get("config") or {}).get("objective") or {}).get("kind", "vjepa")
    if kind != AC_KIND:
        raise _not_ac(str(where), kind)
    missing = [p for p in ("encoder", "predictor") if not isinstance(obj.get(p), dict)]
    if missing:
        raise CheckpointError(f"{where}: native world-model file lacks {missing} (it has "
                              f"{[k for k, v in obj.items() if isinstance(v, dict)]})")
    step = obj.get("step")
    return ACRun(_stored_config(obj["config"], str(where)), strip_prefixes(_fp32(obj["encoder"])),
                 strip_prefixes(_fp32(obj["predictor"])), step if isinstance(step, int) else None, where,
                 "native")


def _read_source(source: str | Path) -> tuple[str, dict, Path]:
    """(kind, the file's dict, the file) for a run directory / step directory / ``model.ckpt`` / ``last``
    (kind ``run``), our native file (``native``) or anything else (``official``: judged by its content)."""
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    ckpt = resolve_checkpoint(path) if path.is_dir() or path.name in ("model.ckpt", "last") else path
    if ckpt.is_dir():
        raise CheckpointError(f"{ckpt}: a DeepSpeed checkpoint; action-conditioned runs train with "
                              "train.strategy auto or ddp and write one model.ckpt file")
    obj = safe_torch_load(ckpt)
    if isinstance(obj.get("state_dict"), dict):
        return "run", obj, ckpt
    if obj.get("format") == NATIVE_FORMAT:
        return "native", obj, ckpt
    return "official", obj, ckpt


def read_ac_run(source: str | Path) -> ACRun:
    """Read an action-conditioned run (directory, step directory, ``model.ckpt``) or our native file of
    one into fp32 CPU state dicts plus its config. Anything else is a one-line CheckpointError."""
    kind, obj, path = _read_source(source)
    if kind == "run":
        return _read_run(obj, path)
    if kind == "native":
        return _read_native(obj, path)
    raise CheckpointError(f"{path}: not an action-conditioned run or native world-model file (an official "
                          "V-JEPA 2-AC file carries no config: build the predictor and use "
                          "load_ac_predictor_weights)")


def checkpoint_objective(source: str | Path) -> str | None:
    """``objective.kind`` of the training checkpoint ``source`` designates (run directory, step directory,
    ``model.ckpt``), or None when it is not a readable training checkpoint (DeepSpeed directories: None)."""
    try:
        ckpt = resolve_checkpoint(source)
        return None if ckpt.is_dir() else objective_kind(safe_torch_load(ckpt))
    except CheckpointError:
        return None


# ---- the predictor ---------------------------------------------------------------------------
def _ratio(hidden: int, width: int) -> str:
    return f"{hidden / width:g}" if width else "?"


def _mismatches(found: ACPredictorShape, model: ACPredictorShape) -> list[tuple[str, str]]:
    """(what differs, the config setting that fixes it) per dimension where checkpoint and model disagree."""
    out = []
    if found.action_dim != model.action_dim:
        out.append((f"{found.action_dim}-D actions but world_model.action_dim={model.action_dim}",
                    f"world_model.action_dim={found.action_dim}"))
    if found.state_dim != model.state_dim:
        out.append((f"{found.state_dim}-D states but world_model.state_dim={model.state_dim}",
                    f"world_model.state_dim={found.state_dim}"))
    if (found.extrinsics_dim is None) != (model.extrinsics_dim is None):
        on = found.extrinsics_dim is not None
        out.append((f"{'' if on else 'no '}extrinsics but world_model.use_extrinsics={str(not on).lower()}",
                    f"world_model.use_extrinsics={str(on).lower()}"))
    elif found.extrinsics_dim != model.extrinsics_dim and found.action_dim == model.action_dim:
        out.append((f"{found.extrinsics_dim}-D extrinsics but the predictor takes {model.extrinsics_dim}-D",
                    f"a predictor with extrinsics_dim={found.extrinsics_dim}"))
    if found.embed_dim != model.embed_dim:
        out.append((f"features of a {found.embed_dim}-wide encoder but the frozen encoder is "
                    f"{model.embed_dim} wide", f"world_model.encoder (a {found.embed_dim}-wide encoder)"))
    if found.predictor_embed_dim != model.predictor_embed_dim:
        out.append((f"width {found.predictor_embed_dim} but model.predictor.embed_dim="
                    f"{model.predictor_embed_dim}", f"model.predictor.embed_dim={found.predictor_embed_dim}"))
    if found.depth != model.depth:
        out.append((f"{found.depth} blocks but model.predictor.depth={model.depth}",
                    f"model.predictor.depth={found.depth}"))
    if found.mlp_hidden != model.mlp_hidden and found.predictor_embed_dim == model.predictor_embed_dim:
        ratio = _ratio(found.mlp_hidden, found.predictor_embed_dim)
        ours = _ratio(model.mlp_hidden, model.predictor_embed_dim)
        out.append((f"MLP ratio {ratio} but model.predictor.mlp_ratio={ours}",
                    f"model.predictor.mlp_ratio={ratio}"))
    if found.qkv_bias != model.qkv_bias:
        out.append((f"qkv biases {'on' if found.qkv_bias else 'off'} but model.qkv_bias="
                    f"{str(model.qkv_bias).lower()}", f"model.qkv_bias={str(found.qkv_bias).lower()}"))
    return out


def _heads_mismatch(stored_cfg, predictor: nn.Module) -> list[tuple[str, str]]:
    """The head count is not in the weights: compare it where the checkpoint stores its config."""
    heads = getattr(getattr(getattr(stored_cfg, "model", None), "predictor", None), "num_heads", None)
    ours = getattr(predictor, "num_heads", None)
    if heads is None or ours is None or heads == ours:
        return []
    return [(f"{heads} attention heads but model.predictor.num_heads={ours}",
             f"model.predictor.num_heads={heads}")]


def _check_fits(predictor: ActionConditionedPredictor, sd: StateDict, where: str, stored_cfg=None) -> None:
    """One-line CheckpointError naming every dimension (and the config key to change) where ``sd`` does not
    fit ``predictor``."""
    try:
        found = describe_ac_predictor(sd)
    except CheckpointError as exc:
        raise CheckpointError(f"predictor checkpoint {where}: {exc}") from None
    diffs = _mismatches(found, ACPredictorShape.of_model(predictor)) + _heads_mismatch(stored_cfg, predictor)
    if diffs:
        raise CheckpointError(f"predictor checkpoint {where} was trained with "
                              f"{'; '.join(d for d, _ in diffs)}: set {' '.join(f for _, f in diffs)}, "
                              "or start the predictor fresh")


def _load_predictor_state(predictor: ActionConditionedPredictor, sd: StateDict, where: str,
                          stored_cfg=None) -> None:
    _check_fits(predictor, sd, where, stored_cfg)
    try:
        predictor.load_state_dict(sd, strict=True)
    except RuntimeError as exc:  # checked above; kept one line should anything slip through
        raise CheckpointError(f"predictor checkpoint {where}: {str(exc).splitlines()[0]}") from None


def _official_predictor_state(obj: dict, predictor: ActionConditionedPredictor, where: str) -> StateDict:
    if any(isinstance(obj.get(p), dict) for p in ("encoder", "target_encoder")) and not isinstance(
            obj.get("predictor"), dict):
        raise CheckpointError(f"predictor checkpoint {where}: has no 'predictor' entry (top-level keys: "
                              f"{sorted(map(str, obj))[:8]})")
    try:
        return ac_predictor_from_official(obj, use_extrinsics=predictor.use_extrinsics)
    except CheckpointError as exc:
        raise CheckpointError(f"predictor checkpoint {where}: {exc}") from None


def load_ac_predictor_weights(predictor: ActionConditionedPredictor, source: str | Path) -> str:
    """Strictly load action-conditioned predictor weights into ``predictor`` (already built) from an
    action-conditioned run of ours (run directory, step directory, ``model.ckpt``), our native file of one,
    or an official V-JEPA 2-AC checkpoint (its ``predictor`` entry in the official layout, or a bare state
    dict; an ``extrinsics_encoder`` the predictor does not use is dropped). Returns the source's kind:
    ``run``, ``native`` or ``official``. Any mismatch is a one-line CheckpointError naming the config key
    to change."""
    kind, obj, path = _read_source(source)
    where = str(source)
    if kind == "official":
        sd, stored_cfg = _official_predictor_state(obj, predictor, where), None
    else:
        run = _read_run(obj, path) if kind == "run" else _read_native(obj, path)
        sd, stored_cfg = run.predictor_sd, run.config
    _load_predictor_state(predictor, sd, where, stored_cfg)
    return kind


# ---- the world model -------------------------------------------------------------------------
def _encoder_facts(sd: StateDict) -> str:
    from .interop import describe_encoder_state

    try:
        f = describe_encoder_state(sd)
    except (CheckpointError, KeyError, IndexError):
        return "unrecognised encoder weights"
    return (f"embed_dim {f['embed_dim']}, depth {f['depth']}, patch {f['patch_size']}, "
            f"tubelet {f['tubelet_size']}, {f['pos_embed']} positions")


def build_world_model(run: ACRun) -> tuple[nn.Module, ActionConditionedPredictor]:
    """The frozen encoder and the predictor of ``run``, built from its config (as the action-conditioned
    objective builds them) and loaded strictly; both on CPU, eval mode, the encoder without gradients."""
    from ..models.build import build_ac_predictor, build_encoder

    cfg, where = run.config, str(run.source)
    encoder = build_encoder(cfg.model, cfg.model.tubelet_size, cfg.data.crop_size)  # one tubelet per frame
    try:
        load_state_strict(encoder, run.encoder_sd, what="frozen encoder")
    except CheckpointError:
        built = _encoder_facts(encoder.state_dict())
        raise CheckpointError(f"{where}: the frozen encoder ({_encoder_facts(run.encoder_sd)}) does not "
                              f"match the one the run's model.* describes ({built}): describe it with "
                              "model_overrides (e.g. model.size=large model.pos_embed=rope)") from None
    predictor = build_ac_predictor(cfg, embed_dim=encoder.embed_dim)
    _load_predictor_state(predictor, run.predictor_sd, where, cfg)
    return encoder.eval().requires_grad_(False), predictor.eval()


def load_world_model(source: str | Path, device: str | torch.device = "cpu",
                     model_overrides: Sequence[str] = ()) -> LoadedWorldModel:
    """The world model of an action-conditioned run (run directory, step directory, ``model.ckpt``) or of
    our native export of one: frozen encoder and predictor in eval mode on ``device``, plus the run's
    config. ``model_overrides`` (``model.key=value``) correct the stored config where it does not describe
    the frozen encoder (e.g. one taken from another run through ``world_model.encoder``)."""
    run = read_ac_run(source)
    if model_overrides:
        from ..config import apply_overrides

        bad = [o for o in model_overrides if not o.strip().startswith("model.")]
        if bad:
            raise ConfigError(f"model_overrides: only model.* keys describe the encoder, got {bad}")
        run.config = apply_overrides(run.config, list(model_overrides))
    encoder, predictor = build_world_model(run)
    return LoadedWorldModel(encoder.to(device), predictor.to(device), run.config, run.kind, str(source),
                            run.step)


# ---- the official optimizer ------------------------------------------------------------------
def _ac_order_key(name: str) -> tuple[int, ...]:
    """Sort key placing a predictor parameter where the official VisionTransformerPredictorAC's
    named_parameters() yields it."""
    top, _, rest = name.partition(".")
    return (_AC_OFFICIAL_ORDER.index(top), *official_order_key(rest))


def official_ac_param_groups(encoder: nn.Module,
                             predictor: nn.Module) -> list[list[tuple[str, str, torch.Size]]]:
    """The official AC ``init_opt``'s four AdamW groups as (part, name, shape) lists: encoder decay,
    predictor decay, encoder no-decay, predictor no-decay; the predictor as the official class has it
    (``extrinsics_encoder`` always)."""
    official = ac_predictor_to_official(predictor.state_dict(), prefix="")
    ordered = sorted(((n, v.shape) for n, v in official.items()), key=lambda item: _ac_order_key(item[0]))
    params = {"encoder": official_parameters(encoder), "predictor": ordered}
    return [[(part, n, s) for n, s in params[part] if official_no_decay(n, s) == no_decay]
            for part, no_decay in OFFICIAL_GROUPS]


def _saved_predictor_state(saved: dict, predictor: nn.Module) -> dict[str, dict]:
    """Our trainer's AdamW state (``models.optim.param_groups([predictor])``) keyed by predictor parameter
    name; ValueError when it does not map exactly."""
    from ..models.optim import param_groups

    names = {id(p): n for n, p in predictor.named_parameters()}
    ours = [[names[id(p)] for p in g["params"]] for g in param_groups([predictor], 0.0)]
    sizes = [len(g.get("params", [])) for g in saved["param_groups"]]
    if sizes != [len(g) for g in ours]:
        raise ValueError(f"its param groups hold {sizes} parameters, the trainer's groups for this predictor "
                         f"{[len(g) for g in ours]}")
    saved_ids = (i for g in saved["param_groups"] for i in g["params"])
    by_index = dict(zip(saved_ids, (n for g in ours for n in g)))
    shapes = dict((n, p.shape) for n, p in predictor.named_parameters())
    out = {}
    for i, st in saved["state"].items():
        name = by_index.get(i)
        if name is None or {"step", "exp_avg", "exp_avg_sq"} - set(st):
            raise ValueError(f"state entry {i!r} is not the AdamW state of a predictor parameter")
        if any(tuple(st[k].shape) != tuple(shapes[name]) for k in ("exp_avg", "exp_avg_sq")):
            raise ValueError(f"the moments of predictor.{name} do not have its shape {tuple(shapes[name])}")
        step = st["step"]
        out[name] = {"step": (step.detach().to("cpu", torch.float32) if isinstance(step, torch.Tensor)
                              else torch.tensor(float(step))),
                     "exp_avg": st["exp_avg"].detach().to("cpu", torch.float32).contiguous(),
                     "exp_avg_sq": st["exp_avg_sq"].detach().to("cpu", torch.float32).contiguous()}
    return out


def official_ac_optimizer_state(run: ACRun, encoder: nn.Module, predictor: nn.Module) -> tuple[dict, str]:
    """``opt`` for the official AC trainer: AdamW in its ``init_opt`` layout (four groups over the encoder
    and the official predictor, official order, ``WD_exclude`` on the no-decay groups, ``lr_scale`` 1 on the
    encoder's) carrying the predictor's moments and step counts, moved by name; an empty state (AdamW
    restarts its moments) when our state cannot be mapped exactly. Plus a note."""
    cfg, saved = run.config, run.optimizer_state
    groups = official_ac_param_groups(encoder, predictor)
    decay_group, (lr, wd, betas, eps) = group_hyperparameters(cfg, saved, run.step or 0)
    param_groups, start = [], 0
    for g, (part, no_decay) in zip(groups, OFFICIAL_GROUPS):
        group = adamw_group(lr, betas, eps, 0.0 if no_decay else wd, decay_group)
        if no_decay:
            group["WD_exclude"] = True  # the official CosineWDSchedule skips these groups
        if part == "encoder":
            group["lr_scale"] = 1.0  # init_opt's enc_lr_scale (default 1.0)
        group["params"] = list(range(start, start + len(g)))
        start += len(g)
        param_groups.append(group)
    index = {n: i for i, (part, n, _) in enumerate(pn for g in groups for pn in g) if part == "predictor"}
    state, reason = {}, run.optimizer_note
    if saved is not None:
        try:
            state = {index[n]: st for n, st in _saved_predictor_state(saved, predictor).items()}
            reason = ""
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # a malformed state: never guessed
            reason = f"our optimizer state does not map onto the official groups exactly ({exc})"
    sizes = "/".join(str(len(g)) for g in groups)
    if not reason:
        return ({"state": state, "param_groups": param_groups},
                f"opt: AdamW state in the official init_opt layout (4 groups of {sizes} parameters): "
                f"moments and step counts of {len(state)} predictor parameters, mapped by name (the frozen "
                "encoder has none)")
    return ({"state": {}, "param_groups": param_groups},
            f"opt: AdamW groups in the official init_opt layout (4 groups of {sizes} parameters) with an "
            f"EMPTY state: {reason}; a resumed official run restarts AdamW's moments and bias correction")


# ---- export ----------------------------------------------------------------------------------
def _module_prefixed(sd: StateDict) -> StateDict:
    return {f"module.{k}": v.detach().to("cpu", torch.float32).contiguous() for k, v in sd.items()}


def save_official_ac(path: str | Path, run: ACRun, encoder: nn.Module, predictor: nn.Module,
                     ipe: int | None = None) -> list[str]:
    """Write the official ``app/vjepa_droid`` training checkpoint of ``run``; returns a note per decision."""
    cfg = run.config
    encoder_sd = _module_prefixed(with_position_tables(encoder, encoder.state_dict()))
    epoch, epoch_note = official_epoch_of(cfg, run.step, ipe)
    opt, opt_note = official_ac_optimizer_state(run, encoder, predictor)
    scaler, scaler_note = official_scaler(run.scaler_state)
    obj = {
        "encoder": encoder_sd,
        "predictor": ac_predictor_to_official(predictor.state_dict(), prefix="module."),
        "target_encoder": dict(encoder_sd),  # the AC trainer encodes with target_encoder and reads both
        "opt": opt,
        "scaler": scaler,
        "epoch": epoch,
        "loss": float("nan"),  # not stored in our checkpoints; no official script reads it
        "batch_size": cfg.data.batch_size * cfg.train.accumulate_grad_batches,  # clips per rank per step
        "world_size": cfg.train.devices * cfg.train.num_nodes,
        "lr": float(cfg.optim.lr),
    }
    atomic_torch_save(obj, path)
    return [epoch_note, opt_note, scaler_note, "'encoder' and 'target_encoder' both hold the frozen encoder"]


def export_ac_run(run_or_ckpt: str | Path, out_path: str | Path, fmt: str = "native",
                  ipe: int | None = None) -> ExportResult:
    """Export an action-conditioned run (run directory, step directory, ``model.ckpt``) to ``out_path`` as
    ``native`` (our file) or ``official`` (an app/vjepa_droid training checkpoint); see the module
    docstring. ``ipe``: iterations per epoch for the official ``epoch``. ValueError for an unsupported
    request (``hf`` included), CheckpointError for a checkpoint that cannot be read or does not fit."""
    from ..config import config_to_dict

    if fmt == "hf":
        raise ValueError(HF_REFUSAL)
    if fmt not in AC_FORMATS:
        raise ValueError(f"format must be one of {', '.join(AC_FORMATS)} for an action-conditioned run; "
                         f"got {fmt!r}")
    if ipe is not None and (fmt != "official" or ipe < 1):
        raise ValueError(f"ipe (iterations per epoch) is a positive number for --format official only; "
                         f"got {ipe} with --format {fmt}")
    out = Path(out_path)
    if out.is_dir():
        raise CheckpointError(f"{out}: is a directory; --format {fmt} writes one file (give a file name)")
    kind, obj, path = _read_source(run_or_ckpt)
    if kind != "run":
        raise CheckpointError(f"{path}: not a training checkpoint of vjepa pretrain (a {kind} file); export "
                              "a run directory, a checkpoints/step_* directory or a model.ckpt")
    run = _read_run(obj, path)
    if fmt == "official" and (run.config.model.encoder_kind != "vit" or run.config.world_model.train_encoder):
        raise ValueError("--format official holds a frozen V-JEPA ViT encoder and a predictor; this world model "
                         f"has a {run.config.model.encoder_kind} encoder"
                         + (" trained with the predictor" if run.config.world_model.train_encoder else "")
                         + ": use --format native")
    encoder, predictor = build_world_model(run)
    notes: list[str] = []
    if fmt == "native":
        save_native(out, {"encoder": encoder, "predictor": predictor}, config=config_to_dict(run.config),
                    step=run.step, exported_from=str(run.source))
    else:
        notes = save_official_ac(out, run, encoder, predictor, ipe)
    params = {"encoder (frozen)": sum(p.numel() for p in encoder.parameters()),
              "predictor": sum(p.numel() for p in predictor.parameters())}
    return ExportResult(out=out, fmt=fmt, what="world model", step=run.step, source=run.source,
                        kind="lightning", params=params, notes=notes)


__all__ = ["AC_FORMATS", "AC_KIND", "HF_REFUSAL", "ACRun", "LoadedWorldModel", "build_world_model",
           "checkpoint_objective", "export_ac_run", "load_ac_predictor_weights", "load_world_model",
           "official_ac_optimizer_state", "official_ac_param_groups", "read_ac_run", "save_official_ac"]
