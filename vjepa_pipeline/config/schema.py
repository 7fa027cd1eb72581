"""The typed config tree: one dataclass per section, every field with a default.

YAML recipes under ``configs/`` mirror this tree key for key; ``loader.py`` builds it from
YAML + dotted overrides (driven by these type hints) and ``validate.py`` checks cross-field
rules. Defaults follow the official V-JEPA (1) ViT-L/16 recipe where one exists, except for
the model size (``tiny``) and the step budget, which default to something that runs quickly.

Keep field types within what the loader understands: int, float, bool, str, ``X | None``,
``Literal[...]``, ``tuple[...]``, ``list[...]`` and nested dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from vjepa_pipeline.config.sizes import VIT_SIZES, unknown_size_message
from vjepa_pipeline.errors import ConfigError

PosEmbed = Literal["sincos", "rope"]
DataSource = Literal["synthetic", "shards", "csv"]
LRSchedule = Literal["cosine", "constant_cooldown"]
EMASchedule = Literal["linear", "constant", "none"]
Precision = Literal["32", "bf16-mixed", "16-mixed"]
Strategy = Literal[
    "auto", "ddp", "fsdp", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3"
]
WandbMode = Literal["offline", "online", "disabled"]
Decoder = Literal["decord", "torchcodec", "pyav"]
ShortVideo = Literal["pad", "skip"]
SourceKind = Literal["video", "image"]
Accelerator = Literal["auto", "cpu", "gpu"]
NanPolicy = Literal["stop", "skip"]
ObjectiveKind = Literal["vjepa", "action_conditioned"]
PredictorKind = Literal["masked", "action_conditioned"]
ShardsLayout = Literal["auto", "videos", "episodes", "droid"]
ActionRule = Literal["sum", "mean", "first", "pose_delta"]
MaskTokenRule = Literal["per_generator", "shared"]
ScheduleAlignment = Literal["pipeline", "official"]
RegularizedOutputs = Literal["context", "predictor", "both"]
RegularizedUnit = Literal["clip", "token"]


@dataclass
class PredictorConfig:
    """Narrow ViT that predicts target features at masked positions from the context."""

    # masked = V-JEPA's mask-token predictor (models/predictor.py); action_conditioned = the V-JEPA 2-AC
    # frame-causal predictor over per-frame tokens + action / state tokens (models/ac_predictor.py)
    kind: PredictorKind = "masked"
    embed_dim: int = 384  # predictor width (Linear D -> embed_dim in, embed_dim -> D out)
    depth: int = 12  # number of transformer blocks
    num_heads: int = 12  # attention heads (rope needs head dim >= 6)
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * embed_dim
    num_mask_tokens: int = 10  # learned mask tokens; one per mask generator is used
    # Which mask token a generator uses: per_generator = token i for mask generator i (V-JEPA 1);
    # shared = token 0 for every generator (V-JEPA 2: its trainer indexes tokens by clip length).
    mask_token_rule: MaskTokenRule = "per_generator"
    zero_init_mask_tokens: bool = True  # init mask tokens to zeros (else trunc-normal)


@dataclass
class ModelConfig:
    """Context/target encoder (ViT over 3D tubelets) plus its predictor."""

    size: str = "tiny"  # key of vjepa_pipeline.config.sizes.VIT_SIZES
    # vit = the V-JEPA video ViT (token grid); conv = a small CNN with one latent per frame
    # (models/conv_encoder.py: world models of the embedded planning tasks; embed_dim = its latent size)
    encoder_kind: Literal["vit", "conv"] = "vit"
    conv_channels: int = 32  # conv only: channels of every conv layer
    conv_stages: int = 3  # conv only: stride-2 stages (64 px -> 8 x 8 before the linear head)
    # Optional overrides of the named size (for custom tiny CPU models); None = use the size's.
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None
    patch_size: int = 16  # spatial patch side in pixels
    tubelet_size: int = 2  # frames per token along time
    in_chans: int = 3  # input channels (RGB)
    pos_embed: PosEmbed = "rope"  # sincos = V-JEPA 1 fixed 3D table, rope = V-JEPA 2 3D RoPE
    uniform_power: bool = True  # sincos only: equal dims for t/h/w (V-JEPA 1 default)
    qkv_bias: bool = True  # bias in the fused qkv projection
    drop_path_rate: float = 0.0  # stochastic depth, linearly increasing over blocks
    activation_checkpointing: bool = False  # recompute block activations in backward
    # V-JEPA 2.1 encoders (docs/interop.md, "V-JEPA 2.1"); the defaults are V-JEPA 2's.
    rope_layout: Literal["repeat", "interleave"] = "repeat"  # RoPE frequency layout: repeat = V-JEPA 2, interleave = 2.1
    rope_rescale_grid: int | None = None  # 2.1 interpolate_rope: rows/columns stretched onto this many patches (16)
    image_tokenizer: bool = False  # 2.1: single frames (T=1) go through patch_embed_img (tubelet 1)
    modality_embedding: bool = False  # 2.1: learned img_mod_embed / video_mod_embed added to the tokens
    hierarchical_norms: bool = False  # 2.1: norms_block (a LayerNorm per hierarchical output block), no final norm
    predictor: PredictorConfig = field(default_factory=PredictorConfig)

    def resolved_size(self) -> tuple[int, int, int, float]:
        """(embed_dim, depth, num_heads, mlp_ratio) of the encoder after applying overrides.

        Raises ConfigError if ``size`` is not a known ViT size.
        """
        if self.size not in VIT_SIZES:
            raise ConfigError(unknown_size_message(self.size, VIT_SIZES))
        base = VIT_SIZES[self.size]
        return (
            base.embed_dim if self.embed_dim is None else self.embed_dim,
            base.depth if self.depth is None else self.depth,
            base.num_heads if self.num_heads is None else self.num_heads,
            float(base.mlp_ratio if self.mlp_ratio is None else self.mlp_ratio),
        )


@dataclass(frozen=True)  # a value: hashable, never edited in place
class MaskBlockConfig:
    """One multi-block 3D mask generator (blocks span time; one block size per batch): the one
    definition of a mask spec, read by ``models.masks`` and checked by ``mask_block_problems``."""

    num_blocks: int = 8  # blocks sampled per clip; their union is masked
    spatial_scale: tuple[float, float] = (0.15, 0.15)  # block area / frame area, (low, high)
    temporal_scale: tuple[float, float] = (1.0, 1.0)  # block length / clip length, (low, high)
    aspect_ratio: tuple[float, float] = (0.75, 1.5)  # block height / width, (low, high)
    max_temporal_keep: float = 1.0  # fraction of time steps that may remain visible
    max_keep: int | None = None  # cap on visible (context) tokens; None = no cap


#: The V-JEPA (1 and 2) pretraining masks: short-range (8 blocks at 15 %) and long-range (2 blocks
#: at 70 %), aspect 0.75-1.5, blocks spanning all time steps. Treat as read-only.
OFFICIAL_VJEPA_MASKS: tuple[MaskBlockConfig, ...] = (
    MaskBlockConfig(num_blocks=8, spatial_scale=(0.15, 0.15)),
    MaskBlockConfig(num_blocks=2, spatial_scale=(0.7, 0.7)),
)


def _default_masks() -> list[MaskBlockConfig]:
    return [replace(m) for m in OFFICIAL_VJEPA_MASKS]


@dataclass
class DataSourceConfig:
    """One source of a weighted mixture (``data.sources``): a shard set with its own weight and clip
    settings. Unset clip settings (null) take the data section's value."""

    path: str = ""  # shard folder / index.json, brace pattern or pipe: URL (a CSV with data.source=csv); image folder
    weight: float = 1.0  # sampling weight; each sample's source is drawn with probability weight / sum of weights
    name: str | None = None  # label in metrics (mix/<name>) and sample keys; None = source<i>
    kind: SourceKind = "video"  # video, or image: a still clip (the image repeated to num_frames, as V-JEPA 2)
    num_frames: int | None = None  # frames per clip (official dataset_fpcs); must equal data.num_frames
    frame_step: int | None = None  # stride between sampled frames; None = data.frame_step
    target_fps: float | None = None  # sample at this frame rate; None = data.target_fps

    def label(self, index: int) -> str:
        """The source's name in metrics and sample keys."""
        return self.name or f"source{index}"


@dataclass
class DataConfig:
    """Where clips come from and how they are sampled."""

    source: DataSource = "synthetic"  # synthetic = random clips, no files needed
    path: str | None = None  # shard dir / index.json or CSV file; required unless synthetic or data.sources
    num_frames: int = 16  # frames per clip
    frame_step: int = 4  # stride between sampled frames
    crop_size: int = 224  # square crop side in pixels
    batch_size: int = 8  # clips per device per micro-batch
    num_workers: int = 2  # dataloader worker processes per device
    seed: int = 0  # data order / augmentation seed
    decoder: Decoder = "decord"  # video decoder backend (single-threaded; workers give parallelism)
    target_fps: float | None = None  # sample at this frame rate instead of frame_step (V-JEPA 2: 4)
    num_clips: int = 1  # clips drawn per decoded video (must divide batch_size)
    short_video: ShortVideo = "pad"  # videos shorter than a clip: repeat the last frame, or skip
    crop_scale: tuple[float, float] = (0.3, 1.0)  # random resized crop: area fraction range
    crop_ratio: tuple[float, float] = (0.75, 1.35)  # random resized crop: aspect ratio range
    hflip: bool = True  # random horizontal flip (same for every frame of a clip)
    shuffle_buffer: int = 1000  # compressed samples shuffled per worker before decoding
    batches_per_epoch: int | None = None  # per rank; None = dataset clips / global batch
    max_failure_rate: float = 0.1  # stop when more than this fraction of samples fail to decode
    allow_shared_shards: bool = False  # fewer shards than ranks x workers: let workers share shards
    reseed_on_world_size_change: bool = False  # resume with another world size (or worker count, seed,
    # single-source shuffle_buffer): start a fresh stream
    # A weighted mixture of shard sets (V-JEPA 2's datasets + datasets_weights); replaces data.path (docs/data.md)
    sources: list[DataSourceConfig] = field(default_factory=list)
    reseed_on_mixture_change: bool = False  # resume with other source weights / clip settings: start a fresh stream


@dataclass
class OptimConfig:
    """AdamW, LR / weight-decay schedules and the EMA target momentum."""

    lr: float = 6.25e-4  # peak LR (reached after warmup)
    start_lr: float = 2e-4  # LR at step 0 (linear warmup to lr)
    final_lr: float = 1e-6  # LR at the end of the cosine / cooldown
    warmup_steps: int = 0  # linear warmup steps
    lr_schedule: LRSchedule = "cosine"  # cosine decay, or constant then linear cooldown
    cooldown_steps: int = 0  # constant_cooldown: final linear decay steps
    weight_decay: float = 0.04  # weight decay at step 0
    final_weight_decay: float = 0.4  # weight decay at the end (cosine ramp)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    eps: float = 1e-8  # AdamW epsilon
    clip_grad: float | None = 10.0  # max grad norm; None = no clipping
    ema_momentum: tuple[float, float] = (0.998, 1.0)  # target EMA (start, end)
    # linear start -> end, or constant at start; none = no EMA: the target is the online encoder (stop-gradient,
    # as LeJEPA), valid only with a collapse regulariser (objective.sigreg_weight / vicreg_variance_weight)
    ema_schedule: EMASchedule = "linear"
    # pipeline: optimizer step k (0-based) uses lr / wd at k and the EMA after it momentum at k + 1;
    # official: lr / wd at k + 1 and momentum at k, as the official trainers (docs/interop.md)
    schedule_alignment: ScheduleAlignment = "pipeline"


@dataclass
class TrainConfig:
    """Run length, hardware, precision and checkpointing."""

    max_steps: int = 100  # optimizer steps in total
    seed: int = 0  # global seed (model init etc.)
    precision: Precision = "32"  # Lightning precision string
    strategy: Strategy = "auto"  # distributed strategy
    devices: int = 1  # accelerators per node
    num_nodes: int = 1  # nodes
    accumulate_grad_batches: int = 1  # micro-batches per optimizer step
    run_dir: str = "runs"  # parent of runs/<name>/
    checkpoint_every_steps: int = 1000  # save a checkpoint every N optimizer steps
    checkpoint_every_minutes: float | None = None  # also save every N minutes; None = off
    keep_last: int = 3  # step checkpoints to keep (older ones are deleted)
    compile: bool = False  # torch.compile the encoder and predictor
    accelerator: Accelerator = "auto"  # auto = GPU when CUDA is available, else CPU
    nan_policy: NanPolicy = "stop"  # non-finite loss: stop (pointing at the last checkpoint) or skip the step
    max_nan_skips: int = 10  # nan_policy=skip: stop after this many consecutive skipped steps
    stats_every_steps: int = 50  # collapse statistics (target std, RankMe) every N optimizer steps
    collapse_rankme_threshold: float = 1.5  # warn when the pooled-embedding RankMe stays below this
    # Pin deterministic kernels, cuDNN / cuBLAS settings and the seeds of every loader worker
    # (train/determinism.py; what still differs across machines: docs/reproducibility.md)
    deterministic: bool = False
    num_threads: int | None = None  # intra-op CPU threads (torch.set_num_threads); None = leave as is


@dataclass
class LoggingConfig:
    """Metrics logging (metrics.jsonl is always written; wandb is optional)."""

    log_every_steps: int = 10  # log scalars every N optimizer steps
    wandb_mode: WandbMode = "offline"  # offline writes locally; disabled skips wandb entirely
    wandb_project: str = "vjepa"  # wandb project name
    wandb_entity: str | None = None  # wandb team/user; None = wandb's default
    trace_sample_keys: bool = False  # write the sample keys each rank trains on to <run>/sample_keys/
    probe_train: str | None = None  # small labelled shard set for in-training k-NN probes (None = off)
    probe_val: str | None = None  # its evaluation split
    probe_every_steps: int = 500  # run the in-training probe every N optimizer steps


@dataclass
class LaunchConfig:
    """SLURM submission settings (used by ``vjepa launch`` and by jobs running under SLURM).

    One task per device: ``--nodes`` = train.num_nodes and ``--ntasks-per-node`` = train.devices
    (checked before submission). ``gpus_per_node: 0`` runs CPU jobs (gloo) with
    ``tasks_per_node`` processes per node.
    """

    cluster: str | None = None  # profile name or YAML (slurm/profiles/<name>.yaml) the job was launched with
    partition: str | None = None  # --partition
    account: str | None = None  # --account
    qos: str | None = None  # --qos
    time_min: int = 60  # --time in minutes (>= 60 so submitit handles preemption correctly)
    nodes: int = 1  # --nodes
    gpus_per_node: int = 1  # --gpus-per-node (= tasks per node); 0 = CPU job
    tasks_per_node: int | None = None  # --ntasks-per-node; None = gpus_per_node (1 on CPU)
    cpus_per_task: int = 8  # --cpus-per-task
    mem_per_gpu: str | None = None  # --mem-per-gpu, e.g. "64G"
    mem: str | None = None  # --mem per node (CPU jobs), e.g. "16G"
    constraint: str | None = None  # --constraint, e.g. "h100"
    exclude: str | None = None  # --exclude node list
    setup: list[str] = field(default_factory=list)  # shell lines run before srun (module load ...)
    signal: str = "USR2"  # signal SLURM sends before the time limit (--signal=<signal>@<delay>)
    signal_delay_s: int = 120  # send it this many seconds before the time limit
    max_requeues: int = 10  # give up after this many preemption/timeout requeues
    array_parallelism: int = 64  # job arrays (shards, eval): tasks running at once


@dataclass
class ShardsConfig:
    """`vjepa shards build`: how raw footage becomes WebDataset shards."""

    reencode: bool = True  # re-encode to the training format; False = store bytes untouched
    short_side: int | None = 256  # output short side in px (never upscaled); None keeps it
    fps: float | None = None  # resample to this frame rate; None keeps the source rate
    crf: int = 23  # x264 quality (lower = better, bigger)
    preset: str = "veryfast"  # x264 speed preset
    gop_seconds: float = 1.0  # fixed keyframe interval (seconds); cheap random access when decoding
    max_clip_seconds: float | None = None  # split long videos into clips of at most this length
    min_seconds: float = 0.0  # drop videos / trailing clips shorter than this
    # Curation (README "Curation"; counts and histograms in index.json["curation"]); None = off.
    scene_threshold: float | None = None  # cut at scene changes scoring above this (ffmpeg scene score 0-1; 0.3 typical)
    min_motion: float | None = None  # drop clips whose motion (mean grey-level change per frame, 0-255) is below this
    dedup_distance: int | None = None  # drop near-duplicate clips within this many dHash bits per frame (of 64; 4 typical)
    samples_per_shard: int | None = None  # fixed samples per shard; None = derive from target_shard_mb
    target_shard_mb: float = 512.0  # shard size target when samples_per_shard is None
    prefix: str = "shard"  # shard file names: <prefix>-000000.tar
    seed: int = 0  # shuffle of the input list (classes mix across shards)
    workers: int = 1  # parallel encoder processes
    labels: str | None = None  # label file (JSON name->id, or one name per line); authoritative
    labelled: bool | None = None  # None = infer folder-per-class; True/False forces it
    keep_work: bool = False  # keep the staging folder (<out>/.work) after the index is written
    # Trajectories (world models; docs/world_model.md). auto: a DROID episode (trajectory.h5) or a folder
    # with actions.* / states.* makes the source a trajectory source, else it is a video source.
    layout: ShardsLayout = "auto"
    # How the actions between two kept frames combine when the loader skips frames: sum (increments,
    # deltas), mean (rates, velocities), first (held commands), pose_delta (recomputed from the states as
    # the official DROID loader does: xyz and gripper differences, relative rotation as Euler xyz).
    # None = pose_delta for DROID, sum otherwise.
    action_rule: ActionRule | None = None
    action_dim: int | None = None  # expected action dimension; None = the most common among the episodes
    state_dim: int | None = None  # expected state dimension; None = the most common among the episodes
    droid_camera: str = "left_mp4_path"  # DROID: the metadata key naming the camera recording (official default)


@dataclass
class ObjectiveConfig:
    """What the trainer optimises: one objective of ``vjepa_pipeline.objectives`` by name."""

    kind: ObjectiveKind = "vjepa"  # vjepa = masked latent prediction against an EMA target (V-JEPA 1 / 2)
    # Collapse prevention (V-JEPA objective; off in every published recipe; docs/collapse_prevention.md).
    # Each term adds weight x value on the outputs below, per clip or per token (regularize_unit).
    sigreg_weight: float = 0.0  # SIGReg (LeJEPA): push clip embeddings towards an isotropic Gaussian
    sigreg_slices: int = 256  # random unit directions per step for SIGReg
    vicreg_variance_weight: float = 0.0  # VICReg variance: hinge on each dimension's std across the batch (gamma 1)
    vicreg_covariance_weight: float = 0.0  # VICReg covariance: squared off-diagonal covariances / dim
    regularize: RegularizedOutputs = "context"  # which outputs: context (encoder), predictor, or both
    # What one sample of the regularisers is: clip = one embedding per clip (the tokens mean-pooled),
    # token = every token of every clip (VICRegL-style; statistics over batch x tokens)
    regularize_unit: RegularizedUnit = "clip"


@dataclass
class WorldModelConfig:
    """The action-conditioned world model (``objective.kind: action_conditioned``, V-JEPA 2-AC): a frozen
    encoder, and a predictor of the next frame's latents from the frames so far and their actions."""

    # The frozen encoder: a run directory or checkpoint of ours, an exported file, an official V-JEPA /
    # V-JEPA 2 checkpoint (describe it with model.*) or a Hugging Face VJEPA2 folder. None = a randomly
    # initialised encoder built from model.* (tests and smoke runs only).
    encoder: str | None = None
    predictor_checkpoint: str | None = None  # start the predictor from an AC checkpoint (ours or official)
    action_dim: int = 7  # must match the trajectory shards (DROID: 7 = xyz, Euler xyz, gripper deltas)
    state_dim: int = 7  # must match the trajectory shards (DROID: 7 = xyz, Euler xyz, gripper)
    use_extrinsics: bool = False  # one camera-extrinsics token per frame (official default: off)
    extrinsics_dim: int | None = None  # with use_extrinsics; None = action_dim - 1 (official: 6 for DROID)
    rollout_steps: int = 2  # auto-regressive steps of the rollout loss (official auto_steps)
    loss_exp: float = 1.0  # loss = mean(|pred - target| ** loss_exp) / loss_exp (1.0: L1)
    normalize_reps: bool = True  # layer-norm encoder latents and predictions (official: true)
    teacher_forcing_weight: float = 1.0  # weight of the teacher-forcing loss
    rollout_weight: float = 1.0  # weight of the rollout loss
    # Train the encoder together with the predictor (PLDM / EB-JEPA style; official V-JEPA 2-AC: false).
    # Needs a collapse regulariser (objective.vicreg_variance_weight or sigreg_weight): predicting a
    # constant is otherwise perfect. The terms below shape the latent space for planning.
    train_encoder: bool = False
    temporal_weight: float = 0.0  # time similarity: squared L2 between consecutive frames' latents
    inverse_dynamics_weight: float = 0.0  # an MLP recovers each action from consecutive latents


@dataclass
class Config:
    """Root of the tree; ``runs/<name>/config.yaml`` holds its resolved form."""

    name: str = "debug"  # run name; the run directory is <train.run_dir>/<name>
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    masks: list[MaskBlockConfig] = field(default_factory=_default_masks)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    shards: ShardsConfig = field(default_factory=ShardsConfig)
    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
