"""The trajectory loader: trajectory shards -> windows of N frames with their actions and states.

It is the video loader (:class:`~.stream.ClipStream`) with another sample step, so it shares the
rank / worker split of the shards, the seeded per-(rank, role, epoch) streams, the exact resume
(:class:`~.loader.StreamState`) and the failure accounting. Per sample:

1. the window: ``data.num_frames`` frames, ``step`` apart, where ``step`` comes from
   ``data.target_fps`` and the sample's frame rate (or ``data.frame_step``), at a uniformly random
   start (the official DROID loader draws its window the same way);
2. frames decoded by index, one random resized crop for the whole window, never flipped (a mirror
   image would contradict the actions; the config refuses ``data.hflip`` for world models);
3. states (and extrinsics) at the kept frames; the actions between two kept frames combined by the
   episode's action rule (:func:`~vjepa_pipeline.shards.trajectories.window_actions`): T frames give
   T - 1 actions, ``actions[:, t]`` leading from frame t to frame t + 1.

A sample too short for one window, or with unreadable arrays, is a counted failure. A dataset whose
action / state dimensions differ from ``world_model.*`` stops at once with one line.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import numpy as np
import torch

from ..errors import LoaderError
from ..shards.decoders import DecodeError
from ..shards.format import ShardFormatError, index_file, read_index
from ..shards.actions import window_actions
from ..shards.format import read_npz
from .augment import train_augment
from .batch import StreamPosition, TrajectoryBatch
from .loader import batches_per_epoch
from .sampling import frame_step_for
from .sources import expand_urls
from .stream import ClipStream, RoleStream, SampleFailure


class TrajectoryRoleStream(RoleStream):
    """One (rank, role, epoch) stream of trajectory windows."""

    def clips_of(self, sample: dict, rng: random.Random) -> dict:
        o: TrajectoryStream = self.o  # type: ignore[assignment]
        cfg = o.cfg
        meta = sample["meta"] or {}
        traj = meta.get("trajectory")
        if not isinstance(traj, dict) or sample.get("npz") is None:
            raise SampleFailure("not a trajectory sample")
        try:
            arrays = read_npz(sample["npz"])
        except ValueError:
            raise SampleFailure("bad trajectory arrays") from None
        states = arrays.get("states")
        num_frames = meta.get("num_frames")
        if states is None or states.ndim != 2 or not isinstance(num_frames, int) or len(states) != num_frames:
            raise SampleFailure("bad trajectory arrays")
        o.check_dims(sample["key"], traj, states)
        step = frame_step_for(o.spec, meta.get("fps"))
        span = (cfg.num_frames - 1) * step + 1
        if num_frames < span:
            raise SampleFailure("too short for a window")
        start = rng.randrange(num_frames - span + 1)
        idx = list(range(start, start + span, step))
        try:
            actions = window_actions(arrays.get("actions"), states, idx, traj.get("action_rule", "sum"))
        except (ValueError, IndexError):
            raise SampleFailure("bad trajectory arrays") from None
        extrinsics = None
        if o.use_extrinsics:
            if arrays.get("extrinsics") is None:
                raise SampleFailure("no extrinsics")
            extrinsics = torch.from_numpy(np.asarray(arrays["extrinsics"][idx], dtype=np.float32))
        try:
            frames = torch.from_numpy(self.decoder.decode(sample["mp4"], idx, num_frames))
        except DecodeError as exc:
            raise SampleFailure(f"decode: {exc.reason}") from None
        frames = train_augment(frames, cfg.crop_size, rng, cfg.crop_scale, cfg.crop_ratio, 0.0)
        return {"frames": frames, "actions": torch.from_numpy(np.asarray(actions, dtype=np.float32)),
                "states": torch.from_numpy(np.asarray(states[idx], dtype=np.float32)), "extrinsics": extrinsics}

    def batches(self, steps: range) -> Iterator[TrajectoryBatch]:
        for g in steps:
            t0 = time.perf_counter()
            windows, keys = [], []
            while len(keys) < self.o.cfg.batch_size:
                sample, window = self.next_video()
                windows.append(window)
                keys.append(sample["key"])
            position = StreamPosition(g, self.role, self.epoch, self.consumed, self.attempts, dict(self.failures),
                                      time.perf_counter() - t0, self.o.cfg.max_failure_rate)
            extr = None if windows[0]["extrinsics"] is None else torch.stack([w["extrinsics"] for w in windows])
            yield TrajectoryBatch(torch.stack([w["frames"] for w in windows]),
                                  torch.stack([w["actions"] for w in windows]),
                                  torch.stack([w["states"] for w in windows]), extr, keys, position)


class TrajectoryStream(ClipStream):
    """Yields :class:`TrajectoryBatch` es: uint8 frames (B, T, S, S, C), float32 actions (B, T-1, A),
    states (B, T, S) and, with ``use_extrinsics``, extrinsics (B, T, E). Used like ClipStream."""

    role_stream = TrajectoryRoleStream

    def __init__(self, data_cfg, urls: list[str], action_dim: int, state_dim: int, use_extrinsics: bool = False,
                 rank: int = 0, world_size: int = 1, batches_per_epoch: int = 100, resume: dict | None = None):
        if data_cfg.num_clips != 1:
            raise LoaderError("trajectory windows are one per sample: set data.num_clips=1")
        super().__init__(data_cfg, urls=urls, rank=rank, world_size=world_size,
                         batches_per_epoch=batches_per_epoch, resume=resume)
        self.action_dim, self.state_dim, self.use_extrinsics = action_dim, state_dim, use_extrinsics

    def check_dims(self, key: str, traj: dict, states: np.ndarray) -> None:
        """A sample whose dimensions differ from the model's stops the run (a data / config mismatch,
        not a bad sample)."""
        found = {"action": traj.get("action_dim"), "state": int(states.shape[1])}
        wanted = {"action": self.action_dim, "state": self.state_dim}
        for name in ("action", "state"):
            if found[name] != wanted[name]:
                raise LoaderError(f"trajectory sample {key} has {found[name]}-D {name}s but world_model.{name}_dim="
                                  f"{wanted[name]}: set world_model.{name}_dim={found[name]}, or use other shards")


def dataset_dims(path: str) -> dict | None:
    """The trajectory summary of a shard folder's index.json (None for URL patterns). Video shards
    are refused with one line."""
    if index_file(str(path)) is None:
        return None
    try:
        _, index = read_index(str(path))
    except ShardFormatError as exc:
        raise LoaderError(str(exc)) from None
    summary = index.get("trajectories")
    if not isinstance(summary, dict):
        raise LoaderError(f"{path} holds video shards, not trajectories: build trajectory shards from episodes "
                          "(vjepa shards build <episodes> <out>; docs/world_model.md)")
    return summary


def check_dataset_dims(summary: dict | None, wm_cfg, path: str) -> None:
    """Compare the index's dimensions with ``world_model.*`` before any worker starts."""
    if summary is None:
        return
    for name in ("action", "state"):
        found = summary.get(f"{name}_dim") or []
        wanted = getattr(wm_cfg, f"{name}_dim")
        if found != [wanted]:
            shown = " and ".join(f"{d}-D" for d in found) or "no"
            raise LoaderError(f"{path} holds {shown} {name}s but world_model.{name}_dim={wanted}: set "
                              f"world_model.{name}_dim to the data's, or rebuild the shards")
    if wm_cfg.use_extrinsics:
        wanted = wm_cfg.extrinsics_dim or wm_cfg.action_dim - 1
        found = summary.get("extrinsics_dim") or []
        if found != [wanted]:
            shown = " and ".join(f"{d}-D" for d in found) or "no"
            raise LoaderError(f"{path} holds {shown} camera extrinsics but the predictor takes {wanted}-D ones "
                              "(world_model.extrinsics_dim, default action_dim - 1): set it to the data's, or "
                              "world_model.use_extrinsics=false")
        with_extr, total = summary.get("with_extrinsics"), summary.get("episodes_samples")
        if isinstance(with_extr, int) and isinstance(total, int) and with_extr < total:
            raise LoaderError(f"{path}: {total - with_extr} of {total} samples have no camera extrinsics but "
                              "world_model.use_extrinsics=true: rebuild from episodes that all have them, or "
                              "set world_model.use_extrinsics=false")


def build_trajectory_stream(cfg, rank: int = 0, world_size: int = 1) -> TrajectoryStream:
    """This rank's trajectory stream for ``cfg`` (``data.source: shards`` of trajectory shards)."""
    d = cfg.data
    if d.source != "shards":
        raise LoaderError(f"the action-conditioned objective reads trajectory shards: set data.source=shards "
                          f"(got {d.source!r})")
    summary = dataset_dims(d.path)
    check_dataset_dims(summary, cfg.world_model, d.path)
    urls, samples = expand_urls(d.path)
    per_epoch = batches_per_epoch(d, samples, world_size)
    return TrajectoryStream(d, urls, cfg.world_model.action_dim, cfg.world_model.state_dim,
                            cfg.world_model.use_extrinsics, rank=rank, world_size=world_size,
                            batches_per_epoch=per_epoch)
