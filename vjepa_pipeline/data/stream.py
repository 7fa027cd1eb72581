"""The training stream: shards -> shuffled compressed samples -> decoded, sampled, augmented uint8
clips -> batches, inside DataLoader workers.

Determinism and resume. Batch ``g`` (counted from the start of training on this rank) belongs
to epoch ``g // batches_per_epoch`` and is produced by stream *role* ``g % num_workers``. Each
(rank, role, epoch) reads its own shard subset through its own seeded stream, so the whole
sample stream is a function of (seed, rank, worker role, step). Every batch reports how many
compressed samples its role has consumed; resuming at step ``s`` replays (without decoding) each
role's stream up to its last consumed batch. DataLoader worker ``i`` plays role
``(i + s) % num_workers`` so that batches keep their order after a restart.

Every rank yields exactly the batches of the current epoch, so DDP ranks never wait on each other.
Failing samples are skipped and counted per reason; above ``max_failure_rate`` the run stops.
Every loss counts, whether the decoder failed or the sample never arrived (a shard missing, not a
tar, broken off, a sample without video or with bad metadata): each is an attempt that failed.
The rate is judged in each worker role as failures happen (after MIN_ATTEMPTS_FOR_RATE attempts)
and over all roles and epochs of the rank by :class:`~.loader.StreamState`; a role that reads a
full pass over its shards without one sample stops at once (it would resample them forever).

Weighted mixtures of several shard sets (``data.sources``) are :mod:`.mixture`'s subclasses.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..utils.seeds import mix_seed
from .augment import train_augment
from .batch import ClipBatch, StreamPosition
from ..shards.decoders import DecodeError, get_decoder
from .sampling import ClipSpec, sample_train_clips, union_indices
from .sources import (LoaderError, cycle_samples, file_list_items, file_samples, shuffle_buffer, split_for,
                      tar_samples)

MIN_ATTEMPTS_FOR_RATE = 50  # the failure rate is judged only after this many attempts (per role, per rank)


def failure_rate_error(failed: int, attempts: int, limit: float, failures: dict[str, int],
                       where: str = "") -> LoaderError | None:
    """The error to stop with when ``failed`` of ``attempts`` is above ``limit``, or when all of
    them failed (even with a limit of 1: a stream that never yields would hang); None otherwise."""
    if attempts < MIN_ATTEMPTS_FOR_RATE or (failed / attempts <= limit and failed < attempts):
        return None
    reasons = ", ".join(f"{r} x{n}" for r, n in sorted(failures.items()))
    judged = "above" if failed / attempts > limit else "none usable, with"
    return LoaderError(f"{failed} of {attempts} samples failed{where} ({100 * failed / attempts:.0f}%, {judged} "
                       f"data.max_failure_rate={limit}): {reasons}. Check the data with `vjepa shards inspect`")


class SampleFailure(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ClipStream(IterableDataset):
    """Yields ready :class:`ClipBatch` es (uint8 clips (B, T, S, S, C), labels, keys, stream position).

    ``source``: "shards" (``urls``) or "csv" (a file list). Use with
    ``DataLoader(stream, batch_size=None, num_workers=data.num_workers)`` and call
    :meth:`set_position` with the step about to be trained before iterating.
    """

    role_stream: type = None  # type: ignore[assignment]  # RoleStream (set below); subclasses swap it
    source_names: tuple | list = ()  # mixture sources counted per batch (mixture.MixtureStream); none here

    def __init__(self, data_cfg, urls: list[str] | None = None, file_list: str | None = None, rank: int = 0,
                 world_size: int = 1, batches_per_epoch: int = 100, resume: dict | None = None):
        self.cfg = data_cfg
        self.rank, self.world_size = rank, world_size
        self.num_roles = max(1, data_cfg.num_workers)
        self.batches_per_epoch = batches_per_epoch
        self.spec = ClipSpec(data_cfg.num_frames, data_cfg.frame_step, data_cfg.target_fps, data_cfg.num_clips,
                             data_cfg.short_video)
        self.videos_per_batch = data_cfg.batch_size // data_cfg.num_clips
        if (urls is None) == (file_list is None):
            raise ValueError("give exactly one of urls (shards) or file_list (csv)")
        self.items = file_list_items(file_list) if file_list is not None else None
        self.urls = urls
        readers = self.items if self.items is not None else urls
        for role in range(self.num_roles):  # the startup check, before any worker starts
            split_for(readers, rank, world_size, role, self.num_roles, data_cfg.allow_shared_shards)
        self.step = 0
        self.resume = resume or {}
        get_decoder(data_cfg.decoder)  # fail early if the backend is missing

    def set_position(self, step: int, resume: dict | None = None) -> None:
        """Next batch to produce is global step ``step``; ``resume`` maps role -> {"epoch",
        "consumed"} (see StreamState)."""
        self.step = step
        if resume is not None:
            self.resume = resume

    # -- per worker --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None and info.num_workers != self.num_roles:
            raise LoaderError(f"DataLoader has {info.num_workers} workers but the stream was built for "
                              f"{self.num_roles}; pass num_workers=data.num_workers")
        torch.set_num_threads(1)
        step = self.step
        epoch = step // self.batches_per_epoch
        end = (epoch + 1) * self.batches_per_epoch
        role = (worker + step) % self.num_roles
        first = step + (role - step) % self.num_roles
        if first >= end:
            return
        skip = 0
        saved = self.resume.get(role) or self.resume.get(str(role))
        if saved and saved["epoch"] == epoch:
            skip = saved["consumed"]
        yield from self.role_stream(self, role, epoch, skip).batches(range(first, end, self.num_roles))


class RoleStream:
    """One (rank, role, epoch) stream: its shards, its RNGs, its counters. Subclasses change what a
    sample becomes (:meth:`clips_of`) and how a batch is assembled (:meth:`batches`)."""

    def __init__(self, owner: ClipStream, role: int, epoch: int, skip: int):
        self.o, self.role, self.epoch = owner, role, epoch
        cfg = owner.cfg
        self.seed = mix_seed(cfg.seed, owner.rank, role, epoch)
        self.decoder = get_decoder(cfg.decoder)
        self.failures: dict[str, int] = {}
        self.attempts = 0
        self.consumed = 0
        self.samples = self._compressed()
        self.replaying = True  # resume: replay the compressed stream, no decoding and no counting
        for _ in range(skip):
            next(self.samples)
            self.consumed += 1
        self.replaying = False

    def _fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def _source_fail(self, reason: str) -> None:
        """A shard or sample lost before decoding: counts as an attempt that failed."""
        if self.replaying:  # counted before the restart (its good samples are not replayed as attempts)
            return
        self.attempts += 1
        self._fail(reason)
        self.check_failure_rate()

    def _compressed(self) -> Iterator[dict]:
        o = self.o
        rng = random.Random(self.seed)
        if o.items is not None:
            mine = split_for(o.items, o.rank, o.world_size, self.role, o.num_roles, o.cfg.allow_shared_shards)
            stream = cycle_samples(mine, rng, file_samples, self._source_fail, "listed file")
        else:
            mine = split_for(o.urls, o.rank, o.world_size, self.role, o.num_roles, o.cfg.allow_shared_shards)
            stream = cycle_samples(mine, rng, tar_samples, self._source_fail, "shard")
        return shuffle_buffer(stream, o.cfg.shuffle_buffer, random.Random(self.seed + 1))

    def clips_of(self, sample: dict, rng: random.Random) -> list[torch.Tensor]:
        return self.video_clips(sample, rng, self.o.spec)

    def video_clips(self, sample: dict, rng: random.Random, spec: ClipSpec) -> list[torch.Tensor]:
        """``spec.num_clips`` augmented uint8 clips (T, S, S, C) cut from one compressed video."""
        cfg = self.o.cfg
        meta = sample["meta"] or {}
        num_frames = meta.get("num_frames")
        try:
            if num_frames is None:
                num_frames = self.decoder.count_frames(sample["mp4"])
            clips = sample_train_clips(num_frames, meta.get("fps"), spec, rng)
            if clips is None:
                raise SampleFailure("too short")
            frames_idx, positions = union_indices(clips)
            frames = torch.from_numpy(self.decoder.decode(sample["mp4"], frames_idx, num_frames))
        except DecodeError as exc:
            raise SampleFailure(f"decode: {exc.reason}") from None
        return [train_augment(frames[pos], cfg.crop_size, rng, cfg.crop_scale, cfg.crop_ratio,
                              0.5 if cfg.hflip else 0.0) for pos in positions]

    def next_video(self) -> tuple[dict, list[torch.Tensor]]:
        while True:
            try:
                sample = next(self.samples)
            except StopIteration:
                raise LoaderError("the sample stream ended: no readable shards") from None
            self.consumed += 1
            self.attempts += 1
            rng = random.Random(mix_seed(self.seed, self.consumed))
            try:
                return sample, self.clips_of(sample, rng)
            except SampleFailure as exc:
                self._fail(exc.reason)
                self.check_failure_rate()

    def check_failure_rate(self) -> None:
        error = failure_rate_error(sum(self.failures.values()), self.attempts, self.o.cfg.max_failure_rate,
                                   self.failures)
        if error is not None:
            raise error

    def source_of(self, sample: dict) -> str | None:
        """The mixture source a sample came from (None: a single-source stream)."""
        return None

    def batches(self, steps: range) -> Iterator[ClipBatch]:
        names = self.o.source_names
        for g in steps:
            t0 = time.perf_counter()
            clips, labels, keys = [], [], []
            counts = dict.fromkeys(names, 0)  # videos per mixture source in this batch
            while len(keys) < self.o.videos_per_batch:
                sample, views = self.next_video()
                clips.extend(views)
                labels.extend([-1 if sample["label"] is None else int(sample["label"])] * len(views))
                source = self.source_of(sample)
                if source is not None:
                    counts[source] += 1
                keys.append(sample["key"] if source is None else f"{source}/{sample['key']}")
            position = StreamPosition(g, self.role, self.epoch, self.consumed, self.attempts, dict(self.failures),
                                      time.perf_counter() - t0, self.o.cfg.max_failure_rate, counts)
            yield ClipBatch(torch.stack(clips), torch.tensor(labels, dtype=torch.long), keys, position)


ClipStream.role_stream = RoleStream
