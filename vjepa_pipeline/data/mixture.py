"""Weighted mixtures of shard sets (``data.sources``): V-JEPA 2's ``datasets`` + ``datasets_weights``.

Each sample's source is drawn by weight, then the sample is the next one of that source's own
stream. Everything stays a function of (seed, rank, worker role, step), as for one source
(:mod:`.stream`):

- per (rank, role, epoch), every source reads its own rank / worker split of its shards through its
  own seeded cycle and shuffle buffer (seeds ``mix_seed(role seed, source index + 1)``), opened
  lazily (a source that is never drawn is never read). The sources share ``data.shuffle_buffer``
  by weight (:func:`source_buffers`), so a worker buffers about as many samples as with one source;
  the sizes are part of the mixture signature a resume must match;
- the source of the n-th compressed sample of a role comes from one more seeded generator
  (``mix_seed(role seed, 0)``), one ``random()`` per sample. Resuming replays the role's draws up to
  its saved ``consumed`` count (no decoding), so each source's stream is exactly where it was;
- failures are counted as for one source, their reasons prefixed with the source's name; a source
  whose shards give no sample at all stops the run (it would be drawn forever).

Each batch reports how many of its videos came from each source (``StreamPosition.sources``); the
trainer turns them into the realised mixture (``mix/<name>`` in metrics.jsonl). Sample keys are
``<source name>/<key>``.

Clip lengths: the official trainer draws every sample's source independently and its collator
(``MaskCollator``) splits a batch into one group per clip length (``dataset_fpcs``), each with its
own masks; encoder and predictor run per group and the loss is the mean over (group, mask) pairs.
The released recipes use one length for all sources (16, or 64 in the cooldowns), where that is one
plain batch. Our objectives hold one token grid, so every source shares ``data.num_frames`` (checked
at config load); frame step, frame rate and kind (video / image) are per source. Images are still
clips (:mod:`.images`); they yield ``data.num_clips`` crops each, so every batch has the same size.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import torch

from ..errors import LoaderError
from ..shards.decoders import get_decoder
from ..shards.format import index_file
from ..utils.seeds import mix_seed
from .augment import train_augment
from .images import ImageDecodeError, decode_image, image_file_samples, image_folder_items, image_tar_samples
from .sampling import ClipSpec
from .sources import cycle_samples, expand_urls, file_list_items, file_samples, shuffle_buffer, split_for, tar_samples
from .stream import ClipStream, RoleStream, SampleFailure


@dataclass(frozen=True)
class MixtureSource:
    """One resolved source: its readers (shard URLs or file items) and how to read and clip them."""

    name: str
    weight: float
    kind: str  # "video" | "image"
    spec: ClipSpec
    readers: list
    read: Callable[..., Iterator[dict]]  # tar_samples, file_samples, image_tar_samples or image_file_samples
    what: str  # what a reader is, for messages: "shard", "listed file", "image"
    known: int | None  # samples in the source, when known (sizes the epoch)


def source_spec(data_cfg, src) -> ClipSpec:
    """The source's clip settings, unset ones taken from the data section."""
    return ClipSpec(src.num_frames or data_cfg.num_frames, src.frame_step or data_cfg.frame_step,
                    src.target_fps if src.target_fps is not None else data_cfg.target_fps, data_cfg.num_clips,
                    data_cfg.short_video)


def resolve_source(data_cfg, src, index: int) -> MixtureSource:
    """Find a source's shards or files (a LoaderError names the source when they are missing)."""
    name = src.label(index)
    try:
        if src.kind == "image":
            index_json = index_file(src.path) if _is_folder(src.path) else None
            if index_json is not None and not index_json.exists():  # a folder without one: ImageNet-style classes
                items = image_folder_items(src.path)
                readers, read, what, known = items, image_file_samples, "image", len(items)
            else:  # image shards: a shard folder, brace pattern or pipe: URL
                readers, known = expand_urls(src.path)
                read, what = image_tar_samples, "shard"
        elif data_cfg.source == "csv":
            readers = file_list_items(src.path)
            read, what, known = file_samples, "listed file", len(readers)
        else:
            readers, known = expand_urls(src.path)
            read, what = tar_samples, "shard"
        if not readers or known == 0:
            raise LoaderError(f"{src.path} holds no samples (an empty dataset)")
    except LoaderError as exc:
        raise LoaderError(f"data.sources[{index}] ({name}): {exc}") from None
    return MixtureSource(name, float(src.weight), src.kind, source_spec(data_cfg, src), readers, read, what, known)


def _is_folder(path: str) -> bool:
    return not path.startswith("pipe:") and Path(path).expanduser().is_dir()


def resolve_sources(data_cfg) -> list[MixtureSource]:
    return [resolve_source(data_cfg, src, i) for i, src in enumerate(data_cfg.sources)]


def source_buffers(total: int, weights: list[float]) -> list[int]:
    """Each source's share of the shuffle buffer ``total``: proportional to its weight, at least 1
    (a pure function of the config, so a resume that matches the signature rebuilds the same sizes)."""
    norm = sum(weights)
    return [max(1, round(total * w / norm)) for w in weights]


def mixture_signature(data_cfg) -> list | None:
    """What a resumed stream must share with the saved one: per source its name, weight, kind, clip
    settings and shuffle buffer size (None for a single data.path). Paths may change (data moved)."""
    if not data_cfg.sources:
        return None
    buffers = source_buffers(data_cfg.shuffle_buffer, [float(src.weight) for src in data_cfg.sources])
    out = []
    for i, src in enumerate(data_cfg.sources):
        spec = source_spec(data_cfg, src)
        out.append([src.label(i), float(src.weight), src.kind, spec.frames_per_clip, spec.frame_step,
                    spec.target_fps, buffers[i]])
    return out


def describe_change(saved: list | None, now: list | None) -> str:
    """``k710 weight 0.335 -> 0.5; ssv2 removed`` (at most a few items)."""
    if saved is None or now is None:
        return "data.path -> data.sources" if saved is None else "data.sources -> data.path"
    fields = ("weight", "kind", "num_frames", "frame_step", "target_fps", "shuffle_buffer")
    old = {row[0]: row for row in saved}
    new = {row[0]: row for row in now}
    parts = [f"{n} removed" for n in old if n not in new] + [f"{n} added" for n in new if n not in old]
    for n in (n for n in new if n in old):  # rows saved before a field existed show it as "unrecorded"
        parts += [f"{n} {f} {a} -> {b}" for f, a, b in zip_longest(fields, old[n][1:], new[n][1:],
                                                                   fillvalue="unrecorded") if a != b]
    if not parts and list(old) != list(new):
        parts.append("source order changed")
    return "; ".join(parts[:4]) + ("; ..." if len(parts) > 4 else "")


class MixtureRoleStream(RoleStream):
    """One (rank, role, epoch) stream over all sources; see the module docstring."""

    def _compressed(self) -> Iterator[dict]:
        o: MixtureStream = self.o  # type: ignore[assignment]
        streams = [self._source_stream(i, src) for i, src in enumerate(o.sources)]
        draw = random.Random(mix_seed(self.seed, 0))
        last = len(streams) - 1
        while True:
            i = min(bisect.bisect_right(o.cumulative, draw.random() * o.cumulative[-1]), last)
            sample = next(streams[i])
            sample["source"] = i
            yield sample

    def _source_stream(self, index: int, src: MixtureSource) -> Iterator[dict]:
        o = self.o
        mine = split_for(src.readers, o.rank, o.world_size, self.role, o.num_roles, o.cfg.allow_shared_shards)
        seed = mix_seed(self.seed, index + 1)

        def fail(reason: str) -> None:
            self._source_fail(f"{src.name}: {reason}")

        stream = cycle_samples(mine, random.Random(seed), src.read, fail, src.what)
        return _named(shuffle_buffer(stream, o.buffers[index], random.Random(seed + 1)), src.name)

    def source_of(self, sample: dict) -> str:
        return self.o.sources[sample["source"]].name

    def clips_of(self, sample: dict, rng: random.Random) -> list[torch.Tensor]:
        src: MixtureSource = self.o.sources[sample["source"]]
        try:
            if src.kind == "image":
                return self.still_clips(sample, rng, src.spec)
            return self.video_clips(sample, rng, src.spec)
        except SampleFailure as exc:
            raise SampleFailure(f"{src.name}: {exc.reason}") from None

    def still_clips(self, sample: dict, rng: random.Random, spec: ClipSpec) -> list[torch.Tensor]:
        """``spec.num_clips`` random crops of one image, each repeated to ``frames_per_clip`` frames."""
        cfg = self.o.cfg
        if "image" not in sample:
            raise SampleFailure("not an image sample")
        try:
            frame = decode_image(sample["image"])
        except ImageDecodeError as exc:
            raise SampleFailure(f"image: {exc}") from None
        views = []
        for _ in range(spec.num_clips):
            crop = train_augment(frame, cfg.crop_size, rng, cfg.crop_scale, cfg.crop_ratio, 0.5 if cfg.hflip else 0.0)
            views.append(crop.expand(spec.frames_per_clip, -1, -1, -1).contiguous())
        return views


def _named(samples: Iterator[dict], name: str) -> Iterator[dict]:
    """A source's samples, its errors naming it (a source never ends: it cycles over its shards)."""
    try:
        yield from samples
    except LoaderError as exc:
        raise LoaderError(f"source {name}: {exc}") from None
    raise LoaderError(f"source {name}: its sample stream ended")


class MixtureStream(ClipStream):
    """:class:`ClipStream` over a weighted mixture of sources (``data.sources``); used the same way."""

    role_stream = MixtureRoleStream

    def __init__(self, data_cfg, sources: list[MixtureSource], rank: int = 0, world_size: int = 1,
                 batches_per_epoch: int = 100, resume: dict | None = None):
        if not sources:
            raise LoaderError("data.sources is empty: list at least one source, or use data.path")
        self.cfg = data_cfg
        self.rank, self.world_size = rank, world_size
        self.num_roles = max(1, data_cfg.num_workers)
        self.batches_per_epoch = batches_per_epoch
        self.spec = sources[0].spec
        self.videos_per_batch = data_cfg.batch_size // data_cfg.num_clips
        self.items, self.urls = None, None
        self.sources = sources
        self.source_names = [s.name for s in sources]
        self.cumulative = []
        total = 0.0
        for s in sources:
            total += s.weight
            self.cumulative.append(total)
        # per-source shuffle buffers: a weighted split of data.shuffle_buffer (see mixture_signature)
        self.buffers = source_buffers(data_cfg.shuffle_buffer, [s.weight for s in sources])
        for s in sources:  # the startup check, before any worker starts
            for role in range(self.num_roles):
                try:
                    split_for(s.readers, rank, world_size, role, self.num_roles, data_cfg.allow_shared_shards)
                except LoaderError as exc:
                    raise LoaderError(f"source {s.name}: {exc}") from None
        self.step = 0
        self.resume = resume or {}
        if any(s.kind == "video" for s in sources):
            get_decoder(data_cfg.decoder)  # fail early if the backend is missing

    def proportions(self) -> dict[str, float]:
        """The configured mixture, normalised: source name -> probability of a sample."""
        total = self.cumulative[-1]
        return {s.name: s.weight / total for s in self.sources}
