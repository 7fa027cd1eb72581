"""The cross-field checks on a built Config (ConfigError lives in ``vjepa_pipeline.errors``).

Every problem is one line that starts with the dotted key path it is about, e.g.
``optim.lrr: unknown key; did you mean 'optim.lr'?``; problems found together are raised
together in one ConfigError, one per line.

``config_problems`` returns every cross-field problem of a built Config; ``validate_config``
raises them. Comparisons are written as ``not x > 0`` so that NaN fails them too.
"""

from __future__ import annotations

import math
import re

from vjepa_pipeline.config.messages import closest, short
from vjepa_pipeline.config.schema import Config, MaskBlockConfig, PredictorConfig
from vjepa_pipeline.config.sizes import VIT_SIZES, unknown_size_message
from vjepa_pipeline.errors import ConfigError

__all__ = ["ConfigError", "config_problems", "mask_block_problems", "validate_config"]  # ConfigError: re-exported for convenience

# ----------------------------------------------------------------------------- checks

_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
# 3D RoPE splits each head into 3 equal even chunks (frame/row/col): head dim >= 6.
_MIN_ROPE_HEAD_DIM = 6
# Step counts past this are typos (2**31 - 1: also where step arithmetic in C ints would overflow).
MAX_STEPS = 2**31 - 1


class _Checker:
    """Accumulates problems; each helper checks one field and phrases the message."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, message: str) -> None:
        self.problems.append(message)

    def positive(self, path: str, value: float | None) -> bool:
        if value is not None and not value > 0:
            self.add(f"{path}: must be > 0, got {value}")
            return False
        return True

    def non_negative(self, path: str, value: float | None) -> None:
        if value is not None and not value >= 0:
            self.add(f"{path}: must be >= 0, got {value}")

    def finite(self, path: str, value: float | None) -> bool:
        """inf passes ``> 0`` and ``>= 0``; a learning rate, weight decay, eps ... must be a number."""
        if value is not None and isinstance(value, float) and math.isinf(value):
            self.add(f"{path}: must be a finite number, got {value}")
            return False
        return True

    def in_range(
        self, path: str, value: float, lo: float, hi: float, hi_open: bool = False
    ) -> None:
        ok = lo <= value < hi if hi_open else lo <= value <= hi
        if not ok:
            self.add(f"{path}: must be in [{lo}, {hi}{')' if hi_open else ']'}, got {value}")

    def pair(self, path: str, pair: tuple[float, float], unit: bool = True) -> None:
        """A (low, high) pair: low <= high, both in [0, 1] (unit) or both > 0 (not unit)."""
        if unit and not all(0 <= v <= 1 for v in pair):
            self.add(f"{path}: values must be in [0, 1], got {list(pair)}")
        elif not unit and not all(v > 0 for v in pair):
            self.add(f"{path}: values must be > 0, got {list(pair)}")
        elif not pair[0] <= pair[1]:
            self.add(f"{path}: low must be <= high, got {list(pair)}")

    def heads(self, prefix: str, dim: int, heads: int, rope: bool, detail: str = "") -> None:
        """embed_dim divisible by num_heads, and a RoPE-compatible head dim."""
        if dim % heads:
            self.add(
                f"{prefix}.num_heads: embed_dim {dim}{detail} is not divisible by num_heads {heads}"
            )
        elif rope and dim // heads < _MIN_ROPE_HEAD_DIM:
            self.add(
                f"{prefix}.num_heads: head dim {dim // heads} (= {dim} / {heads}) is too small for "
                f"3D RoPE, which needs >= {_MIN_ROPE_HEAD_DIM} (an even share for each of t, h, w)"
            )


def config_problems(cfg: Config) -> list[str]:
    """Every cross-field problem of a (type-correct) Config, one message per problem."""
    c = _Checker()
    m, pred, d, o, t = cfg.model, cfg.model.predictor, cfg.data, cfg.optim, cfg.train
    rope = m.pos_embed == "rope"

    if not _NAME_RE.fullmatch(cfg.name) or cfg.name in (".", ".."):
        c.add(f"name: {short(cfg.name)} must be a plain directory name (letters, digits, '.', '_', '-')")

    # --- model
    size_ok = m.size in VIT_SIZES
    if not size_ok:
        c.add(unknown_size_message(m.size, VIT_SIZES))
    overrides_ok = all(
        [
            c.positive(f"model.{k}", getattr(m, k))
            for k in ("embed_dim", "depth", "num_heads", "mlp_ratio")
        ]
    )
    for key in ("patch_size", "tubelet_size", "in_chans"):
        c.positive(f"model.{key}", getattr(m, key))
    c.in_range("model.drop_path_rate", m.drop_path_rate, 0.0, 1.0, hi_open=True)
    if m.rope_rescale_grid is not None and not m.rope_rescale_grid >= 2:
        c.add(f"model.rope_rescale_grid: must be >= 2 patches (V-JEPA 2.1 uses 16) or null, got {m.rope_rescale_grid}")
    if size_ok and overrides_ok and m.encoder_kind == "vit":  # the conv encoder has no heads
        dim, _, heads, _ = m.resolved_size()
        detail = (
            "" if m.embed_dim is not None and m.num_heads is not None else f" (size {m.size!r})"
        )
        c.heads("model", dim, heads, rope, detail)
    ac = cfg.objective.kind == "action_conditioned"
    if m.encoder_kind == "conv":
        c.positive("model.conv_channels", m.conv_channels)
        if c.positive("model.conv_stages", m.conv_stages) and d.crop_size % (2 ** m.conv_stages):
            c.add(f"data.crop_size: the conv encoder halves the frame model.conv_stages={m.conv_stages} times; "
                  f"{d.crop_size} is not divisible by {2 ** m.conv_stages}")
        if not ac:
            c.add("model.encoder_kind: conv (one latent per frame) is for world models (objective.kind="
                  "action_conditioned); V-JEPA's masked prediction needs the ViT's token grid (vit)")
    _check_predictor(c, pred, rope or ac)  # the action-conditioned predictor always uses RoPE

    # --- masks
    if not cfg.masks:
        c.add("masks: at least one mask generator is required")
    elif pred.mask_token_rule == "per_generator" and len(cfg.masks) > pred.num_mask_tokens:
        c.add(
            f"masks: {len(cfg.masks)} mask generators but model.predictor.num_mask_tokens is "
            f"{pred.num_mask_tokens}; each generator needs its own mask token under "
            "model.predictor.mask_token_rule=per_generator (or use shared: token 0 for all)"
        )
    for i, mask in enumerate(cfg.masks):
        c.problems.extend(mask_block_problems(mask, f"masks[{i}]"))

    # --- data
    if d.source != "synthetic" and not d.path and not d.sources:
        c.add(
            f"data.path: required when data.source is {d.source!r} (only 'synthetic' needs no path); "
            "or list a mixture in data.sources"
        )
    _check_sources(c, cfg)
    for key in ("num_frames", "frame_step", "crop_size", "batch_size"):
        c.positive(f"data.{key}", getattr(d, key))
    c.non_negative("data.num_workers", d.num_workers)
    for key in ("target_fps", "num_clips", "shuffle_buffer", "batches_per_epoch"):
        c.positive(f"data.{key}", getattr(d, key))
    c.pair("data.crop_scale", d.crop_scale)
    c.pair("data.crop_ratio", d.crop_ratio, unit=False)
    c.in_range("data.max_failure_rate", d.max_failure_rate, 0.0, 1.0)
    if d.num_clips > 0 and d.batch_size > 0 and d.batch_size % d.num_clips:
        c.add(f"data.num_clips: {d.num_clips} clips per video must divide data.batch_size {d.batch_size}")
    if m.patch_size > 0 and d.crop_size % m.patch_size:
        c.add(f"data.crop_size: {d.crop_size} is not divisible by model.patch_size {m.patch_size}")
    if m.tubelet_size > 0 and d.num_frames % m.tubelet_size and not ac:  # world models encode frame by frame
        c.add(
            f"data.num_frames: {d.num_frames} is not divisible by "
            f"model.tubelet_size {m.tubelet_size}"
        )

    # --- optim
    for key in (
        "lr",
        "start_lr",
        "final_lr",
        "weight_decay",
        "final_weight_decay",
        "warmup_steps",
        "cooldown_steps",
    ):
        if c.finite(f"optim.{key}", getattr(o, key)):
            c.non_negative(f"optim.{key}", getattr(o, key))
    for i, beta in enumerate(o.betas):
        c.in_range(f"optim.betas[{i}]", beta, 0.0, 1.0, hi_open=True)
    for key in ("eps", "clip_grad"):
        if c.finite(f"optim.{key}", getattr(o, key)):
            c.positive(f"optim.{key}", getattr(o, key))
    c.pair("optim.ema_momentum", o.ema_momentum)
    if o.warmup_steps + o.cooldown_steps > t.max_steps:
        c.add(
            f"optim.warmup_steps: warmup_steps + cooldown_steps = "
            f"{o.warmup_steps + o.cooldown_steps} exceeds train.max_steps = {t.max_steps}"
        )

    # --- train / logging / launch
    for key in (
        "max_steps",
        "devices",
        "num_nodes",
        "accumulate_grad_batches",
        "checkpoint_every_steps",
        "keep_last",
    ):
        c.positive(f"train.{key}", getattr(t, key))
    if t.max_steps > MAX_STEPS:
        c.add(f"train.max_steps: {t.max_steps} is beyond any run (at most {MAX_STEPS})")
    c.positive("train.checkpoint_every_minutes", t.checkpoint_every_minutes)
    c.positive("train.max_nan_skips", t.max_nan_skips)
    c.positive("train.stats_every_steps", t.stats_every_steps)
    c.positive("train.num_threads", t.num_threads)
    if not t.run_dir:
        c.add("train.run_dir: must not be empty")
    c.positive("logging.log_every_steps", cfg.logging.log_every_steps)
    if not cfg.logging.wandb_project:
        c.add("logging.wandb_project: must not be empty")
    la = cfg.launch
    for key in ("time_min", "nodes", "cpus_per_task"):
        c.positive(f"launch.{key}", getattr(la, key))
    for key in ("gpus_per_node", "signal_delay_s", "max_requeues"):
        c.non_negative(f"launch.{key}", getattr(la, key))
    c.positive("launch.tasks_per_node", la.tasks_per_node)
    c.positive("launch.array_parallelism", la.array_parallelism)
    if la.signal.upper().removeprefix("SIG") not in ("USR1", "USR2"):
        c.add(f"launch.signal: must be USR2 or USR1 (SIGTERM belongs to SLURM's kill sequence), got {short(la.signal)}")
    if la.time_min > 0 and la.signal_delay_s >= la.time_min * 60:
        c.add(
            f"launch.signal_delay_s: {la.signal_delay_s} s is not shorter than "
            f"launch.time_min ({la.time_min} min)"
        )
    _check_shards(c, cfg.shards)
    _check_world_model(c, cfg)
    _check_regularizers(c, cfg)
    return c.problems


def _check_world_model(c: _Checker, cfg: Config) -> None:
    """The action-conditioned objective and its predictor go together; its data are trajectory windows."""
    wm, d = cfg.world_model, cfg.data
    ac_objective = cfg.objective.kind == "action_conditioned"
    ac_predictor = cfg.model.predictor.kind == "action_conditioned"
    if ac_objective != ac_predictor:
        c.add(f"model.predictor.kind: {cfg.model.predictor.kind!r} does not go with objective.kind "
              f"{cfg.objective.kind!r}; the action-conditioned objective and predictor are used together")
    for key in ("action_dim", "state_dim", "rollout_steps", "extrinsics_dim"):
        c.positive(f"world_model.{key}", getattr(wm, key))
    if wm.use_extrinsics and wm.extrinsics_dim is None and wm.action_dim < 2:
        c.add("world_model.extrinsics_dim: the default (action_dim - 1) is 0 here; set it to the data's")
    for key in ("loss_exp", "teacher_forcing_weight", "rollout_weight"):
        if c.finite(f"world_model.{key}", getattr(wm, key)):
            c.non_negative(f"world_model.{key}", getattr(wm, key))
    if not wm.loss_exp > 0:
        c.add(f"world_model.loss_exp: must be > 0, got {wm.loss_exp}")
    if not ac_objective:
        return
    if d.source != "shards":
        c.add(f"data.source: the action-conditioned objective reads trajectory shards (data.source=shards), "
              f"got {d.source!r}")
    if d.num_frames < 2:
        c.add(f"data.num_frames: a trajectory window needs >= 2 frames, got {d.num_frames}")
    elif wm.rollout_steps > d.num_frames - 1:
        c.add(f"world_model.rollout_steps: {wm.rollout_steps} steps need windows of >= {wm.rollout_steps + 1} "
              f"frames (data.num_frames={d.num_frames})")
    if d.hflip:
        c.add("data.hflip: a mirrored frame contradicts its actions; set data.hflip=false for world models")
    if d.num_clips != 1:
        c.add(f"data.num_clips: trajectory windows are one per sample; set data.num_clips=1 (got {d.num_clips})")
    for key in ("temporal_weight", "inverse_dynamics_weight"):
        if c.finite(f"world_model.{key}", getattr(wm, key)):
            c.non_negative(f"world_model.{key}", getattr(wm, key))
            if getattr(wm, key) > 0 and not wm.train_encoder:
                c.add(f"world_model.{key}: shapes the encoder's latents; it needs world_model.train_encoder=true "
                      "(a frozen encoder does not change)")
    ob = cfg.objective
    if wm.train_encoder and not (ob.vicreg_variance_weight > 0 or ob.sigreg_weight > 0):
        c.add("world_model.train_encoder: an encoder trained with the predictor collapses without a regulariser "
              "(every frame mapped to one point is predicted perfectly); set objective.vicreg_variance_weight "
              "(e.g. 16) or objective.sigreg_weight > 0")
    if wm.train_encoder and d.batch_size < 2:
        c.add(f"world_model.train_encoder: the regularisers compare the frames of a batch; data.batch_size must "
              f"be >= 2, got {d.batch_size}")
    if cfg.train.strategy.startswith("deepspeed") or cfg.train.strategy == "fsdp":
        trains = "a small encoder and its predictor" if wm.train_encoder else "only its predictor"
        c.add(f"train.strategy: {cfg.train.strategy} shards the trainable networks; the world model trains {trains}: "
              "use auto or ddp")


def _check_sources(c: _Checker, cfg: Config) -> None:
    """data.sources: a weighted mixture of shard sets (data/mixture.py), or data.path, not both."""
    d = cfg.data
    if not d.sources:
        return
    if d.path:
        c.add("data.sources: give data.path (one source) or data.sources (a mixture), not both; "
              "set data.path=null to train on the mixture, or data.sources=[] for data.path alone")
    if d.source == "synthetic":
        c.add("data.sources: a mixture reads shard sets (data.source=shards, or csv for file lists), "
              "got data.source='synthetic'")
    if cfg.objective.kind == "action_conditioned":
        c.add("data.sources: the action-conditioned objective reads one trajectory shard set; use data.path")
    seen: dict[str, int] = {}
    for i, src in enumerate(d.sources):
        where = f"data.sources[{i}]"
        if not src.path:
            c.add(f"{where}.path: required (a shard folder, brace pattern, pipe: URL or image folder)")
        if c.finite(f"{where}.weight", src.weight) and not src.weight > 0:
            c.add(f"{where}.weight: must be > 0, got {src.weight} (drop the source to leave it out)")
        for key in ("num_frames", "frame_step", "target_fps"):
            c.positive(f"{where}.{key}", getattr(src, key))
        if src.name is not None and (not _NAME_RE.fullmatch(src.name) or "/" in src.name):
            c.add(f"{where}.name: {short(src.name)} must be a plain name (letters, digits, '.', '_', '-')")
        label = src.label(i)
        if label in seen:
            c.add(f"{where}.name: {label!r} is also the name of data.sources[{seen[label]}]; names must differ")
        seen.setdefault(label, i)
        # The official trainer draws every sample's source, then splits a batch into one group per
        # clip length (MaskCollator), each with its own masks, and averages the loss over the groups.
        # Our objectives hold one token grid (data.num_frames), so every source shares that length.
        if src.num_frames is not None and src.num_frames > 0 and src.num_frames != d.num_frames:
            c.add(f"{where}.num_frames: {src.num_frames} differs from data.num_frames {d.num_frames}; every source "
                  "must share one clip length (mixed lengths need per-length batch groups, docs/data.md)")


def _check_regularizers(c: _Checker, cfg: Config) -> None:
    """Collapse regularisers (objectives/regularizers.py) and training without an EMA target."""
    ob, o = cfg.objective, cfg.optim
    weights = ("sigreg_weight", "vicreg_variance_weight", "vicreg_covariance_weight")
    for key in weights:
        if c.finite(f"objective.{key}", getattr(ob, key)):
            c.non_negative(f"objective.{key}", getattr(ob, key))
    c.positive("objective.sigreg_slices", ob.sigreg_slices)
    on = [k for k in weights if getattr(ob, k) > 0]
    joint = ob.kind == "action_conditioned" and cfg.world_model.train_encoder
    if on and ob.kind != "vjepa" and not joint:
        c.add(f"objective.{on[0]}: the collapse regularisers apply to the V-JEPA objective and to world models "
              f"that train their encoder (world_model.train_encoder=true), not to objective.kind={ob.kind!r} "
              "with a frozen encoder; set it to 0")
    elif on and cfg.data.batch_size < 2 and (ob.kind != "vjepa" or ob.regularize_unit == "clip"):
        c.add(f"objective.{on[0]}: the regularisers compare the clips of a batch; data.batch_size must be >= 2, "
              f"got {cfg.data.batch_size}")
    if ob.regularize_unit != "clip" and ob.kind != "vjepa":
        c.add(f"objective.regularize_unit: {ob.regularize_unit} applies to the V-JEPA objective; "
              f"objective.kind={ob.kind!r} regularises every frame's flattened latents: leave it at clip")
    # The covariance term alone is satisfied by constant embeddings: it does not prevent collapse.
    if o.ema_schedule == "none" and not (ob.sigreg_weight > 0 or ob.vicreg_variance_weight > 0):
        c.add("optim.ema_schedule: none (target = the online encoder) collapses without a regulariser: every "
              "clip mapped to one point is predicted perfectly; set objective.sigreg_weight (e.g. 0.05) or "
              "objective.vicreg_variance_weight > 0, or use linear / constant")


def _check_shards(c: _Checker, sh) -> None:
    for key in ("short_side", "fps", "gop_seconds", "max_clip_seconds", "samples_per_shard",
                "target_shard_mb", "workers"):
        c.positive(f"shards.{key}", getattr(sh, key))
    c.non_negative("shards.min_seconds", sh.min_seconds)
    if not 0 <= sh.crf <= 51:
        c.add(f"shards.crf: x264 CRF must be in [0, 51], got {sh.crf}")
    presets = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
    if sh.preset not in presets:
        hint = closest(sh.preset, presets)
        c.add(f"shards.preset: {short(sh.preset)} is not an x264 preset" + (f" (did you mean {hint!r}?)" if hint else ""))
    if not _NAME_RE.fullmatch(sh.prefix):
        c.add(f"shards.prefix: {short(sh.prefix)} must be a plain file name prefix")
    if not sh.reencode and (sh.max_clip_seconds is not None or sh.fps is not None):
        c.add("shards.reencode: splitting clips (max_clip_seconds) or changing fps needs reencode=true")
    if sh.max_clip_seconds is not None and sh.max_clip_seconds <= sh.min_seconds:
        c.add(f"shards.max_clip_seconds: {sh.max_clip_seconds} must exceed shards.min_seconds {sh.min_seconds}")
    if sh.scene_threshold is not None and not 0 < sh.scene_threshold < 1:
        c.add(f"shards.scene_threshold: {sh.scene_threshold} must be in (0, 1) (a scene score; 0.3 is typical)")
    if not sh.reencode and sh.scene_threshold is not None:
        c.add("shards.reencode: cutting at scene changes (scene_threshold) needs reencode=true")
    c.non_negative("shards.min_motion", sh.min_motion)
    if sh.dedup_distance is not None and not 0 <= sh.dedup_distance <= 32:
        c.add(f"shards.dedup_distance: {sh.dedup_distance} must be in [0, 32] bits per 64-bit frame hash (4 is typical)")


def _check_predictor(c: _Checker, pred: PredictorConfig, rope: bool) -> None:
    ok = all(
        [
            c.positive(f"model.predictor.{k}", getattr(pred, k))
            for k in ("embed_dim", "depth", "num_heads", "mlp_ratio")
        ]
    )
    c.positive("model.predictor.num_mask_tokens", pred.num_mask_tokens)
    if ok:
        c.heads("model.predictor", pred.embed_dim, pred.num_heads, rope)


def validate_config(cfg: Config, source: str | None = None) -> None:
    """Raise one ConfigError listing every cross-field problem (no-op when there are none)."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigError(problems, source)


def mask_block_problems(mask: MaskBlockConfig, path: str = "mask") -> list[str]:
    """The rules of one mask generator spec, one message per problem (checked at config load and
    again by ``models.masks`` for specs built in code)."""
    c = _Checker()
    c.positive(f"{path}.num_blocks", mask.num_blocks)
    for name in ("spatial_scale", "temporal_scale"):
        before = len(c.problems)
        pair = getattr(mask, name)
        c.pair(f"{path}.{name}", pair)
        if len(c.problems) == before and not pair[0] > 0:
            c.add(f"{path}.{name}: values must be > 0, got {list(pair)}")
    c.pair(f"{path}.aspect_ratio", mask.aspect_ratio, unit=False)
    if not 0 < mask.max_temporal_keep <= 1:
        c.add(f"{path}.max_temporal_keep: must be in (0, 1], got {mask.max_temporal_keep}")
    c.positive(f"{path}.max_keep", mask.max_keep)
    return c.problems
