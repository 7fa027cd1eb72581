"""Training data for Lightning: the streaming loader (shards / file list) or generated clips, with
the per-rank stream state that makes resumes exact."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from ..data.batch import ClipBatch, TrajectoryBatch
from ..data.loader import StreamState, build_train_stream, make_dataloader
from ..data.mixture import mixture_signature
from ..data.synthetic import SyntheticClips, synthetic_batch
from ..data.trajectory_stream import build_trajectory_stream


class SyntheticStream(IterableDataset):
    """Generated clips with the same batch layout and stream bookkeeping as ClipStream: batch for
    step g on rank r is a pure function of (seed, r, g)."""

    def __init__(self, data_cfg, rank: int, batches_per_epoch: int):
        self.cfg, self.rank, self.batches_per_epoch = data_cfg, rank, batches_per_epoch
        self.clips = SyntheticClips(data_cfg.num_frames, data_cfg.crop_size, seed=data_cfg.seed * 1000 + rank)
        self.step = 0

    def set_position(self, step: int, resume: dict | None = None) -> None:
        self.step = step

    def __iter__(self):
        epoch = self.step // self.batches_per_epoch
        for g in range(self.step, (epoch + 1) * self.batches_per_epoch):
            yield synthetic_batch(self.clips, g, self.cfg.batch_size, epoch)


class TrainDataModule(L.LightningDataModule):
    """Builds this rank's stream in ``setup`` and a fresh DataLoader each epoch, positioned at the
    next micro-batch to train (Lightning is told to reload dataloaders every epoch)."""

    def __init__(self, cfg, resume_dir: Path | None = None):
        super().__init__()
        self.cfg, self.resume_dir = cfg, resume_dir
        self.stream = None
        self.stream_state: StreamState | None = None  # saved with every checkpoint (data_state/)

    def setup(self, stage: str) -> None:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        d = self.cfg.data
        buffer = None  # data.shuffle_buffer, where it orders the samples (StreamState checks it on resume)
        if d.source == "synthetic":
            self.stream = SyntheticStream(d, rank, d.batches_per_epoch or 1000)
            workers = 0
        elif self.cfg.objective.kind == "action_conditioned":
            self.stream = build_trajectory_stream(self.cfg, rank, world)
            workers, buffer = d.num_workers, d.shuffle_buffer
        else:
            self.stream = build_train_stream(d, rank, world)
            workers, buffer = d.num_workers, d.shuffle_buffer
        state = StreamState(world, max(1, workers), d.seed, mixture_signature(d),
                            shuffle_buffer=buffer)
        if self.resume_dir is not None:
            path = self.resume_dir / "data_state" / f"rank_{rank}.json"
            if path.exists():
                state.load_state_dict(json.loads(path.read_text()), reseed=d.reseed_on_world_size_change,
                                      reseed_mixture=d.reseed_on_mixture_change)
        self.stream_state = state

    def on_after_batch_transfer(self, batch: ClipBatch | TrajectoryBatch, dataloader_idx: int):
        # Lightning calls this for each batch it is about to train (not for prefetched ones), so
        # the state always names the next batch to train.
        self.stream_state.update(batch)
        return batch

    def train_dataloader(self) -> DataLoader:
        step, roles = self.stream_state.position()
        self.stream.set_position(step, roles)
        if isinstance(self.stream, SyntheticStream):
            return DataLoader(self.stream, batch_size=None, num_workers=0)
        return make_dataloader(self.stream)
