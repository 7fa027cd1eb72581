"""The training batch: what every loader yields and every objective consumes.

One typed record instead of a dict protocol built in several places. Clips stay uint8 in the
loader (4x fewer bytes between processes); objectives normalise them on the device. ``stream``
says where in the per-rank stream the batch came from, which is what makes resumes exact
(:class:`vjepa_pipeline.data.loader.StreamState`) and what feeds the loader-failure metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class StreamPosition:
    """Where a batch sits in its rank's stream (a pure function of seed, rank, worker, step)."""

    step: int  # the data step (= optimizer step x accumulation + micro-batch) this batch trains
    role: int = 0  # the worker role that produced it
    epoch: int = 0  # that role's epoch
    consumed: int = 0  # compressed samples that role consumed up to and including this batch
    attempts: int = 0  # samples that role tried to decode so far
    failures: dict[str, int] = field(default_factory=dict)  # that role's failures per reason
    seconds: float = 0.0  # time the worker spent assembling the batch
    max_failure_rate: float | None = None  # the stream's data.max_failure_rate (StreamState judges the rank by it)
    sources: dict[str, int] = field(default_factory=dict)  # videos per mixture source in this batch (data.sources)


@dataclass
class ClipBatch:
    """``clips`` uint8 (B, T, H, W, C); ``labels`` int64 (B,) with -1 for unlabelled clips;
    ``keys`` the sample keys (one per video: a video may give several clips)."""

    clips: torch.Tensor
    labels: torch.Tensor
    keys: list[str]
    stream: StreamPosition

    @property
    def size(self) -> int:
        return int(self.clips.shape[0])

    def pin_memory(self) -> ClipBatch:  # called by DataLoader(pin_memory=True)
        return ClipBatch(self.clips.pin_memory(), self.labels.pin_memory(), self.keys, self.stream)


@dataclass
class TrajectoryBatch:
    """A batch of action-labelled trajectories for the action-conditioned world model (V-JEPA 2-AC).

    - ``frames``: one image per time step, either uint8 (B, T, H, W, C) as the trajectory loader
      yields them (the objective normalises them on the device) or float (B, T, C, H, W), already
      normalised encoder input (ImageNet statistics, as
      :func:`~vjepa_pipeline.models.inputs.normalize_clips` gives).
    - ``actions`` float (B, T, A) or (B, T-1, A): ``actions[:, t]`` is the action taken at frame t,
      which leads to frame t+1 (official DROID loader: T-1 actions for T frames). A T-th action, if
      present, has no next frame and is not used by the losses.
    - ``states`` float (B, T, S): the proprioceptive state observed at each frame.
    - ``extrinsics`` optional float (B, T, E): camera extrinsics per frame (official ``use_extrinsics``).
    - ``keys``: one sample key per trajectory; ``stream``: where the batch sits in its rank's stream
      (None for batches made in memory).
    """

    frames: torch.Tensor
    actions: torch.Tensor
    states: torch.Tensor
    extrinsics: torch.Tensor | None = None
    keys: list[str] = field(default_factory=list)
    stream: StreamPosition | None = None

    @property
    def size(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[1])

    def to(self, device: torch.device | str) -> TrajectoryBatch:
        """The same batch with every tensor on ``device``."""
        extr = None if self.extrinsics is None else self.extrinsics.to(device)
        return TrajectoryBatch(self.frames.to(device), self.actions.to(device), self.states.to(device), extr,
                               list(self.keys), self.stream)

    def pin_memory(self) -> TrajectoryBatch:  # called by DataLoader(pin_memory=True)
        extr = None if self.extrinsics is None else self.extrinsics.pin_memory()
        return TrajectoryBatch(self.frames.pin_memory(), self.actions.pin_memory(), self.states.pin_memory(), extr,
                               self.keys, self.stream)
