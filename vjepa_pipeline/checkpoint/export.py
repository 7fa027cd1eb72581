"""Export weights from a training checkpoint (``vjepa pretrain``) to a standalone file.

    resolve_checkpoint("runs/debug")            # -> runs/debug/checkpoints/step_0000000100/model.ckpt
    ckpt = load_training_checkpoint("runs/debug")
    export("runs/debug", "vitl_target.pt")      # the EMA target encoder, our native format
    export("runs/debug", "hf_model/", what="target_encoder", fmt="hf")

A training checkpoint is ``checkpoints/step_<n>/model.ckpt``: either a Lightning file (a dict with
``state_dict`` = ``encoder.*`` / ``predictor.*``, ``target_encoder``, ``vjepa``, optimizer states
...) or, under DeepSpeed, a directory (``latest``, ``checkpoint/mp_rank_00_model_states.pt`` holding
the module weights as trained (bf16) plus the client state with ``target_encoder`` and ``vjepa``,
and ``*_optim_states.pt`` holding the ZeRO-sharded fp32 master weights).

Everything comes out fp32: the trainable encoder / predictor of a DeepSpeed run are taken from the
fp32 master weights (``get_fp32_state_dict_from_zero_checkpoint``), not from the bf16 module copy;
the EMA target encoder is always taken from our own fp32 copy in the client state (the DeepSpeed
converter would give frozen weights only as stored).

Safety: files are read with ``torch.load(weights_only=True)``. The only non-tensor types accepted
beyond torch's defaults are listed in ``ALLOWED_GLOBALS`` (Lightning's ``AttributeDict``, read as a
plain dict; ``pathlib`` paths; DeepSpeed's loss scaler, ZeRO stage enum and fragment addresses).
DeepSpeed's converter unpickles its files with ``weights_only=False``; every file it will read is
first vetted (``torch.serialization.get_unsafe_globals_in_checkpoint`` lists the globals a pickle
references, without running it) and refused if it references anything outside that list.

Formats:
- ``native``: our file (``save_native``): the chosen part(s) under their own names, plus the
  training config and step. ``what``: target_encoder, encoder, predictor or all.
- ``official``: the official V-JEPA layout (``module.backbone.``-prefixed ``encoder``,
  ``predictor``, ``target_encoder``; + sin-cos tables for V-JEPA 1 models). The file always holds
  all three: with ``what=target_encoder`` (or ``encoder``) the chosen encoder weights go under BOTH
  ``encoder`` and ``target_encoder``, so official eval scripts (which read ``target_encoder``) and
  tools that read ``encoder`` get the weights asked for; ``predictor`` is the trained predictor.
  ``what=all`` writes the three real parts (use it to resume official training). ``what=predictor``
  is refused (use native). Beside the weights the file holds what the official trainers and evals
  read (``official_extras``): ``epoch`` (step // iterations per epoch), ``opt`` (our AdamW state
  converted to the official init_opt's four groups, or those groups with an empty state when it
  cannot be mapped exactly), ``scaler`` (a GradScaler state), ``loss``, ``batch_size``,
  ``world_size``, ``lr``; docs/interop.md "Exports for the official tools" lists who reads what.
- ``hf``: a Hugging Face ``VJEPA2Model`` directory (config.json + model.safetensors; RoPE models
  only). Its single encoder is the chosen encoder (``what`` = target_encoder (default) or encoder),
  its predictor the trained predictor; ``all`` / ``predictor`` are refused.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError
from .layouts import POSITION_TABLE_KEYS, StateDict, strip_key

WHATS = ("target_encoder", "encoder", "predictor", "all")
FORMATS = ("native", "official", "hf")
TRAINING_FORMAT_VERSION = 1  # checkpoint["vjepa"]["format_version"] this reader understands

# Globals a training checkpoint may reference beyond torch's weights-only defaults, each mapped to
# what it is read as: (module, name) of the class to use, or None when the file is only vetted
# (handed to DeepSpeed's converter, never unpickled by us).
ALLOWED_GLOBALS: dict[str, tuple[str, str] | None] = {
    # Lightning's save_hyperparameters() container: a dict subclass, read as a plain dict
    "lightning.fabric.utilities.data.AttributeDict": ("builtins", "dict"),
    "lightning_fabric.utilities.data.AttributeDict": ("builtins", "dict"),
    "pathlib.PosixPath": ("pathlib", "PosixPath"),
    "pathlib.WindowsPath": ("pathlib", "PureWindowsPath"),
    "pathlib.PurePosixPath": ("pathlib", "PurePosixPath"),
    "pathlib.PureWindowsPath": ("pathlib", "PureWindowsPath"),
    "pathlib._local.PosixPath": ("pathlib", "PosixPath"),  # Python >= 3.13 pickles paths under this name
    "pathlib._local.PurePosixPath": ("pathlib", "PurePosixPath"),
    # DeepSpeed optimizer-state files (*_optim_states.pt)
    "deepspeed.runtime.fp16.loss_scaler.LossScaler": None,
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler": None,
    "deepspeed.runtime.zero.config.ZeroStageEnum": None,
    "deepspeed.utils.tensor_fragment.fragment_address": None,
}

# Wrapper segments that may appear in parameter names: Lightning (< 2.0) wrapped the module in
# `_forward_module`, torch.compile adds `_orig_mod`, FSDP / activation-checkpoint wrappers their own.
_WRAPPER_SEGMENTS = ("_forward_module.", "_orig_mod.", "_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")
_LEADING_PREFIXES = ("module.",)  # DDP / DeepSpeed engine


@dataclass
class TrainingCheckpoint:
    """Weights of one training checkpoint: fp32 CPU tensors, our native key names."""

    config: object  # vjepa_pipeline.config.Config
    encoder_sd: StateDict
    predictor_sd: StateDict
    target_sd: StateDict
    step: int | None
    source: Path | None = None
    kind: str = "lightning"  # or "deepspeed"
    # The trainer's AdamW state_dict as saved (Lightning ``optimizer_states[0]``), or None with the
    # reason in ``optimizer_note``; the AMP GradScaler state of a 16-mixed run, if any.
    optimizer_state: dict | None = None
    optimizer_note: str = ""
    scaler_state: dict | None = None


@dataclass
class ExportResult:
    out: Path
    fmt: str
    what: str
    step: int | None
    source: Path
    kind: str
    params: dict[str, int] = field(default_factory=dict)  # name in the written file -> parameter count
    notes: list[str] = field(default_factory=list)  # official format: epoch / opt / scaler, one line each

    def summary(self) -> str:
        parts = ", ".join(f"{name} {n / 1e6:.2f}M params" for name, n in self.params.items())
        step = f"step {self.step}" if self.step is not None else "step unknown"
        return "\n".join([f"exported {self.what} ({step}, {self.kind} checkpoint {self.source})",
                          f"  format {self.fmt} -> {self.out}", f"  contents: {parts}",
                          *(f"  {note}" for note in self.notes)])


# ---- locating the checkpoint -----------------------------------------------------------------
def _deepspeed_tag(path: Path) -> str | None:
    """The tag of a DeepSpeed checkpoint directory (``latest``'s content, else 'checkpoint'), or
    None when ``path`` is not one."""
    latest = path / "latest"
    candidates = []
    if latest.is_file():
        candidates.append(latest.read_text().strip())
    candidates.append("checkpoint")
    for tag in candidates:
        if tag and (path / tag).is_dir() and any((path / tag).glob("*model_states.pt")):
            return tag
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """The ``model.ckpt`` (file or DeepSpeed directory) that ``path`` designates.

    ``path`` may be a run directory (its ``last`` file is followed), a ``checkpoints/step_*``
    directory, a ``model.ckpt`` file or a DeepSpeed checkpoint directory."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_file():
        if path.name == "last":
            return resolve_checkpoint(path.parent)
        return path
    if _deepspeed_tag(path) is not None:
        return path
    if (path / "model.ckpt").exists():
        ckpt = path / "model.ckpt"
        if ckpt.is_dir() and _deepspeed_tag(ckpt) is None:
            raise CheckpointError(f"{ckpt}: directory is not a complete DeepSpeed checkpoint "
                                  "(no latest tag folder with *model_states.pt)")
        return ckpt
    last = path / "last"
    if last.is_file():
        try:
            name = last.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{last}: unreadable ({type(exc).__name__}); pass a checkpoints/step_* "
                                  "directory instead") from None
        target = path / "checkpoints" / name
        if not name or not (target / "model.ckpt").exists():
            raise CheckpointError(f"{path}: 'last' names checkpoint {name!r}, but {target / 'model.ckpt'} "
                                  "does not exist")
        return resolve_checkpoint(target)
    if (path / "checkpoints").is_dir() or (path / "config.yaml").is_file():
        steps = sorted(p.name for p in (path / "checkpoints").glob("step_*") if (p / "model.ckpt").exists())
        hint = (f"; complete checkpoints there: {', '.join(steps[-3:])} (pass one of them)" if steps
                else "; no checkpoint has completed yet")
        raise CheckpointError(f"{path}: run directory has no 'last' file{hint}")
    steps = sorted(p.name for p in path.glob("step_*") if (p / "model.ckpt").exists())
    if steps:
        raise CheckpointError(f"{path}: a checkpoints folder; pass its run directory or one of "
                              f"{', '.join(steps[-3:])}")
    raise CheckpointError(f"{path}: not a checkpoint: expected a run directory (with 'last'), a "
                          "checkpoints/step_* directory, a model.ckpt file or a DeepSpeed checkpoint "
                          "directory")


# ---- safe reading ----------------------------------------------------------------------------
def _unsafe_globals(path: Path) -> list[str]:
    """Globals a torch file's pickle references beyond torch's weights-only defaults (not run)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be inspected as a torch checkpoint ({type(exc).__name__}: "
                              f"{_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""


def unsafe_pickle_problem(path: str | Path) -> str | None:
    """Why a torch file must not be unpickled with ``weights_only=False`` (it references globals
    outside ``ALLOWED_GLOBALS``, or cannot be inspected), or None when it is safe to. Nothing in the
    file is run."""
    try:
        _refuse_unknown(Path(path), _unsafe_globals(Path(path)))
    except CheckpointError as exc:
        return str(exc)
    return None


def _refuse_unknown(path: Path, names: list[str]) -> None:
    unknown = sorted(n for n in names if n not in ALLOWED_GLOBALS)
    if unknown:
        raise CheckpointError(f"{path}: holds pickled objects of types not accepted for safety: "
                              f"{unknown[:6]}; "
                              "only tensors, containers and the types in "
                              "vjepa_pipeline.checkpoint.export.ALLOWED_GLOBALS are read")


def safe_torch_load(path: str | Path) -> dict:
    """``torch.load(weights_only=True)`` on CPU (memory-mapped when possible), accepting the few
    extra types of ``ALLOWED_GLOBALS``; anything else is refused with the offending type names."""
    path = Path(path)
    mmap = zipfile.is_zipfile(path)
    extra = []
    if mmap:
        names = _unsafe_globals(path)
        _refuse_unknown(path, names)
        for name in names:
            target = ALLOWED_GLOBALS[name]
            if target is None:
                raise CheckpointError(f"{path}: holds {name}, an optimizer-state type; this file is not a "
                                      "model checkpoint")
            extra.append((getattr(importlib.import_module(target[0]), target[1]), name))
    try:
        with torch.serialization.safe_globals(extra):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except CheckpointError:
        raise
    except Exception as exc:  # UnpicklingError (legacy non-zip files), RuntimeError, EOFError ...
        raise CheckpointError(f"{path}: cannot be read as a weights-only torch checkpoint "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    return obj


# ---- key handling ----------------------------------------------------------------------------
def clean_key(key: str) -> str:
    """Drop wrapper segments (``_forward_module.``, ``_orig_mod.`` ...) and leading ``module.``."""
    for seg in _WRAPPER_SEGMENTS:
        key = key.replace(seg, "")
    return strip_key(key, _LEADING_PREFIXES)


def _fp32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float32) if t.is_floating_point() else t.detach().cpu()


def split_module_state(sd: dict, where: str) -> tuple[StateDict, StateDict]:
    """LightningModule state dict (``encoder.*``, ``predictor.*``, possibly wrapped) -> (encoder,
    predictor) state dicts in our layout, fp32. Any other key is an error."""
    enc, pred, other = {}, {}, []
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            continue
        k = clean_key(key)
        if k.startswith("encoder."):
            enc[k[len("encoder."):]] = _fp32(value)
        elif k.startswith("predictor."):
            pred[k[len("predictor."):]] = _fp32(value)
        else:
            other.append(key)
    if other:
        raise CheckpointError(f"{where}: {len(other)} weights belong to neither encoder nor predictor: "
                              f"{other[:6]}")
    if not enc or not pred:
        raise CheckpointError(f"{where}: expected encoder.* and predictor.* weights, found "
                              f"{len(enc)} encoder and {len(pred)} predictor tensors")
    return enc, pred


def objective_kind(obj: dict) -> str | None:
    """``objective.kind`` of the config stored in a training checkpoint (``vjepa`` when the config predates
    the key), or None when ``obj`` holds no training config."""
    meta = obj.get("vjepa")
    cfg = meta.get("config") if isinstance(meta, dict) else None
    if not isinstance(cfg, dict):
        return None
    objective = cfg.get("objective")
    kind = objective.get("kind") if isinstance(objective, dict) else None
    return kind if isinstance(kind, str) else "vjepa"


def _config_and_target(obj: dict, where: str) -> tuple[object, StateDict, int | None]:
    from ..config import ConfigError, config_from_dict

    meta = obj.get("vjepa")
    if objective_kind(obj) == "action_conditioned":  # a frozen 'encoder', a predictor, no target encoder
        raise CheckpointError(f"{where}: a V-JEPA 2-AC (objective.kind action_conditioned) checkpoint: load "
                              "it with vjepa_pipeline.checkpoint.ac_checkpoint.load_world_model, export it with "
                              "vjepa export --format native or official")
    target = obj.get("target_encoder")
    if not isinstance(target, dict) or not target:
        raise CheckpointError(f"{where}: no 'target_encoder' entry: not a checkpoint written by vjepa "
                              f"pretrain (top-level keys: {sorted(map(str, obj))[:10]})")
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{where}: no 'vjepa' entry with the training config: not a checkpoint "
                              "written by vjepa pretrain")
    version = meta.get("format_version")
    if version != TRAINING_FORMAT_VERSION:
        raise CheckpointError(f"{where}: training checkpoint format_version {version!r}; this version of "
                              f"vjepa_pipeline reads {TRAINING_FORMAT_VERSION}")
    try:
        cfg = config_from_dict(meta["config"], validate=False, source=f"{where} (stored config)")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    target_sd = {clean_key(k): _fp32(v) for k, v in target.items() if isinstance(v, torch.Tensor)}
    step = obj.get("global_step", obj.get("global_steps"))
    return cfg, target_sd, int(step) if isinstance(step, int) else None


# ---- loading ---------------------------------------------------------------------------------
def load_training_checkpoint(path: str | Path) -> TrainingCheckpoint:
    """Read a training checkpoint (anything ``resolve_checkpoint`` accepts) into fp32 CPU state dicts."""
    ckpt = resolve_checkpoint(path)
    if ckpt.is_dir():
        return _load_deepspeed(ckpt)
    obj = safe_torch_load(ckpt)
    if not isinstance(obj.get("state_dict"), dict):
        raise CheckpointError(f"{ckpt}: no 'state_dict' entry: not a Lightning training checkpoint "
                              f"(top-level keys: {sorted(map(str, obj))[:10]}); for an exported or official "
                              "file use vjepa_pipeline.checkpoint.interop.load_part")
    cfg, target, step = _config_and_target(obj, str(ckpt))
    enc, pred = split_module_state(obj["state_dict"], str(ckpt))
    opt, note = lightning_optimizer_state(obj)
    scaler = obj.get("MixedPrecision")  # Lightning's AMP plugin state: the GradScaler's (16-mixed only)
    scaler = scaler if isinstance(scaler, dict) and "scale" in scaler else None
    return TrainingCheckpoint(cfg, enc, pred, target, step, source=ckpt, kind="lightning", optimizer_state=opt,
                              optimizer_note=note, scaler_state=scaler)


def lightning_optimizer_state(obj: dict) -> tuple[dict | None, str]:
    """The trainer's AdamW state_dict of a Lightning checkpoint (``optimizer_states[0]``), or None and why."""
    states = obj.get("optimizer_states")
    if not isinstance(states, list) or not states:
        return None, "the checkpoint holds no optimizer state"
    if len(states) != 1:
        return None, f"the checkpoint holds {len(states)} optimizer states (one AdamW expected)"
    state = states[0]
    if not isinstance(state, dict) or not isinstance(state.get("state"), dict) \
            or not isinstance(state.get("param_groups"), list):
        return None, "the optimizer state is not a torch.optim state_dict"
    return state, ""


def _load_deepspeed(ckpt: Path) -> TrainingCheckpoint:
    tag = _deepspeed_tag(ckpt)
    tag_dir = ckpt / tag
    states = [tag_dir / n for n in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt")
              if (tag_dir / n).is_file()]
    if not states:
        raise CheckpointError(f"{tag_dir}: no mp_rank_00_model_states.pt (DeepSpeed model states)")
    client = safe_torch_load(states[0])
    cfg, target, step = _config_and_target(client, str(states[0]))
    optim_files = sorted(tag_dir.glob("*_optim_states.pt"))
    if not optim_files:
        raise CheckpointError(f"{tag_dir}: no *_optim_states.pt: the fp32 master weights of the encoder "
                              "and predictor are missing (a DeepSpeed checkpoint saved without optimizer "
                              "states?)")
    # DeepSpeed's converter unpickles with weights_only=False: vet every file it will open first.
    for f in sorted(tag_dir.glob("*_model_states.pt")) + optim_files:
        _refuse_unknown(f, _unsafe_globals(f))
    try:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    except ImportError as exc:
        raise CheckpointError(f"{ckpt}: reading a DeepSpeed checkpoint needs the deepspeed package "
                              f"({exc})") from None
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            sd = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag=tag)
    except Exception as exc:  # FileNotFoundError / ValueError for incomplete or mixed shards
        raise CheckpointError(f"{ckpt}: DeepSpeed could not consolidate the fp32 weights "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None
    enc, pred = split_module_state(sd, str(ckpt))
    return TrainingCheckpoint(cfg, enc, pred, target, step, source=ckpt, kind="deepspeed",
                              optimizer_note="DeepSpeed keeps the AdamW moments ZeRO-sharded in *_optim_states.pt, "
                                             "which this export does not consolidate")


# ---- what the official trainers and evals read besides the weights ------------------------------
# The official V-JEPA (app/vjepa/train.py, both repos) saves and reads, at the top level of its file:
# encoder / predictor / target_encoder (DDP-wrapped: 'module.backbone.' keys), 'opt' (its AdamW
# state_dict), 'scaler' (GradScaler state or None), 'epoch', 'loss', 'batch_size', 'world_size',
# 'lr'. docs/interop.md "Exports for the official tools" lists which script reads which key.
OFFICIAL_IPE = 300  # optimization.ipe of every published V-JEPA / V-JEPA 2 recipe
# torch.amp.GradScaler() defaults: the official trainers make one whenever meta.dtype is bfloat16 or
# float16 (every published recipe) and then call scaler.load_state_dict(checkpoint['scaler']),
# which fails on None or {}.
FRESH_SCALER_STATE = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                      "_growth_tracker": 0}

# The official parameter order (nn.Module.named_parameters(): a module's own parameters, then its
# children in registration order) as ranks per name segment: pos_embed is an own nn.Parameter of the
# official VisionTransformer (requires_grad=False), so it comes first, then patch_embed, blocks,
# norm; the predictor: predictor_pos_embed, predictor_embed, mask_tokens, predictor_blocks,
# predictor_norm, predictor_proj; in a block norm1, attn (qkv, proj), norm2, mlp (fc1, fc2);
# weight before bias. A parameter with a segment not listed here has no known official place.
_OFFICIAL_RANK = {
    "pos_embed": 0, "patch_embed": 1, "blocks": 2, "norm": 3,
    "predictor_pos_embed": 0, "predictor_embed": 1, "mask_tokens": 2, "predictor_blocks": 3,
    "predictor_norm": 4, "predictor_proj": 5,
    "norm1": 0, "attn": 1, "norm2": 2, "mlp": 3, "qkv": 0, "proj": 1, "fc1": 0, "fc2": 1,
    "weight": 0, "bias": 1,
}
OFFICIAL_GROUPS = (("encoder", False), ("predictor", False), ("encoder", True), ("predictor", True))


def official_order_key(name: str) -> tuple[int, ...]:
    """Sort key placing ``name`` where the official module's named_parameters() yields it
    (ValueError for a name with no known official place)."""
    key = []
    for seg in name.split("."):
        if seg.isdigit():
            key.append(int(seg))
        elif seg in _OFFICIAL_RANK:
            key.append(_OFFICIAL_RANK[seg])
        else:
            raise ValueError(f"parameter {name!r} has no known place in the official parameter order")
    return tuple(key)


def official_no_decay(name: str, shape) -> bool:
    """The official init_opt's rule: no weight decay for ('bias' in name) or 1-D parameters."""
    return "bias" in name or len(shape) == 1


def official_parameters(module: nn.Module) -> list[tuple[str, torch.Size]]:
    """(name, shape) of every nn.Parameter the official module of ``module`` has, in the official
    order when it is known (else ours): our parameters plus the sin-cos tables, which are buffers
    here and frozen parameters there."""
    params = [(n, p.shape) for n, p in module.named_parameters()]
    tables = [(n, b.shape) for n, b in module.named_buffers() if n in POSITION_TABLE_KEYS]
    try:
        return sorted(tables + params, key=lambda item: official_order_key(item[0]))
    except ValueError:
        return tables + params


def official_param_groups(encoder: nn.Module, predictor: nn.Module) -> list[list[tuple[str, str, torch.Size]]]:
    """The official init_opt's four AdamW groups as (part, name, shape) lists: encoder decay,
    predictor decay, encoder no-decay, predictor no-decay (the last two with WD_exclude)."""
    params = {"encoder": official_parameters(encoder), "predictor": official_parameters(predictor)}
    return [[(part, n, s) for n, s in params[part] if official_no_decay(n, s) == no_decay]
            for part, no_decay in OFFICIAL_GROUPS]


def adamw_group(lr: float, betas, eps: float, weight_decay: float, saved: dict | None = None) -> dict:
    """A complete AdamW param-group dict (this torch's keys), hyper-parameters from ``saved`` where given."""
    template = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=lr, betas=tuple(betas), eps=eps,
                                 weight_decay=weight_decay).state_dict()["param_groups"][0]
    template.pop("params")
    for key in template:
        if saved is not None and key in saved and key not in ("weight_decay", "initial_lr"):
            template[key] = saved[key]
    template["weight_decay"] = weight_decay
    return template


def _unused_mask_tokens(cfg, predictor: nn.Module) -> set[str]:
    """Names of the predictor mask tokens our objective freezes (objectives/vjepa.py: only the
    tokens the mask generators use train, so they alone are in the trainer's optimizer)."""
    count = len(getattr(predictor, "mask_tokens", ()))
    rule = getattr(cfg.model.predictor, "mask_token_rule", "per_generator")
    try:
        from ..models.jepa import used_mask_tokens

        used = used_mask_tokens(len(cfg.masks), count, rule)
    except (ImportError, ValueError):
        used = set(range(len(cfg.masks)))
    return {f"mask_tokens.{i}" for i in range(count) if i not in used}


def _our_param_names(cfg, encoder: nn.Module, predictor: nn.Module) -> list[list[list[tuple[str, str]]]]:
    """Candidate layouts of our trainer's AdamW, (part, name) per group: models.optim.param_groups
    over [encoder, predictor] as train/module.py's configure_optimizers builds it, without the
    mask tokens the objective freezes (as it trains), or over every parameter."""
    from ..models.optim import param_groups

    names = {id(p): (part, n) for part, m in (("encoder", encoder), ("predictor", predictor))
             for n, p in m.named_parameters()}
    groups = [[names[id(p)] for p in g["params"]] for g in param_groups([encoder, predictor], 0.0)]
    frozen = {("predictor", n) for n in _unused_mask_tokens(cfg, predictor)}
    return [[[pn for pn in g if pn not in frozen] for g in groups], groups]


def _map_saved_state(saved: dict, cfg, encoder: nn.Module, predictor: nn.Module) -> dict[tuple[str, str], dict]:
    """Our saved AdamW state keyed by (part, parameter name); ValueError when it cannot be mapped
    exactly (group sizes, unknown names, shapes)."""
    groups = saved["param_groups"]
    ids = [i for g in groups for i in g.get("params", [])]
    if ids and all(isinstance(i, str) for i in ids):  # FSDP full optimizer state: keyed by parameter name
        by_id = {}
        for i in ids:
            part, _, name = clean_key(i).partition(".")
            by_id[i] = (part, name)
    else:
        sizes = [len(g.get("params", [])) for g in groups]
        candidates = _our_param_names(cfg, encoder, predictor)
        ours = next((c for c in candidates if [len(g) for g in c] == sizes), None)
        if ours is None:
            raise ValueError(f"its param groups hold {sizes} parameters, the trainer's groups for this model "
                             f"{' or '.join(str([len(g) for g in c]) for c in candidates)}")
        by_id = dict(zip(ids, (pn for g in ours for pn in g)))
    shapes = {(part, n): p.shape for part, m in (("encoder", encoder), ("predictor", predictor))
              for n, p in m.named_parameters()}
    out = {}
    for i, st in saved["state"].items():
        where = by_id.get(i)
        if where is None or where not in shapes:
            raise ValueError(f"state entry {i!r} belongs to no encoder / predictor parameter")
        missing = {"step", "exp_avg", "exp_avg_sq"} - set(st)
        if missing:
            raise ValueError(f"state of {where[0]}.{where[1]} lacks {sorted(missing)} (not an AdamW state)")
        for k in ("exp_avg", "exp_avg_sq"):
            if tuple(st[k].shape) != tuple(shapes[where]):
                raise ValueError(f"{k} of {where[0]}.{where[1]} has shape {tuple(st[k].shape)}, the parameter "
                                 f"{tuple(shapes[where])}")
        step = st["step"]
        out[where] = {"step": (step.detach().to("cpu", torch.float32) if isinstance(step, torch.Tensor)
                               else torch.tensor(float(step))),
                      "exp_avg": _fp32(st["exp_avg"]).contiguous(), "exp_avg_sq": _fp32(st["exp_avg_sq"]).contiguous()}
    return out


def group_hyperparameters(cfg, saved: dict | None, step: int) -> tuple[dict | None, tuple]:
    """(our first optimizer group or None, (lr, weight decay, betas, eps)) for an official ``opt``: the
    values the saved optimizer last used, else the schedules' values at ``step``."""
    from ..models.optim import learning_rate, weight_decay

    decay_group = saved["param_groups"][0] if saved and saved.get("param_groups") else None
    if decay_group is not None:
        lr, wd = float(decay_group.get("lr", cfg.optim.lr)), float(decay_group.get("weight_decay", 0.0))
        betas, eps = decay_group.get("betas", cfg.optim.betas), float(decay_group.get("eps", cfg.optim.eps))
    else:
        total = cfg.train.max_steps
        lr, wd = learning_rate(cfg.optim, step, total), weight_decay(cfg.optim, step, total)
        betas, eps = cfg.optim.betas, cfg.optim.eps
    return decay_group, (lr, wd, betas, eps)


def official_optimizer_state(ckpt: TrainingCheckpoint, encoder: nn.Module, predictor: nn.Module) -> tuple[dict, str]:
    """``opt`` for the official trainers: an AdamW state_dict laid out as their init_opt's optimizer
    (four groups, the official parameter order, WD_exclude on the no-decay groups), carrying our
    per-parameter moments and step counts; plus a note saying what it holds.

    When our state cannot be mapped exactly (no optimizer state in the checkpoint, an unknown
    parameter, a group or shape mismatch) the groups are written with an empty state, which the
    official optimizer loads as well: AdamW then restarts its moments (and bias correction) at the
    first resumed step."""
    cfg, step = ckpt.config, ckpt.step or 0
    groups = official_param_groups(encoder, predictor)
    index = {(part, n): i for i, (part, n, _) in enumerate(pn for g in groups for pn in g)}
    saved = ckpt.optimizer_state
    decay_group, (lr, wd, betas, eps) = group_hyperparameters(cfg, saved, step)
    param_groups, start = [], 0
    for g, (_, no_decay) in zip(groups, OFFICIAL_GROUPS):
        group = adamw_group(lr, betas, eps, 0.0 if no_decay else wd, decay_group)
        if no_decay:
            group["WD_exclude"] = True  # the official CosineWDSchedule skips these groups
        group["params"] = list(range(start, start + len(g)))
        start += len(g)
        param_groups.append(group)
    reason = ckpt.optimizer_note or "the checkpoint holds no optimizer state"
    state: dict[int, dict] = {}
    trainable = 0
    if saved is not None:
        reason = ""
        trainable = sum(len(g.get("params", [])) for g in saved["param_groups"])
        try:
            mapped = _map_saved_state(saved, cfg, encoder, predictor)
            missing = [f"{part}.{n}" for part, n in mapped if (part, n) not in index]
            if missing:
                raise ValueError(f"{missing[0]} is not in the official groups")
            for part, n, _ in (pn for g in groups for pn in g):
                official_order_key(n)  # ValueError: the official order is not known for this model
            state = {index[k]: v for k, v in mapped.items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # also a malformed state: never guessed
            reason = f"our optimizer state does not map onto the official groups exactly ({exc})"
    sizes = "/".join(str(len(g)) for g in groups)
    if not reason:
        note = (f"opt: AdamW state in the official init_opt layout (4 groups of {sizes} parameters): moments and "
                f"step counts of {len(state)} of {trainable} trainable parameters, mapped by name")
    else:
        note = (f"opt: AdamW groups in the official init_opt layout (4 groups of {sizes} parameters) with an EMPTY "
                f"state: {reason}; a resumed official run restarts AdamW's moments and bias correction")
    return {"state": state, "param_groups": param_groups}, note


def official_epoch(ckpt: TrainingCheckpoint, ipe: int | None = None) -> tuple[int, str]:
    """The official ``epoch`` (completed epochs; their resume fast-forwards its schedules by
    epoch x ipe steps) for our optimizer step: step // ipe, with ipe = ``ipe`` if given, else
    data.batches_per_epoch / train.accumulate_grad_batches when the recipe sets it, else 300 (the
    published recipes' optimization.ipe)."""
    return official_epoch_of(ckpt.config, ckpt.step, ipe)


def official_epoch_of(cfg, step: int | None, ipe: int | None = None) -> tuple[int, str]:
    """:func:`official_epoch` for a config and step (any objective)."""
    if ipe is not None:
        source = "--ipe"
    elif cfg.data.batches_per_epoch:
        ipe = max(cfg.data.batches_per_epoch // max(cfg.train.accumulate_grad_batches, 1), 1)
        source = "data.batches_per_epoch / train.accumulate_grad_batches"
    else:
        ipe, source = OFFICIAL_IPE, "the published recipes' optimization.ipe"
    if step is None:
        return 0, f"epoch: 0 (the checkpoint does not record its step; ipe {ipe})"
    epoch, rest = divmod(step, ipe)
    text = (f"epoch: {epoch} = step {step} // ipe {ipe} ({source}); set optimization.ipe: {ipe} in the "
            "official config")
    if rest:
        text += (f"; an official resume restarts epoch {epoch} at its step {epoch * ipe}, "
                 f"{rest} steps before this checkpoint")
    return epoch, text


def official_scaler(state: dict | None) -> tuple[dict, str]:
    """The official ``scaler`` entry: the run's GradScaler state (16-mixed), else a fresh one (the official
    bf16 / fp16 trainers load it and fail on None); and a note."""
    if state is not None:
        return ({k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in state.items()},
                "scaler: the run's GradScaler state (16-mixed)")
    return dict(FRESH_SCALER_STATE), ("scaler: a fresh GradScaler state (the official bf16/fp16 trainers "
                                      "load one; ignored in fp32)")


def official_extras(ckpt: TrainingCheckpoint, encoder: nn.Module, predictor: nn.Module,
                    ipe: int | None = None) -> tuple[dict, list[str]]:
    """The top-level entries the official trainers read or write besides the weights (``epoch``,
    ``opt``, ``scaler``, ``loss``, ``batch_size``, ``world_size``, ``lr``) and a note per decision."""
    cfg = ckpt.config
    epoch, epoch_note = official_epoch(ckpt, ipe)
    opt, opt_note = official_optimizer_state(ckpt, encoder, predictor)
    scaler, scaler_note = official_scaler(ckpt.scaler_state)
    extras = {
        "epoch": epoch,
        "opt": opt,
        "scaler": scaler,
        "loss": float("nan"),  # not stored in our checkpoints; written by the official trainer, read by none
        "batch_size": cfg.data.batch_size * cfg.train.accumulate_grad_batches,  # clips per rank per step
        "world_size": cfg.train.devices * cfg.train.num_nodes,
        "lr": float(cfg.optim.lr),  # the official 'lr': the recipe's peak (ref) learning rate
    }
    return extras, [epoch_note, opt_note, scaler_note]


# ---- export ----------------------------------------------------------------------------------
def check_request(what: str, fmt: str) -> None:
    """Raise ValueError (one line) for an unknown or unsupported ``what`` / ``fmt`` combination."""
    if what not in WHATS:
        raise ValueError(f"what must be one of {', '.join(WHATS)}; got {what!r}")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if fmt == "official" and what == "predictor":
        raise ValueError("the official format holds whole models (encoder, predictor, target_encoder): use "
                         "--what all, or --format native for the predictor alone")
    if fmt == "hf" and what in ("all", "predictor"):
        raise ValueError(f"a Hugging Face VJEPA2Model holds one encoder and the predictor: use --what "
                         f"target_encoder (default) or encoder, not {what}")


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_modules(ckpt: TrainingCheckpoint) -> dict[str, nn.Module]:
    """encoder / predictor / target_encoder modules built from the stored config, loaded strictly."""
    from ..models.build import build_encoder, build_predictor
    from .interop import load_state_strict

    cfg = ckpt.config
    frames, crop = cfg.data.num_frames, cfg.data.crop_size
    modules = {"encoder": build_encoder(cfg.model, frames, crop),
               "predictor": build_predictor(cfg.model, frames, crop),
               "target_encoder": build_encoder(cfg.model, frames, crop)}
    states = {"encoder": ckpt.encoder_sd, "predictor": ckpt.predictor_sd, "target_encoder": ckpt.target_sd}
    for name, sd in states.items():
        load_state_strict(modules[name], sd, what=name)
        modules[name].eval()
    return modules


def export(path: str | Path, out: str | Path, what: str = "target_encoder", fmt: str = "native",
           verbose: bool = False, ipe: int | None = None) -> ExportResult:
    """Export ``what`` from the training checkpoint at ``path`` to ``out`` in format ``fmt``.

    ``out`` is a file for native / official and a directory for hf. See the module docstring for
    what each format holds. ``ipe`` (official only): iterations per epoch for the official
    ``epoch`` (see ``official_epoch``). Raises ValueError for an unsupported request,
    CheckpointError for a checkpoint that cannot be read or does not match its config."""
    from ..config import config_to_dict
    from .interop import save_hf, save_native, save_official

    check_request(what, fmt)
    if ipe is not None and (fmt != "official" or ipe < 1):
        raise ValueError(f"ipe (iterations per epoch) is a positive number for --format official only; got {ipe} "
                         f"with --format {fmt}")
    out = Path(out)
    if fmt in ("native", "official") and out.is_dir():
        raise CheckpointError(f"{out}: is a directory; --format {fmt} writes one file (give a file name)")
    if fmt == "hf" and out.is_file():
        raise CheckpointError(f"{out}: is a file; --format hf writes a directory")
    ckpt = load_training_checkpoint(path)
    cfg = ckpt.config
    if fmt == "hf" and cfg.model.pos_embed != "rope":
        raise CheckpointError(f"{ckpt.source}: this model uses model.pos_embed={cfg.model.pos_embed} "
                              "(V-JEPA 1 sin-cos positions); Hugging Face VJEPA2 supports RoPE models only: "
                              "use --format native or official")
    modules = build_modules(ckpt)
    chosen = modules["encoder" if what == "encoder" else "target_encoder"]
    notes: list[str] = []
    if fmt == "native":
        names = ("encoder", "predictor", "target_encoder") if what == "all" else (what,)
        parts = {n: modules[n] for n in names}
        extra = {"step": ckpt.step, "exported_from": str(ckpt.source)}
        save_native(out, parts, config=config_to_dict(cfg), **extra)
    elif fmt == "official":
        if what == "all":
            parts = {n: modules[n] for n in ("encoder", "predictor", "target_encoder")}
        else:
            parts = {"encoder": chosen, "predictor": modules["predictor"], "target_encoder": chosen}
        # the optimizer state is the context encoder's and the predictor's, whatever 'encoder' holds
        extras, notes = official_extras(ckpt, modules["encoder"], modules["predictor"], ipe)
        if what != "all":
            notes.append(f"'encoder' holds the {what} weights: to resume official training export --what all")
        save_official(out, parts, **extras)
    else:
        save_hf(out, chosen, modules["predictor"], cfg.data.num_frames, cfg.data.crop_size)
        parts = {"encoder": chosen, "predictor": modules["predictor"]}
    # label aliased entries (official / hf files holding the target under the name 'encoder')
    chosen_name = "encoder" if what == "encoder" else "target_encoder"
    params = {(f"{n} (= {chosen_name})" if m is chosen and n != chosen_name else n): _params(m)
              for n, m in parts.items()}
    result = ExportResult(out=out, fmt=fmt, what=what, step=ckpt.step, source=ckpt.source, kind=ckpt.kind,
                          params=params, notes=notes)
    if verbose:
        print(result.summary())
    return result


__all__ = ["ALLOWED_GLOBALS", "FRESH_SCALER_STATE", "OFFICIAL_GROUPS", "OFFICIAL_IPE", "ExportResult",
           "TrainingCheckpoint", "adamw_group", "build_modules", "check_request", "clean_key", "export",
           "lightning_optimizer_state", "load_training_checkpoint", "objective_kind", "official_epoch",
           "official_epoch_of", "official_extras", "official_optimizer_state", "official_order_key",
           "official_param_groups", "official_scaler", "resolve_checkpoint", "safe_torch_load",
           "split_module_state"]
