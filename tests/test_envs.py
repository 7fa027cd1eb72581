"""The embedded environments (two rooms, push) and data collection in them: determinism, dynamics
(wall, door, clipping, contact pushes), goal images, benchmark tasks, Gymnasium's checker, and the
episode writer (layout, lengths, determinism, resume)."""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest

from vjepa_pipeline.envs import ENVS, PushEnv, TwoRoomsEnv, make_env
from vjepa_pipeline.envs import push as push_mod
from vjepa_pipeline.envs import two_rooms as rooms_mod


def _drive(env, action, n):
    for _ in range(n):
        obs, reward, terminated, truncated, info = env.step(np.asarray(action, dtype=np.float32))
    return obs, reward, terminated, truncated, info


def _is_agent_colour(pixel) -> bool:
    r, g, b = (int(v) for v in pixel)
    return r > 150 and g < 110 and b < 110


# ----------------------------------------------------------------------------- registry

def test_make_env_by_name_and_unknown_name():
    assert isinstance(make_env("two_rooms"), TwoRoomsEnv) and isinstance(make_env("push", size=32), PushEnv)
    assert make_env("push", size=32).observation_space["pixels"].shape == (32, 32, 3)
    with pytest.raises(ValueError) as err:
        make_env("maze")
    msg = str(err.value)
    assert "\n" not in msg and all(name in msg for name in ENVS)


# ----------------------------------------------------------------------------- determinism

@pytest.mark.parametrize("name", sorted(ENVS))
def test_same_seed_same_episode(name):
    def episode(seed):
        env = make_env(name)
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(7)
        pixels, states = [obs["pixels"]], [obs["state"]]
        for _ in range(15):
            obs, *_ = env.step(rng.uniform(-0.1, 0.1, 2).astype(np.float32))
            pixels.append(obs["pixels"])
            states.append(obs["state"])
        return np.stack(pixels), np.stack(states)

    p1, s1 = episode(3)
    p2, s2 = episode(3)
    _, s3 = episode(4)
    assert np.array_equal(p1, p2) and np.array_equal(s1, s2)
    assert not np.array_equal(s1, s3)  # the seed matters
    assert np.abs(np.diff(s1, axis=0)).max() > 0.01  # and the agent moved


# ----------------------------------------------------------------------------- two rooms dynamics

def test_wall_blocks_and_door_passes():
    env = TwoRoomsEnv()
    env.reset(seed=0, options={"start": (0.3, 0.2), "goal": (0.8, 0.2)})
    obs, *_ = _drive(env, (0.1, 0.0), 15)
    x, y = obs["state"]
    assert x <= env.wall_x - env.wall_half + 1e-6 and x > 0.45 and y == pytest.approx(0.2)
    env.reset(seed=0, options={"start": (0.3, 0.5), "goal": (0.8, 0.5)})
    obs, *_ = _drive(env, (0.1, 0.0), 5)
    assert obs["state"][0] == pytest.approx(0.8, abs=1e-6)  # straight through the door
    # from the right room too, and the agent slides along the wall rather than sticking to it
    env.reset(seed=0, options={"start": (0.7, 0.85), "goal": (0.2, 0.85)})
    obs, *_ = _drive(env, (-0.1, -0.02), 8)
    assert obs["state"][0] >= env.wall_x + env.wall_half - 1e-6 and obs["state"][1] < 0.85 - 0.1


def test_actions_are_clipped_and_checked():
    env = TwoRoomsEnv()
    env.reset(seed=0, options={"start": (0.2, 0.5), "goal": (0.9, 0.9)})
    obs, *_ = env.step(np.array([5.0, -5.0], dtype=np.float32))
    assert np.allclose(obs["state"], [0.3, 0.4], atol=1e-6)
    obs, *_ = _drive(env, (-0.1, -0.1), 10)
    assert np.allclose(obs["state"], [0.0, 0.0])  # borders clip
    with pytest.raises(ValueError):
        env.step(np.array([np.nan, 0.0]))


def test_success_reward_and_truncation():
    env = TwoRoomsEnv(max_steps=3)
    env.reset(seed=0, options={"start": (0.2, 0.2), "goal": (0.2, 0.35)})
    _, reward, terminated, truncated, info = env.step(np.zeros(2, np.float32))
    assert not terminated and not info["success"] and reward == pytest.approx(-0.15)
    _, reward, terminated, truncated, info = env.step(np.array([0.0, 0.06], np.float32))
    assert terminated and info["success"] and info["distance"] < env.success_radius and not truncated
    _, _, _, truncated, _ = env.step(np.zeros(2, np.float32))
    assert truncated and env.max_episode_steps == 3


def test_goal_observation_shows_the_agent_at_the_goal():
    env = TwoRoomsEnv(size=64)
    obs, _ = env.reset(seed=0, options={"start": (0.25, 0.3), "goal": (0.75, 0.7)})
    goal = env.goal_observation()

    def at(p):  # (row, column) of a world point
        return int(p[1] * 64), int(p[0] * 64)

    assert _is_agent_colour(goal[at((0.75, 0.7))]) and not _is_agent_colour(goal[at((0.25, 0.3))])
    pixels = obs["pixels"]
    assert _is_agent_colour(pixels[at((0.25, 0.3))]) and not _is_agent_colour(pixels[at((0.75, 0.7))])
    assert np.array_equal(env.render(), obs["pixels"])
    wall_pixel = obs["pixels"][at((0.5, 0.1))]
    assert int(wall_pixel.max()) < 100  # the wall is dark, the door (0.5, 0.5) is not
    assert int(obs["pixels"][at((0.5, 0.5))].min()) > 200


def test_two_rooms_fixed_pairs():
    pairs = rooms_mod.fixed_pairs(60, seed=1)
    assert pairs == rooms_mod.fixed_pairs(60, seed=1) and pairs != rooms_mod.fixed_pairs(60, seed=2)
    for start, goal in pairs:
        assert rooms_mod.room_of(start[0]) != rooms_mod.room_of(goal[0])
        for x, y in (start, goal):
            assert abs(x - 0.5) - 0.02 >= 0.1 - 1e-9 and 0.1 <= x <= 0.9 and 0.1 <= y <= 0.9
    hard = rooms_mod.fixed_pairs(20, seed=1, greedy_fails=True)
    assert not any(rooms_mod._greedy_reaches(s, g) for s, g in hard)
    assert any(rooms_mod._greedy_reaches(s, g) for s, g in pairs)  # the filter is not vacuous


# ----------------------------------------------------------------------------- push dynamics

def test_push_moves_the_block_only_on_contact_and_along_the_move():
    env = PushEnv()
    # no contact: the block stays
    env.reset(seed=0, options={"agent": (0.2, 0.2), "block": (0.6, 0.6), "goal": (0.8, 0.6)})
    obs, *_ = _drive(env, (0.1, 0.0), 3)
    assert np.allclose(obs["state"], [0.5, 0.2, 0.6, 0.6])
    # head-on from the left: the block moves right with the agent, not sideways
    env.reset(seed=0, options={"agent": (0.3, 0.5), "block": (0.45, 0.5), "goal": (0.8, 0.5)})
    obs, *_ = _drive(env, (0.1, 0.0), 2)
    ax, _, bx, by = obs["state"]
    assert by == pytest.approx(0.5) and bx == pytest.approx(0.45 + 0.2 - 0.05, abs=1e-4)
    assert bx - ax == pytest.approx(push_mod.BLOCK_HALF + push_mod.AGENT_RADIUS, abs=1e-4)  # in contact
    # moving away: no pull
    obs, *_ = _drive(env, (-0.1, 0.0), 2)
    assert obs["state"][2] == pytest.approx(bx)
    # a diagonal push moves the block along the move's direction
    env.reset(seed=0, options={"agent": (0.3, 0.3), "block": (0.4, 0.4), "goal": (0.7, 0.7)})
    s0 = env.state
    obs, *_ = _drive(env, (0.05, 0.05), 3)
    moved = obs["state"][2:].astype(np.float64) - s0[2:]
    assert np.linalg.norm(moved) > 0.05 and abs(moved[0] - moved[1]) < 1e-5
    assert not push_mod.overlaps(*env.state)


def test_push_block_stays_on_the_table():
    env = PushEnv()
    env.reset(seed=0, options={"agent": (0.7, 0.5), "block": (0.85, 0.5), "goal": (0.5, 0.5)})
    obs, *_ = _drive(env, (0.1, 0.0), 5)
    ax, _, bx, _ = obs["state"]
    assert bx == pytest.approx(1 - push_mod.BLOCK_HALF) and ax < bx and not push_mod.overlaps(*env.state)


def test_push_success_and_goal_observation():
    env = PushEnv()
    env.reset(seed=0, options={"agent": (0.2, 0.5), "block": (0.4, 0.5), "goal": (0.6, 0.5)})
    _, reward, terminated, _, info = env.step(np.zeros(2, np.float32))
    assert not terminated and reward == pytest.approx(-0.2)
    *_, terminated, _, info = _drive(env, (0.1, 0.0), 3)
    assert terminated and info["success"]
    goal = env.goal_observation()
    agent = env.goal_agent()
    # the block drawn at the goal, the agent touching its back on the push line (here: to its left)
    assert agent[1] == pytest.approx(0.5) and 0.6 - agent[0] == pytest.approx(0.06 + 0.04 + 0.005, abs=1e-6)
    assert _is_agent_colour(goal[32, int(agent[0] * 64)])
    blue = goal[32, int(0.6 * 64)]
    assert int(blue[2]) > 150 and int(blue[0]) < 100


def test_push_fixed_pairs_are_feasible():
    triples = push_mod.fixed_pairs(100, seed=0)
    assert triples == push_mod.fixed_pairs(100, seed=0) and triples != push_mod.fixed_pairs(100, seed=1)
    for agent, block, goal in triples:
        dist = math.dist(block, goal)
        assert 0.15 <= dist <= 0.35 and all(0.2 <= v <= 0.8 for v in goal)
        assert not push_mod.overlaps(*agent, *block)
        u = ((goal[0] - block[0]) / dist, (goal[1] - block[1]) / dist)
        behind = [b - push_mod.contact_distance(*u) * c for b, c in zip(block, u)]
        assert all(0.0 <= v <= 1.0 for v in behind)  # the agent fits behind the block


# ----------------------------------------------------------------------------- Gymnasium's checker

@pytest.mark.parametrize("name", sorted(ENVS))
def test_gymnasium_env_checker(name):
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(make_env(name, render_mode="rgb_array"))
    # harmless: render modes are checked through a registered spec, and ours are not registered
    rest = [str(w.message) for w in caught if "not having a spec" not in str(w.message)]
    assert not rest, rest


# ----------------------------------------------------------------------------- collection

def _frames_in(path) -> int:
    from vjepa_pipeline.shards.decoders import get_decoder

    return get_decoder("decord").count_frames(path.read_bytes())


def test_collect_layout_determinism_and_resume(tmp_path):
    from vjepa_pipeline.planning.collect import collect_episodes

    out = tmp_path / "a"
    summary = collect_episodes("two_rooms", out, episodes=3, steps=12, seed=5, policy_mix=0.5)
    assert summary["written"] == 3 and summary["skipped"] == 0 and summary["frames"] == 3 * 13
    assert summary["policies"] == {"random": 1, "noisy_goal": 2}  # the mix, spread evenly
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["ep_00000", "ep_00001", "ep_00002"]
    ep = out / "ep_00001"
    actions, states = np.load(ep / "actions.npy"), np.load(ep / "states.npy")
    assert actions.shape == (12, 2) and states.shape == (13, 2)
    assert _frames_in(ep / "video.mp4") == len(states) == len(actions) + 1
    assert np.all(np.abs(actions) <= 0.1 + 1e-12)
    from vjepa_pipeline.shards.decoders import get_decoder

    first = get_decoder("decord").decode((ep / "video.mp4").read_bytes(), [0], 13)[0]
    env = TwoRoomsEnv()
    assert np.abs(first.astype(int) - env.draw(*states[0]).astype(int)).mean() < 3  # frame 0 is state 0

    # same seed, another folder: the same arrays
    collect_episodes("two_rooms", tmp_path / "b", episodes=3, steps=12, seed=5, policy_mix=0.5)
    for i in range(3):
        for name in ("actions.npy", "states.npy"):
            a, b = out / f"ep_{i:05d}" / name, tmp_path / "b" / f"ep_{i:05d}" / name
            assert a.read_bytes() == b.read_bytes()
    other = collect_episodes("two_rooms", tmp_path / "c", episodes=1, steps=12, seed=6)
    assert other["written"] == 1
    assert (tmp_path / "c/ep_00000/states.npy").read_bytes() != (out / "ep_00000/states.npy").read_bytes()

    # resume: a second call writes nothing; a killed run's temporary folder is cleared, more episodes added
    mtime = os.stat(ep / "video.mp4").st_mtime_ns
    again = collect_episodes("two_rooms", out, episodes=3, steps=12, seed=5, policy_mix=0.5)
    assert again["written"] == 0 and again["skipped"] == 3 and os.stat(ep / "video.mp4").st_mtime_ns == mtime
    assert {k: v for k, v in again.items() if k not in ("written", "skipped")} == \
        {k: v for k, v in summary.items() if k not in ("written", "skipped")}
    (out / ".ep_00003.tmp").mkdir()
    (out / ".ep_00003.tmp" / "video.mp4").write_bytes(b"half")
    more = collect_episodes("two_rooms", out, episodes=4, steps=12, seed=5, policy_mix=0.5)
    assert more["written"] == 1 and more["skipped"] == 3 and not (out / ".ep_00003.tmp").exists()
    assert (out / "ep_00003" / "states.npy").read_bytes() == _single_episode(tmp_path, 3)
    # other settings in the same folder are refused, in one line
    with pytest.raises(ValueError) as err:
        collect_episodes("two_rooms", out, episodes=4, steps=12, seed=9)
    assert "seed" in str(err.value) and "\n" not in str(err.value)


def _single_episode(tmp_path, i) -> bytes:
    """Episode i does not depend on the others: written alone, it has the same bytes."""
    from vjepa_pipeline.planning.collect import collect_episodes

    collect_episodes("two_rooms", tmp_path / "single", episodes=i + 1, steps=12, seed=5, policy_mix=0.5)
    return (tmp_path / "single" / f"ep_{i:05d}" / "states.npy").read_bytes()


def test_noisy_goal_policy_crosses_the_door_and_pushes():
    from vjepa_pipeline.envs.two_rooms import TwoRoomsEnv as Rooms
    from vjepa_pipeline.planning.collect import (
        NoisyGoalPolicy,
        RandomPolicy,
        door_crossings,
        push_steps,
        record_episode,
    )

    def stats(name, policy, stat, n=6, steps=40):
        env = make_env(name, max_steps=steps)
        rngs = [np.random.default_rng(seed) for seed in range(n)]
        return [stat(record_episode(env, policy, steps, seed, rngs[seed])[2]) for seed in range(n)]

    crossings = stats("two_rooms", NoisyGoalPolicy(), door_crossings)
    assert sum(c > 0 for c in crossings) >= 3, crossings
    pushes = stats("push", NoisyGoalPolicy(), push_steps)
    assert sum(p > 0 for p in pushes) >= 4, pushes
    # random episodes wander (correlated moves), they do not jitter in place
    env = Rooms(max_steps=30)
    _, actions, states = record_episode(env, RandomPolicy(), 30, 0, np.random.default_rng(0))
    assert np.linalg.norm(states[-1] - states[0]) > 0.15 or np.abs(np.diff(states, axis=0)).sum() > 1.0
    cos = np.sum(actions[1:] * actions[:-1], axis=1) / (np.linalg.norm(actions[1:], axis=1)
                                                          * np.linalg.norm(actions[:-1], axis=1))
    assert np.mean(cos) > 0.5
