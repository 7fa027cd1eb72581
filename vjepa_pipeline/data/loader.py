"""Build the training DataLoader from the config, and keep the per-rank loader state that makes
resumes exact (saved in the run directory by the trainer)."""

from __future__ import annotations

import math

from torch.utils.data import DataLoader

from .batch import ClipBatch
from .mixture import MixtureStream, describe_change, resolve_sources
from .sources import LoaderError, expand_urls, file_list_items
from .stream import ClipStream, failure_rate_error

STATE_VERSION = 2  # 2: stream seeds from utils.seeds.mix_seed (1: sha256)


def batches_per_epoch(data_cfg, dataset_videos: int | None, world_size: int) -> int:
    """Per-rank batches in one epoch: the configured number, else one pass over the dataset's
    clips by the global batch (at least 1)."""
    if data_cfg.batches_per_epoch:
        return data_cfg.batches_per_epoch
    if not dataset_videos:
        raise LoaderError("the dataset size is unknown (URL pattern without index.json): set data.batches_per_epoch")
    clips = dataset_videos * data_cfg.num_clips
    return max(1, math.ceil(clips / (data_cfg.batch_size * world_size)))


def build_train_stream(data_cfg, rank: int = 0, world_size: int = 1) -> ClipStream:
    if data_cfg.sources:  # a weighted mixture; an epoch = one pass over all its samples
        sources = resolve_sources(data_cfg)
        known = [s.known for s in sources]
        total = None if any(k is None for k in known) else sum(known)
        per_epoch = batches_per_epoch(data_cfg, total, world_size)
        return MixtureStream(data_cfg, sources, rank=rank, world_size=world_size, batches_per_epoch=per_epoch)
    if data_cfg.source == "shards":
        urls, videos = expand_urls(data_cfg.path)
        per_epoch = batches_per_epoch(data_cfg, videos, world_size)
        return ClipStream(data_cfg, urls=urls, rank=rank, world_size=world_size, batches_per_epoch=per_epoch)
    if data_cfg.source == "csv":
        videos = len(file_list_items(data_cfg.path))
        per_epoch = batches_per_epoch(data_cfg, videos, world_size)
        return ClipStream(data_cfg, file_list=data_cfg.path, rank=rank, world_size=world_size,
                          batches_per_epoch=per_epoch)
    raise LoaderError(f"data.source={data_cfg.source!r} has no file loader (synthetic data is generated in-process)")


def make_dataloader(stream: ClipStream) -> DataLoader:
    """Batches are assembled inside the workers (batch_size=None). Workers are not persistent:
    each epoch starts fresh workers with the stream's current position."""
    workers = stream.cfg.num_workers
    return DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=False,
                      prefetch_factor=2 if workers else None, persistent_workers=False)


class StreamState:
    """What a rank needs to resume its stream exactly: the next step and, per worker role, the
    epoch and number of compressed samples consumed by its last *trained* batch.

    It also keeps the rank's failure accounting: ``attempts`` and ``failures`` (per reason) over
    all worker roles and epochs since this process started, judged against the stream's
    ``data.max_failure_rate`` on every update (a role alone may stay below the minimum number of
    attempts while the rank as a whole is far above the limit)."""

    def __init__(self, world_size: int, num_workers: int, seed: int, mixture: list | None = None,
                 shuffle_buffer: int | None = None):
        self.world_size, self.num_workers, self.seed = world_size, num_workers, seed
        self.mixture = mixture  # data.sources' names, weights and clip settings (mixture.mixture_signature)
        # one data.path: the buffer size orders the samples, so a resume must keep it (a mixture's
        # per-source buffers are part of its signature)
        self.shuffle_buffer = shuffle_buffer if mixture is None else None
        self.step = 0
        self.roles: dict[int, dict] = {}
        self.failures: dict[str, int] = {}
        self.attempts = 0
        self._role_failures: dict[int, tuple[int, int, dict]] = {}  # role -> (epoch, attempts, failures)
        self._past: tuple[int, dict[str, int]] = (0, {})  # finished (role, epoch) streams, summed

    def update(self, batch: ClipBatch) -> None:
        """Call once per batch actually used for training (not per prefetched batch). Raises
        LoaderError when the rank's failure rate is above the stream's data.max_failure_rate."""
        info = batch.stream
        self.step = info.step + 1
        self.roles[info.role] = {"epoch": info.epoch, "consumed": info.consumed}
        previous = self._role_failures.get(info.role)
        if previous is not None and previous[0] != info.epoch:  # that role's last epoch is over
            self._past = (self._past[0] + previous[1], _add(self._past[1], previous[2]))
        self._role_failures[info.role] = (info.epoch, info.attempts, dict(info.failures))
        self.attempts = self._past[0] + sum(a for _, a, _ in self._role_failures.values())
        totals = dict(self._past[1])
        for _, _, f in self._role_failures.values():
            totals = _add(totals, f)
        self.failures = totals
        if info.max_failure_rate is not None:
            error = failure_rate_error(sum(totals.values()), self.attempts, info.max_failure_rate, totals,
                                       " on this rank, all its workers together")
            if error is not None:
                raise error

    def state_dict(self) -> dict:
        state = {"version": STATE_VERSION, "world_size": self.world_size, "num_workers": self.num_workers,
                 "seed": self.seed, "step": self.step, "roles": {str(k): v for k, v in self.roles.items()}}
        if self.mixture is not None:
            state["mixture"] = self.mixture
        if self.shuffle_buffer is not None:
            state["shuffle_buffer"] = self.shuffle_buffer
        return state

    def load_state_dict(self, state: dict, reseed: bool = False, reseed_mixture: bool = False) -> None:
        """Restore; a changed world size, worker count or seed is refused (the stream would not
        continue) unless ``reseed`` starts a fresh stream at the saved step; a changed mixture
        (source weights, names or clip settings) likewise unless ``reseed_mixture``."""
        saved_mixture = state.get("mixture")
        if saved_mixture != self.mixture:
            change = describe_change(saved_mixture, self.mixture)
            if not reseed_mixture:
                self.step = int(state["step"])
                raise LoaderError(f"cannot continue the saved data stream: the mixture changed ({change}). Set "
                                  "data.reseed_on_mixture_change=true to start a fresh stream from this step")
        changed = [f"{k} {state[k]} -> {getattr(self, k)}" for k in ("world_size", "num_workers", "seed")
                   if state.get(k) != getattr(self, k)]
        saved_buffer = state.get("shuffle_buffer")  # absent in states saved before it was recorded
        if saved_buffer is not None and self.shuffle_buffer is not None and saved_buffer != self.shuffle_buffer:
            changed.append(f"data.shuffle_buffer {saved_buffer} -> {self.shuffle_buffer}")
        if state.get("version") != STATE_VERSION:  # v1: streams seeded by another hash (sha256)
            changed.append(f"stream version {state.get('version')} -> {STATE_VERSION} (the loader derives its "
                           "shuffle seeds differently since)")
        self.step = int(state["step"])
        if changed and not reseed:
            raise LoaderError(f"cannot continue the saved data stream: {', '.join(changed)}. Set "
                              "data.reseed_on_world_size_change=true to start a fresh stream from this step")
        fresh = changed or saved_mixture != self.mixture
        self.roles = {} if fresh else {int(k): v for k, v in state["roles"].items()}

    def position(self) -> tuple[int, dict]:
        """(step, role positions) to pass to ClipStream.set_position."""
        return self.step, dict(self.roles)


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for reason, n in b.items():
        out[reason] = out.get(reason, 0) + n
    return out
