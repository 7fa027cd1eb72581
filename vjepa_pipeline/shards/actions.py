"""Actions of a trajectory window: the alignment rule, and the official DROID pose deltas.

The alignment rule. A trajectory episode has one video frame per time step ``t``; ``actions[t]`` is
the action taken at frame ``t``, leading to frame ``t + 1`` (an episode records N or N - 1 actions for
N frames; an N-th action is allowed and unused), ``states[t]`` and ``extrinsics[t]`` are measured at
frame ``t``. A training sample keeps some frames of a window, ``indices`` (strictly increasing frame
numbers, e.g. every second frame). Then:

* states and extrinsics are sampled at the kept frames: ``states[indices]``;
* the actions between two kept frames, ``actions[indices[k] : indices[k + 1]]``, are combined into one
  by the rule: ``sum`` keeps the total displacement (increments, deltas), ``mean`` keeps rates
  (velocities), ``first`` keeps the command issued at the kept frame (held commands), and
  ``pose_delta`` ignores recorded actions and recomputes the deltas from the kept poses, as the
  official DROID loader (vjepa2 ``app/vjepa_droid/droid.py``, ``poses_to_diffs``) does.

A window of L kept frames therefore has L - 1 actions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

ACTION_RULES = ("sum", "mean", "first", "pose_delta")
POSE_DIM = 7  # pose_delta states: xyz, Euler "xyz" angles (radians), gripper


def pose_deltas(poses: np.ndarray) -> np.ndarray:
    """The official ``poses_to_diffs``: (T, 7) poses -> (T - 1, 7) deltas.

    Columns: xyz differences, the relative rotation ``R[t + 1] @ R[t].T`` as Euler "xyz" angles
    (radians), the gripper (last column) difference. Vectorised; same matrices as the official loop.
    """
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 2 or poses.shape[1] != POSE_DIM:
        raise ValueError(f"pose_deltas expects (T, {POSE_DIM}) poses (xyz, Euler xyz, gripper), "
                         f"got {poses.shape}")
    if len(poses) < 2:
        return np.zeros((0, POSE_DIM))
    matrices = Rotation.from_euler("xyz", poses[:, 3:6], degrees=False).as_matrix()  # (T, 3, 3)
    relative = matrices[1:] @ np.swapaxes(matrices[:-1], 1, 2)
    angle_diff = Rotation.from_matrix(relative).as_euler("xyz", degrees=False)
    xyz_diff = poses[1:, :3] - poses[:-1, :3]
    gripper_diff = poses[1:, -1:] - poses[:-1, -1:]
    return np.concatenate([xyz_diff, angle_diff, gripper_diff], axis=1)


def _check_indices(indices: Sequence[int]) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise ValueError(f"indices must be a 1-D sequence of frame numbers, got {indices!r}")
    idx = idx.astype(np.int64)
    if idx.size and (idx[0] < 0 or np.any(np.diff(idx) <= 0)):
        raise ValueError(f"indices must be non-negative and strictly increasing, got {idx.tolist()}")
    return idx


def window_actions(actions: np.ndarray | None, states: np.ndarray | None, indices: Sequence[int],
                   rule: str) -> np.ndarray:
    """The (len(indices) - 1, A) float32 actions of a window of kept frames (see the module docstring).

    Row k combines ``actions[indices[k] : indices[k + 1]]`` by ``sum`` / ``mean`` / ``first``, or is
    ``pose_deltas(states[indices])[k]`` for ``pose_delta``.
    """
    idx = _check_indices(indices)
    if rule == "pose_delta":
        if states is None:
            raise ValueError("pose_delta needs states")
        states = np.asarray(states)
        if idx.size and idx[-1] >= len(states):
            raise ValueError(f"frame {idx[-1]} is past the {len(states)} states")
        return pose_deltas(states[idx]).astype(np.float32)
    if rule not in ACTION_RULES:
        raise ValueError(f"unknown action rule {rule!r} (expected one of {', '.join(ACTION_RULES)})")
    if actions is None:
        raise ValueError(f"the {rule} rule needs recorded actions")
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim == 1:
        actions = actions[:, None]
    if len(idx) < 2:
        return np.zeros((0, actions.shape[1]), dtype=np.float32)
    if idx[-1] > len(actions):  # the last kept frame needs actions up to (not including) itself
        raise ValueError(f"frame {idx[-1]} needs {idx[-1]} actions, the episode has {len(actions)}")
    if rule == "first":
        return actions[idx[:-1]].astype(np.float32)
    # Segment sums: with strictly increasing starts, reduceat sums actions[idx[k]:idx[k + 1]]
    out = np.add.reduceat(actions[: idx[-1]], idx[:-1], axis=0)
    if rule == "mean":
        out /= np.diff(idx)[:, None]
    return out.astype(np.float32)


__all__ = ["ACTION_RULES", "POSE_DIM", "pose_deltas", "window_actions"]
