"""V-JEPA 2-AC objective (objectives/action_conditioned.py) and the offline world-model validation
(eval/world_model.py): the official loss math on hand-computed cases, and an end-to-end check that a
predictor trained with the objective on a tiny controllable scene uses the actions."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vjepa_pipeline.data.batch import TrajectoryBatch
from vjepa_pipeline.eval.world_model import latent_prediction_errors, shuffle_permutation
from vjepa_pipeline.models.ac_predictor import ActionConditionedPredictor
from vjepa_pipeline.models.vit import VisionTransformer
from vjepa_pipeline.objectives import ActionConditionedObjective
from vjepa_pipeline.objectives.action_conditioned import ac_losses, encode_frames, rollout

# The scene: a bright SQ x SQ square on a dark CANVAS x CANVAS image; each step it moves by the
# 2-D integer action (|a| <= AMAX per axis, clipped at the borders: the recorded action is the
# displacement that happened). state = the square's position. Patch 16 -> 3 x 3 tokens per frame.
CANVAS, SQ, AMAX, PATCH, DIM = 48, 16, 8, 16, 64
LIMIT = CANVAS - SQ


def make_scene(n: int, frames: int, seed: int) -> TrajectoryBatch:
    rng = np.random.default_rng(seed)
    pos = np.zeros((n, frames, 2), np.int64)
    act = np.zeros((n, frames, 2), np.int64)
    pos[:, 0] = rng.integers(0, LIMIT + 1, (n, 2))
    for t in range(frames):
        nxt = np.clip(pos[:, t] + rng.integers(-AMAX, AMAX + 1, (n, 2)), 0, LIMIT)
        act[:, t] = nxt - pos[:, t]  # the last action has no next frame (unused by the losses)
        if t + 1 < frames:
            pos[:, t + 1] = nxt
    img = np.full((n, frames, CANVAS, CANVAS), -1.0, np.float32)
    for i in range(n):
        for t in range(frames):
            x, y = pos[i, t]
            img[i, t, y:y + SQ, x:x + SQ] = 1.0
    video = torch.from_numpy(img)[:, :, None].expand(-1, -1, 3, -1, -1).contiguous()  # (B, T, 3, H, W)
    return TrajectoryBatch(video, torch.from_numpy(act).float() / AMAX, torch.from_numpy(pos).float() / LIMIT,
                           keys=[f"traj{seed}_{i}" for i in range(n)])


def subset(b: TrajectoryBatch, idx) -> TrajectoryBatch:
    ids = torch.arange(b.size)[idx].tolist()
    return TrajectoryBatch(b.frames[idx], b.actions[idx], b.states[idx], keys=[b.keys[i] for i in ids])


def tiny_encoder() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(embed_dim=DIM, depth=1, num_heads=4, patch_size=PATCH, tubelet_size=2,
                             img_size=CANVAS, num_frames=2).eval()


def tiny_predictor(seed: int = 0) -> ActionConditionedPredictor:
    torch.manual_seed(seed)
    return ActionConditionedPredictor(DIM, 64, depth=2, num_heads=4, action_dim=2, state_dim=2, img_size=CANVAS,
                                      patch_size=PATCH)


def train(objective: ActionConditionedObjective, data: TrajectoryBatch, steps: int, batch: int = 32,
          seed: int = 0) -> list[dict[str, float]]:
    opt = torch.optim.Adam(objective.trainable_networks()["predictor"].parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    log = []
    for _ in range(steps):
        out = objective.step(subset(data, torch.randint(0, data.size, (batch,), generator=g)))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        log.append(out.terms)
    return log


def held_out_batches() -> list[TrajectoryBatch]:
    test = make_scene(256, 4, seed=2)
    return [subset(test, slice(i, i + 64)) for i in range(0, 256, 64)]


class IgnoreActions(nn.Module):
    """A predictor that never sees the actions (they are zeroed): what the validation must catch."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, tokens, actions, states, extrinsics=None):
        return self.inner(tokens, torch.zeros_like(actions), states)


# ---- encode_frames ---------------------------------------------------------------------------

class RecordingEncoder(nn.Module):
    """Stub encoder: records its input and returns (B', 2 tokens, 3 features) from the pixels."""

    tubelet_size = 2

    def __init__(self):
        super().__init__()
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x)
        m = x.mean(dim=(1, 2, 3, 4))
        return torch.stack([torch.stack([m, 2 * m, -m], -1), torch.stack([m, m * m, 1 + m], -1)], 1)


def test_encode_frames_repeats_each_frame_into_one_tubelet():
    frames = torch.randn(2, 3, 3, 16, 16)
    enc = RecordingEncoder()
    z = encode_frames(enc, frames)
    (x,) = enc.inputs
    assert x.shape == (6, 3, 2, 16, 16)  # one clip of tubelet_size copies per (trajectory, frame)
    assert torch.equal(x[:, :, 0], x[:, :, 1])
    assert torch.equal(x[:, :, 0], frames.flatten(0, 1))  # trajectory-major, frame order kept
    assert z.shape == (2, 3, 2, 3)
    assert torch.allclose(z.mean(-1), torch.zeros(2, 3, 2), atol=1e-5)  # layer-normed over D
    raw = encode_frames(RecordingEncoder(), frames, tubelet_size=4, normalize_reps=False)
    assert raw.shape == (2, 3, 2, 3) and not torch.allclose(raw, z)


def test_encode_frames_matches_the_encoder_on_a_static_tubelet():
    enc = tiny_encoder()
    frames = make_scene(2, 3, seed=5).frames
    z = encode_frames(enc, frames)
    assert z.shape == (2, 3, (CANVAS // PATCH) ** 2, DIM) and not z.requires_grad
    clip = frames[1, 2][:, None].repeat(1, 2, 1, 1)[None]  # (1, C, 2, H, W)
    with torch.no_grad():
        expect = F.layer_norm(enc(clip), (DIM,))[0]
    assert torch.allclose(z[1, 2], expect, atol=1e-5)


def test_random_encoder_features_follow_the_square():
    """The frozen random ViT is an acceptable stand-in: its latents change with the square's position."""
    z = encode_frames(tiny_encoder(), make_scene(64, 2, seed=7).frames)
    moved = (z[:, 1] - z[:, 0]).abs().mean(dim=(1, 2))  # per trajectory, frame 0 -> 1
    assert moved.median() > 0.1
    same_pos = encode_frames(tiny_encoder(), make_scene(1, 1, seed=7).frames)
    assert torch.allclose(same_pos[0, 0], z[0, 0], atol=1e-5)  # deterministic: same image, same latents


# ---- the losses --------------------------------------------------------------------------------

class Oracle(nn.Module):
    """Stub predictor that knows the trajectory: output frame t is the real latents of frame t+1."""

    def __init__(self, z: torch.Tensor):
        super().__init__()
        self.z = z

    def forward(self, tokens, actions, states, extrinsics=None):
        t = tokens.shape[1]
        assert actions.shape[1] == states.shape[1] == t
        return self.z[:, 1:t + 1]


class AddActionAndState(nn.Module):
    """Stub predictor: next latent = latent + action + state (A = S = D = N = 1)."""

    def forward(self, tokens, actions, states, extrinsics=None):
        return tokens + (actions + states)[..., None, :]


def test_oracle_predictor_has_zero_losses():
    z = F.layer_norm(torch.randn(3, 5, 4, 8), (8,))
    actions, states = torch.randn(3, 4, 2), torch.randn(3, 5, 2)
    tf, ro = ac_losses(Oracle(z), z, actions, states, rollout_steps=3)
    assert float(tf) < 1e-4 and float(ro) < 1e-4
    # and a wrong predictor is not: the losses are measured against the next frame
    tf_id, _ = ac_losses(lambda tok, a, s: tok, z, actions, states)
    assert float(tf_id) > 0.5


def test_losses_match_the_official_formula_by_hand():
    """z = [0, 1, 3] (one token, one feature), actions [2, 5], states [1, -1, 0], loss_exp 2, no layer
    norm, auto_steps 2. Teacher forcing predicts frame 1 = 0+2+1 = 3, frame 2 = 1+5-1 = 5 (real frame
    1 fed): mean((3-1)^2, (5-3)^2) / 2 = 2. Rollout feeds its own frame-1 prediction and the real
    state 1: frame 1 = 3, frame 2 = 3+5-1 = 7: mean((3-1)^2, (7-3)^2) / 2 = 5."""
    z = torch.tensor([0.0, 1.0, 3.0]).view(1, 3, 1, 1)
    actions = torch.tensor([2.0, 5.0]).view(1, 2, 1)
    states = torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1)
    tf, ro = ac_losses(AddActionAndState(), z, actions, states, rollout_steps=2, loss_exp=2.0, normalize_reps=False)
    assert float(tf) == pytest.approx(2.0) and float(ro) == pytest.approx(5.0)
    # auto_steps 1: the rollout is the first teacher-forced frame only: (3-1)^2 / 2
    _, ro1 = ac_losses(AddActionAndState(), z, actions, states, rollout_steps=1, loss_exp=2.0, normalize_reps=False)
    assert float(ro1) == pytest.approx(2.0)
    # L1 (official loss_exp 1.0): tf mean(2, 2) = 2, rollout mean(2, 4) = 3; a T-th action is ignored
    tf, ro = ac_losses(AddActionAndState(), z, torch.tensor([2.0, 5.0, 99.0]).view(1, 3, 1), states,
                       rollout_steps=2, normalize_reps=False)
    assert float(tf) == pytest.approx(2.0) and float(ro) == pytest.approx(3.0)
    # integrated states (the official planning wrapper): state 1 = state 0 + action 0 = 3 -> frame 2 = 3+5+3
    out = rollout(AddActionAndState(), z[:, :1], actions, states, 2, normalize_reps=False,
                  state_update=lambda s, a: s + a)
    assert out.flatten().tolist() == [3.0, 11.0]
    with pytest.raises(ValueError):
        ac_losses(AddActionAndState(), z, actions, states, rollout_steps=3)


def test_rollout_reuses_the_first_prediction_like_block_causal_prediction():
    """The official rollout starts from the teacher-forced prediction of frame 1; with a block-causal
    predictor that is the same as predicting frame 1 from frame 0 alone."""
    pred = tiny_predictor().eval()
    z = encode_frames(tiny_encoder(), make_scene(2, 4, seed=3).frames)
    b = make_scene(2, 4, seed=3)
    with torch.no_grad():
        full = F.layer_norm(pred(z[:, :-1], b.actions[:, :3], b.states[:, :3]), (DIM,))
        alone = rollout(pred, z[:, :1], b.actions, b.states, 1)
    assert torch.allclose(full[:, :1], alone, atol=1e-5)


# ---- the objective -------------------------------------------------------------------------------

def test_objective_trains_only_the_predictor_and_is_reproducible():
    data = make_scene(16, 4, seed=1)

    def run():
        obj = ActionConditionedObjective(tiny_encoder(), tiny_predictor(), rollout_steps=2)
        return obj, train(obj, data, steps=3, batch=8)

    obj, log_a = run()
    _, log_b = run()
    assert log_a == log_b  # same seeds -> identical losses, bit for bit
    assert set(log_a[0]) == {"loss_teacher_forcing", "loss_rollout"}
    assert list(obj.trainable_networks()) == ["predictor"] and list(obj.frozen_networks()) == ["encoder"]
    assert not any(p.requires_grad for p in obj.encoder.parameters())
    assert all(p.grad is None for p in obj.encoder.parameters())
    out = obj.step(data)
    assert out.loss.requires_grad
    assert float(out.loss.detach()) == pytest.approx(out.terms["loss_teacher_forcing"] + out.terms["loss_rollout"], rel=1e-5)
    assert out.tokens == 16 * 4 * 9


# ---- offline validation --------------------------------------------------------------------------

def test_shuffled_baseline_uses_a_fixed_derangement():
    a = shuffle_permutation(8, torch.Generator().manual_seed(0))
    b = shuffle_permutation(8, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert sorted(a.tolist()) == list(range(8)) and not (a == torch.arange(8)).any()
    assert not torch.equal(a, shuffle_permutation(8, torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError):
        shuffle_permutation(1, torch.Generator())


def test_validation_is_deterministic_and_the_last_frame_baseline_is_exact():
    enc, pred = tiny_encoder(), tiny_predictor().train()
    batches = [make_scene(8, 3, seed=4)]
    first = latent_prediction_errors(enc, pred, batches, horizons=(1, 2))
    assert first == latent_prediction_errors(enc, pred, batches, horizons=(1, 2))
    assert first["trajectories"] == 8 and set(first["true_actions"]) == {1, 2}
    z = encode_frames(enc, batches[0].frames)
    assert first["last_frame"][2] == pytest.approx(float((z[:, 2] - z[:, 0]).abs().mean()), rel=1e-5)
    assert pred.training and not enc.training  # the networks' modes are restored


@pytest.fixture(scope="module")
def trained():
    """The predictor trained with the AC objective (300 Adam steps, batch 32, 4-frame trajectories,
    auto_steps 2) on 2048 generated trajectories, and its held-out validation."""
    encoder, predictor = tiny_encoder(), tiny_predictor()
    objective = ActionConditionedObjective(encoder, predictor, rollout_steps=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is faster, and steady on a busy machine
    try:
        start = time.perf_counter()
        log = train(objective, make_scene(2048, 4, seed=1), steps=300)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    errors = latent_prediction_errors(encoder, predictor, held_out_batches(), horizons=(1, 2, 3))
    print(f"\ntrained in {seconds:.1f}s; last losses {log[-1]}; held-out errors {errors}")
    return encoder, predictor, log, errors


def uses_actions(errors: dict, k: int = 1, margin: float = 0.2) -> bool:
    """The acceptance criterion: the k-step error with the true actions is at least ``margin`` below both
    baselines. A predictor that ignores actions scores identically with shuffled actions and fails it."""
    true = errors["true_actions"][k]
    return true <= (1 - margin) * errors["last_frame"][k] and true <= (1 - margin) * errors["shuffled_actions"][k]


def test_trained_predictor_beats_both_baselines(trained):
    _, _, log, errors = trained
    assert log[-1]["loss_teacher_forcing"] < 0.5 * log[0]["loss_teacher_forcing"]
    assert uses_actions(errors, k=1), errors
    for k in (2, 3):  # the auto-regressive rollout still uses the actions further out
        assert errors["true_actions"][k] < errors["shuffled_actions"][k] < errors["last_frame"][k] * 1.05, errors


def test_validation_catches_a_predictor_that_ignores_actions(trained):
    encoder, predictor, _, errors = trained
    blind = latent_prediction_errors(encoder, IgnoreActions(predictor), held_out_batches(), horizons=(1,))
    assert blind["true_actions"][1] == pytest.approx(blind["shuffled_actions"][1], rel=1e-6)
    assert not uses_actions(blind, k=1)
    assert errors["true_actions"][1] < blind["true_actions"][1]
