"""Latent planning (vjepa_pipeline/planning): energies on hand-computed cases, CEM / MPPI on a hand-made
world model whose right answer is known, the official CEM update, the closed MPC loop on a tiny point
environment, the baselines, and the one-line errors.

The hand-made world model: the "encoder" reads the agent's position off the image (brightness
centroid) and emits it as every token; the "predictor" adds the action to the tokens, i.e. moves the
position exactly as the environment does. With ``normalize_reps=False`` the L1 energy is then the mean
absolute coordinate distance between where the plan ends and the goal.
"""

from __future__ import annotations

import dataclasses
import types

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn
from gymnasium import spaces

from vjepa_pipeline.data.augment import center_view
from vjepa_pipeline.models.ac_predictor import ActionConditionedPredictor
from vjepa_pipeline.models.vit import VisionTransformer
from vjepa_pipeline.objectives.action_conditioned import encode_frames, encoder_input, rollout
from vjepa_pipeline.planning import (CEMConfig, LatentWorldModel, MPPIConfig, cem_plan,
                                     droid_pose_state_update, goal_energy, greedy_episode, mppi_plan,
                                     random_policy_episode, run_episode, shift_plan)
from vjepa_pipeline.planning import mpc as mpc_module

SIZE, TOKENS = 48, 4
PLANNERS = {"cem": (cem_plan, CEMConfig), "mppi": (mppi_plan, MPPIConfig)}


# ----------------------------------------------------------------------------- the hand-made world model
def render(pos, size: int = SIZE) -> np.ndarray:
    """A white Gaussian blob (sigma 1.5 px) at (x, y) in [0, 1]^2 (x: column) on black, uint8
    (size, size, 3)."""
    c = np.arange(size) + 0.5
    gx = np.exp(-((c - pos[0] * size) ** 2) / (2 * 1.5 ** 2))
    gy = np.exp(-((c - pos[1] * size) ** 2) / (2 * 1.5 ** 2))
    img = np.round(255 * gy[:, None] * gx[None, :]).astype(np.uint8)
    return np.repeat(img[:, :, None], 3, axis=2)


class PositionEncoder(nn.Module):
    """(B, 3, tubelet, S, S) normalised frames -> (B, TOKENS, 2): the brightness centroid, every token."""

    tubelet_size = 2

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a device
        self.calls = 0

    def forward(self, x):
        # one frame repeated to fill one tubelet
        assert x.shape[2] == self.tubelet_size and torch.equal(x[:, :, 0], x[:, :, 1])
        self.calls += 1
        img = x[:, 0, 0]
        w = img - img.amin((-2, -1), keepdim=True)
        w = w / w.sum((-2, -1), keepdim=True)
        coords = (torch.arange(img.shape[-1], dtype=img.dtype) + 0.5) / img.shape[-1]
        pos = torch.stack([(w.sum(-2) * coords).sum(-1), (w.sum(-1) * coords).sum(-1)], -1)
        return pos[:, None, :].expand(-1, TOKENS, -1) + self.anchor


class AddPredictor(nn.Module):
    """The ActionConditionedPredictor forward signature; output frame t = tokens of frame t + action t
    (first two dims). Records each call's batch size, length, actions and states."""

    def __init__(self, action_dim: int = 2, state_dim: int = 2, nan: bool = False):
        super().__init__()
        self.action_dim, self.state_dim, self.nan = action_dim, state_dim, nan
        self.anchor = nn.Parameter(torch.zeros(()))
        self.calls: list[tuple[int, int]] = []
        self.seen_actions: list[torch.Tensor] = []
        self.seen_states: list[torch.Tensor] = []

    def forward(self, tokens, actions, states):
        b, t = tokens.shape[:2]
        assert actions.shape == (b, t, self.action_dim) and states.shape == (b, t, self.state_dim)
        self.calls.append((b, t))
        self.seen_actions.append(actions.clone())
        self.seen_states.append(states.clone())
        out = tokens + actions[..., None, :2] + self.anchor
        return out * float("nan") if self.nan else out


def make_model(action_dim: int = 2, state_dim: int = 2, nan: bool = False,
               crop: int = SIZE) -> LatentWorldModel:
    return LatentWorldModel(PositionEncoder(), AddPredictor(action_dim, state_dim, nan), crop_size=crop,
                            normalize_reps=False, state_update="add")


def latents(model, pos) -> torch.Tensor:
    return model.encode(render(pos))[0]


def plan(name: str, model, start, goal, **cfg):
    fn, cls = PLANNERS[name]
    s0 = torch.tensor(start, dtype=torch.float32)
    return fn(model, latents(model, start), s0, latents(model, goal), cls(**cfg))


# ----------------------------------------------------------------------------- energy
def test_goal_energy_hand_computed():
    pred = torch.zeros(2, 3, 1, 2)
    pred[0, :, 0] = torch.tensor([[1.0, 1.0], [0.5, 0.0], [0.0, 2.0]])  # sample 0: frames 0..2
    pred[1, :, 0] = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 1.0]])
    goal = torch.tensor([[0.0, 1.0]])
    # last frame: |0-0|, |2-1| -> mean 0.5; |3-0|, |1-1| -> 1.5
    assert torch.allclose(goal_energy(pred, goal), torch.tensor([0.5, 1.5]))
    assert torch.allclose(goal_energy(pred, goal, "l2"), torch.tensor([0.5, 4.5]))
    # intermediate: per-frame means summed: s0 (0.5 + 0.75 + 0.5), s1 (0.5 + 0.5 + 1.5)
    assert torch.allclose(goal_energy(pred, goal, intermediate=True), torch.tensor([1.75, 2.5]))
    assert torch.allclose(goal_energy(pred, goal, "l2", intermediate=True),
                          torch.tensor([0.5 + 0.625 + 0.5, 5.5]))
    per_sample = torch.stack([goal, torch.tensor([[3.0, 1.0]])])  # (B, N, D): sample 1's goal is reached
    assert torch.allclose(goal_energy(pred, per_sample), torch.tensor([0.5, 0.0]))
    with pytest.raises(ValueError, match="distance must be one of"):
        goal_energy(pred, goal, "cosine")
    with pytest.raises(ValueError, match="do not match"):
        goal_energy(pred, torch.zeros(2, 2))


# ----------------------------------------------------------------------------- world model
def test_position_encoder_reads_the_position():
    model = make_model()
    for pos in [(0.3, 0.6), (0.71, 0.22)]:
        assert torch.allclose(latents(model, pos), torch.tensor(pos).expand(TOKENS, 2), atol=3e-3)
    batch = model.encode(np.stack([render((0.3, 0.6)), render((0.5, 0.5))]))
    assert batch.shape == (2, TOKENS, 2) and torch.allclose(batch[1], torch.full((TOKENS, 2), 0.5), atol=3e-3)
    resized = make_model(crop=32)  # center_view resizes 48 -> 32: the centroid survives the resize
    assert torch.allclose(latents(resized, (0.3, 0.6)), torch.tensor([0.3, 0.6]).expand(TOKENS, 2), atol=5e-3)
    with pytest.raises(ValueError, match="uint8"):
        model.encode(render((0.5, 0.5)).astype(np.float32))


def test_rollout_integrates_states_and_feeds_predictions_back():
    model = make_model()
    z0 = torch.tensor([0.2, 0.3]).expand(1, TOKENS, 2)
    acts = torch.tensor([[[0.1, 0.0], [0.05, -0.1], [0.0, 0.02]]] * 3)  # (B=3, H=3, 2)
    out = model.rollout(z0, torch.tensor([[0.2, 0.3]]), acts)
    assert out.shape == (3, 3, TOKENS, 2)
    expected = torch.tensor([0.2, 0.3]) + acts[0].cumsum(0)  # positions after each action
    assert torch.allclose(out[0, :, 0], expected, atol=1e-6)
    last_states = model.predictor.seen_states[-1][0]  # the 3-frame call: states integrated by "add"
    assert torch.allclose(last_states, torch.cat([torch.tensor([[0.2, 0.3]]), expected[:2]]), atol=1e-6)
    hold = LatentWorldModel(PositionEncoder(), AddPredictor(), SIZE, normalize_reps=False,
                            state_update="hold")
    hold.rollout(z0, torch.tensor([[0.2, 0.3]]), acts)
    assert torch.allclose(hold.predictor.seen_states[-1][0], torch.tensor([[0.2, 0.3]]).expand(3, 2))
    with pytest.raises(ValueError, match="state_update must be one of"):
        LatentWorldModel(PositionEncoder(), AddPredictor(), SIZE, state_update="teleport")


def _official_compute_new_pose(pose: np.ndarray, action: np.ndarray) -> np.ndarray:
    """notebooks/utils/mpc_utils.py compute_new_pose, on (B, 7) arrays."""
    from scipy.spatial.transform import Rotation

    out = []
    for p, a in zip(pose, action):
        rot = Rotation.from_euler("xyz", a[3:6]).as_matrix() @ Rotation.from_euler("xyz", p[3:6]).as_matrix()
        out.append(np.concatenate([p[:3] + a[:3], Rotation.from_matrix(rot).as_euler("xyz"),
                                   np.clip(p[6:] + a[6:], 0, 1)]))
    return np.stack(out)


def test_droid_pose_matches_official_compute_new_pose():
    pytest.importorskip("scipy")
    g = np.random.default_rng(0)
    pose = np.concatenate([g.normal(size=(16, 3)), g.uniform(-1.2, 1.2, (16, 3)),
                           g.uniform(0, 1, (16, 1))], 1)
    action = np.concatenate([g.normal(0, 0.05, (16, 3)), g.normal(0, 0.2, (16, 3)),
                             g.normal(0, 0.5, (16, 1))], 1)
    ours = droid_pose_state_update(torch.from_numpy(pose)[:, None], torch.from_numpy(action)[:, None])[:, 0]
    assert np.allclose(ours.numpy(), _official_compute_new_pose(pose, action), atol=1e-9)


def test_latent_world_model_with_real_networks_follows_the_training_encoding():
    torch.manual_seed(0)
    enc = VisionTransformer(embed_dim=32, depth=1, num_heads=2, patch_size=16, tubelet_size=2, img_size=32,
                            num_frames=2).eval()
    pred = ActionConditionedPredictor(32, 32, depth=1, num_heads=2, action_dim=3, state_dim=3, img_size=32,
                                      patch_size=16).eval()
    cfg = types.SimpleNamespace(data=types.SimpleNamespace(crop_size=32, crop_ratio=(0.75, 1.35)),
                                world_model=types.SimpleNamespace(normalize_reps=True))
    model = LatentWorldModel.from_loaded(types.SimpleNamespace(encoder=enc, predictor=pred, config=cfg))
    assert (model.crop_ratio, model.action_dim, model.state_dim) == ((0.75, 1.35), 3, 3)
    pix = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 40, 56, 3), dtype=np.uint8))
    z = model.encode(pix)
    ref = encode_frames(enc, encoder_input(center_view(pix, 32, (0.75, 1.35))[:, None]), 2, True)[:, 0]
    assert z.shape == (2, 4, 32) and torch.allclose(z, ref)
    assert torch.allclose(z.mean(-1), torch.zeros(2, 4), atol=1e-5)  # layer-normed
    acts, s0 = torch.randn(5, 2, 3), torch.randn(1, 3)
    out = model.rollout(z[:1], s0, acts)
    ref = rollout(pred, z[:1].expand(5, -1, -1), acts, s0.expand(5, -1)[:, None], 2, normalize_reps=True,
                  state_update=lambda s, a: s + a)
    assert out.shape == (5, 2, 4, 32) and torch.allclose(out, ref, atol=1e-6)
    res = cem_plan(model, z[0], s0[0], z[1], CEMConfig(samples=16, top_k=4, iterations=2))
    assert res.actions.shape == (2, 3) and res.predicted.shape == (2, 4, 32)


# ----------------------------------------------------------------------------- planners
@pytest.mark.parametrize("name", ["cem", "mppi"])
@pytest.mark.parametrize("intermediate", [False, True])
def test_planner_finds_the_action_that_reaches_the_goal(name, intermediate):
    model = make_model()
    start, goal = (0.3, 0.3), (0.42, 0.37)
    extra = {"top_k": 10} if name == "cem" else {"temperature": 0.02, "std_decay": 0.7}
    res = plan(name, model, start, goal, horizon=2, samples=200, iterations=8, action_low=-0.1,
               action_high=0.1, intermediate=intermediate, **extra)
    reached = torch.tensor(start) + res.actions.sum(0)
    assert torch.allclose(reached, torch.tensor(goal), atol=0.012), (name, res.actions)
    assert res.plan_energy < 0.012 and res.mean_energies[-1] < res.mean_energies[0]
    if name == "cem":  # MPPI's noise does not shrink: its best sample need not improve
        assert res.best_energies[-1] < res.best_energies[0]
    assert res.predicted.shape == (2, TOKENS, 2) and torch.allclose(res.first_action, res.actions[0])
    # one step away: the first action itself must be the displacement
    res1 = plan(name, model, start, goal, horizon=1, samples=200, iterations=8, action_low=-0.2,
                action_high=0.2, **extra)
    assert torch.allclose(res1.actions[0], torch.tensor([0.12, 0.07]), atol=0.012)


@pytest.mark.parametrize("name", ["cem", "mppi"])
def test_planner_is_deterministic_by_seed(name):
    kw = dict(samples=32, iterations=3, action_low=-0.1, action_high=0.1)
    a = plan(name, make_model(), (0.3, 0.3), (0.5, 0.4), seed=7, **kw)
    b = plan(name, make_model(), (0.3, 0.3), (0.5, 0.4), seed=7, **kw)
    c = plan(name, make_model(), (0.3, 0.3), (0.5, 0.4), seed=8, **kw)
    assert torch.equal(a.actions, b.actions) and a.best_energies == b.best_energies
    assert not torch.equal(a.actions, c.actions)


@pytest.mark.parametrize("name", ["cem", "mppi"])
def test_bounds_and_unsampled_dims(name):
    model = make_model(action_dim=3, state_dim=2)  # dim 2 does nothing to the position; not sampled
    low, high = (-0.05, -0.1, -1.0), (0.05, 0.1, 1.0)
    res = plan(name, model, (0.3, 0.3), (0.8, 0.35), horizon=2, samples=64, iterations=4, action_low=low,
               action_high=high, sample_dims=(True, True, False))
    cands = torch.cat([a.reshape(-1, 3) for a in model.predictor.seen_actions])
    assert bool((cands >= torch.tensor(low)).all()) and bool((cands <= torch.tensor(high)).all())
    assert bool((cands[:, 2] == 0).all()) and bool((res.actions[:, 2] == 0).all())
    # the goal is out of reach: x at the bound
    assert torch.allclose(res.actions[:, 0], torch.full((2,), 0.05), atol=0.01)
    with pytest.raises(ValueError, match="action_low has 2 values"):
        plan(name, model, (0.3, 0.3), (0.8, 0.35), action_low=(-1, -1), samples=16, iterations=1)


def test_round_small_zeroes_small_final_elements():
    # dim 2 does nothing (a "gripper" the scene ignores): its mean wanders near 0; the official planner rounds
    # the final gripper mean to 0 below 0.25
    kw = dict(samples=32, iterations=3, action_low=(-0.1, -0.1, -0.2), action_high=(0.1, 0.1, 0.2))
    free = plan("cem", make_model(action_dim=3), (0.3, 0.3), (0.4, 0.4), **kw)
    assert bool((free.actions[:, 2] != 0).all())
    rounded = plan("cem", make_model(action_dim=3), (0.3, 0.3), (0.4, 0.4), round_small=(0.0, 0.0, 0.25),
                   **kw)
    assert bool((rounded.actions[:, 2] == 0).all())
    assert torch.equal(rounded.actions[:, :2], free.actions[:, :2])


@pytest.mark.parametrize("name", ["cem", "mppi"])
def test_one_batched_rollout_per_iteration(name):
    model = make_model()
    plan(name, model, (0.3, 0.3), (0.5, 0.4), horizon=3, samples=50, iterations=4)
    # per iteration: one rollout of all 50 candidates = 3 predictor calls (frames 1, 2, 3); then the plan once
    assert model.predictor.calls == [(50, 1), (50, 2), (50, 3)] * 4 + [(1, 1), (1, 2), (1, 3)]
    assert model.encoder.calls == 2  # start and goal images


def test_cem_update_is_the_official_one():
    model = make_model()
    start, goal = torch.tensor([0.3, 0.3]), torch.tensor([0.45, 0.2])
    cfg = CEMConfig(horizon=1, samples=40, top_k=5, iterations=2, momentum=0.3, momentum_std=0.6,
                    action_low=-0.2, action_high=0.2, init_std=0.1, seed=3)
    res = cem_plan(model, start.expand(TOKENS, 2), start, goal.expand(TOKENS, 2), cfg)
    noise = torch.Generator().manual_seed(3)
    n1, n2 = torch.randn((40, 1, 2), generator=noise), torch.randn((40, 1, 2), generator=noise)
    c1 = (0.1 * n1).clamp(-0.2, 0.2)
    assert torch.equal(model.predictor.seen_actions[0], c1)
    top = (start + c1[:, 0] - goal).abs().mean(-1).topk(5, largest=False).indices
    mean1 = 0.7 * c1[top].mean(0) + 0.3 * torch.zeros(1, 2)
    std1 = 0.4 * c1[top].std(0) + 0.6 * torch.full((1, 2), 0.1)
    c2 = (mean1 + std1 * n2).clamp(-0.2, 0.2)
    assert torch.allclose(model.predictor.seen_actions[1], c2, atol=1e-6)
    top2 = (start + c2[:, 0] - goal).abs().mean(-1).topk(5, largest=False).indices
    assert torch.allclose(res.actions, 0.7 * c2[top2].mean(0) + 0.3 * mean1, atol=1e-6)


def test_mppi_update_is_the_weighted_mean():
    model = make_model()
    start, goal = torch.tensor([0.3, 0.3]), torch.tensor([0.4, 0.35])
    cfg = MPPIConfig(horizon=1, samples=30, iterations=1, temperature=0.1, action_low=-0.2, action_high=0.2,
                     init_std=0.1, seed=5)
    res = mppi_plan(model, start.expand(TOKENS, 2), start, goal.expand(TOKENS, 2), cfg)
    c = model.predictor.seen_actions[0]
    e = (start + c[:, 0] - goal).abs().mean(-1)
    w = torch.softmax(-(e - e.min()) / (e.max() - e.min()) / 0.1, 0)
    assert torch.allclose(res.actions, (w[:, None, None] * c).sum(0), atol=1e-6)


@pytest.mark.parametrize("name", ["cem", "mppi"])
def test_warm_start_is_the_initial_mean(name):
    model = make_model()
    warm = torch.tensor([[0.05, -0.03], [0.02, 0.04]])
    kw = dict(horizon=2, samples=16, iterations=2, init_std=1e-5, action_low=-0.1, action_high=0.1)
    fn, cls = PLANNERS[name]
    z0, goal = latents(model, (0.3, 0.3)), latents(model, (0.8, 0.8))
    with_ws = fn(model, z0, torch.tensor([0.3, 0.3]), goal, cls(**kw), warm_start=warm)
    without = fn(model, z0, torch.tensor([0.3, 0.3]), goal, cls(**kw))
    assert torch.allclose(with_ws.actions, warm, atol=1e-3)  # the tiny std cannot move far from it
    assert torch.allclose(without.actions, torch.zeros(2, 2), atol=1e-3)
    with pytest.raises(ValueError, match="warm_start must be"):
        fn(model, z0, torch.tensor([0.3, 0.3]), goal, cls(**kw), warm_start=warm[:1])


def test_planner_errors_are_one_line():
    bad = make_model(nan=True)
    with pytest.raises(ValueError, match="NaN energies") as err:
        plan("cem", bad, (0.3, 0.3), (0.5, 0.5), samples=16, iterations=1)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="NaN energies"):
        plan("mppi", bad, (0.3, 0.3), (0.5, 0.5), samples=16, iterations=1)
    with pytest.raises(ValueError, match="empty plan"):
        plan("cem", make_model(), (0.3, 0.3), (0.5, 0.5), horizon=0)
    with pytest.raises(ValueError, match="top_k must be"):
        plan("cem", make_model(), (0.3, 0.3), (0.5, 0.5), samples=4, top_k=5)
    model = make_model()
    with pytest.raises(ValueError, match="goal latents"):
        cem_plan(model, latents(model, (0.3, 0.3)), torch.zeros(2), torch.zeros(TOKENS + 1, 2))


def test_vjepa2_ac_preset_matches_the_official_settings():
    cfg = CEMConfig.vjepa2_ac()
    assert (cfg.horizon, cfg.samples, cfg.top_k, cfg.iterations, cfg.momentum, cfg.momentum_std) == \
        (2, 400, 10, 10, 0.15, 0.15)
    assert cfg.action_high[:3] == (0.05,) * 3
    assert cfg.sample_dims == (True, True, True, False, False, False, True)
    assert CEMConfig.vjepa2_ac(samples=8).samples == 8


# ----------------------------------------------------------------------------- MPC loop
class PointEnv(gym.Env):
    """A point in [0.1, 0.9]^2 moved by its action (|a| <= 0.1 per axis); pixels render the point."""

    def __init__(self, start=(0.25, 0.3), goal=(0.6, 0.55), max_steps=25, radius=0.03, action_dim=2,
                 size=SIZE, give_goal=True):
        self.start, self._goal, self.max_episode_steps, self.radius = start, np.array(goal), max_steps, radius
        self.size, self.give_goal = size, give_goal
        self.observation_space = spaces.Dict({"pixels": spaces.Box(0, 255, (size, size, 3), np.uint8),
                                              "state": spaces.Box(0.0, 1.0, (2,), np.float32)})
        self.action_space = spaces.Box(-0.1, 0.1, (action_dim,), np.float32)

    def _obs(self):
        return {"pixels": render(self.pos, self.size), "state": self.pos.astype(np.float32)}

    def _info(self):
        d = float(np.linalg.norm(self.pos - self._goal))
        info = {"distance": d, "success": d < self.radius}
        return {**info, "goal": self._goal.copy()} if self.give_goal else info

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = np.array((options or {}).get("start", self.start), np.float64), 0
        return self._obs(), self._info()

    def step(self, action):
        a = np.clip(np.asarray(action, np.float64)[:2], -0.1, 0.1)
        self.pos, self.t = np.clip(self.pos + a, 0.1, 0.9), self.t + 1
        info = self._info()
        return self._obs(), -info["distance"], info["success"], self.t >= self.max_episode_steps, info

    def goal_observation(self):
        return render(self._goal, self.size)


# Intermediate energy: with the final frame alone every plan whose actions sum to the remaining offset
# scores the same, so the first action (the one executed when replanning every step) is left free and
# the agent can wander near the goal for many steps, by how the samples fall on a given CPU's floats
# (MPPI, seed 0, one action per plan: 21 steps on the CI machine, 7 on another). Scoring every frame
# makes the straight path the single best plan.
MPC_CFG = {"cem": CEMConfig(samples=64, top_k=8, iterations=4, action_low=-0.1, action_high=0.1,
                            intermediate=True),
           "mppi": MPPIConfig(samples=64, iterations=4, temperature=0.02, action_low=-0.1, action_high=0.1,
                              intermediate=True)}


@pytest.mark.parametrize("name", ["cem", "mppi"])
@pytest.mark.parametrize("replan_every", [1, 2])
def test_mpc_loop_reaches_the_goal(name, replan_every):
    res = run_episode(PointEnv(), make_model(), planner=name, cfg=MPC_CFG[name], replan_every=replan_every,
                      record_frames=True)
    assert res.success and res.final_distance < 0.03, (res.final_distance, res.actions)
    assert 4 <= res.steps <= 8 and res.actions.shape == (res.steps, 2)  # 4 is the fewest at |a| <= 0.1
    assert res.states.shape == (res.steps + 1, 2)
    assert np.abs(res.actions).max() <= 0.1 + 1e-6 and len(res.frames) == res.steps + 1
    assert len(res.energies) == res.steps and res.energies[-1] < res.energies[0]
    assert res.seconds_per_action > 0
    again = run_episode(PointEnv(), make_model(), planner=name, cfg=MPC_CFG[name], replan_every=replan_every)
    assert np.array_equal(res.actions, again.actions)


@pytest.mark.parametrize("name", ["cem", "mppi"])
def test_mpc_loop_with_the_final_frame_energy_executing_whole_plans(name):
    """The default energy (last frame only, as V-JEPA 2-AC) in the closed loop: executing the whole
    2-step plan pins both actions (their sum is what the energy scores), so the loop goes straight."""
    cfg = dataclasses.replace(MPC_CFG[name], intermediate=False)
    res = run_episode(PointEnv(), make_model(), planner=name, cfg=cfg, replan_every=cfg.horizon)
    assert res.success and 4 <= res.steps <= 8, (res.steps, res.actions)


def test_mpc_warm_starts_from_the_shifted_plan(monkeypatch):
    seen = []

    def spy(model, z0, s0, z_goal, cfg, warm_start=None, generator=None):
        out = cem_plan(model, z0, s0, z_goal, cfg, warm_start=warm_start, generator=generator)
        seen.append((warm_start, out.actions))
        return out

    monkeypatch.setitem(mpc_module.PLANNERS, "cem", (spy, CEMConfig))
    run_episode(PointEnv(), make_model(), cfg=CEMConfig(horizon=3, samples=16, iterations=2, action_low=-0.1,
                                                        action_high=0.1), max_steps=3)
    assert seen[0][0] is None and len(seen) == 3
    for (_, prev), (ws, _) in zip(seen, seen[1:]):
        assert torch.equal(ws, torch.cat([prev[1:], prev[-1:]]))
    assert torch.equal(shift_plan(torch.tensor([[1.0], [2.0], [3.0]]), 2, "zero"),
                       torch.tensor([[3.0], [0.0], [0.0]]))


def test_mpc_input_errors_are_one_line():
    model = make_model()
    cases = [
        (dict(env=PointEnv(), goal_pixels=render((0.5, 0.5), 32)), "goal image"),
        (dict(env=PointEnv(action_dim=3)), "actions have 3 dims but the world model's predictor takes 2"),
        (dict(env=PointEnv(), model=make_model(state_dim=3)), "state has 2 dims"),
        (dict(env=PointEnv(), model=make_model(nan=True)), "NaN energies"),
        (dict(env=PointEnv(), replan_every=5), "replan_every"),
        (dict(env=PointEnv(), planner="ilqr"), "planner must be one of"),
    ]
    for kwargs, message in cases:
        kwargs = {"model": model, "cfg": None, **kwargs}
        if kwargs.get("planner") != "ilqr":
            kwargs["cfg"] = CEMConfig(samples=16, iterations=1)
        with pytest.raises(ValueError, match=message) as err:
            run_episode(**kwargs)
        assert "\n" not in str(err.value), message


def test_baselines():
    greedy = greedy_episode(PointEnv())
    assert greedy.success and greedy.steps == 4  # 0.35 / 0.1 -> 4 straight steps in open space
    rand = random_policy_episode(PointEnv(), seed=0, max_steps=10)
    assert not rand.success and rand.steps == 10 and rand.final_distance > 0.1 and rand.energies == []
    assert np.array_equal(rand.actions, random_policy_episode(PointEnv(), seed=0, max_steps=10).actions)
    with pytest.raises(ValueError, match=r"info\['goal'\]"):
        greedy_episode(PointEnv(give_goal=False))
