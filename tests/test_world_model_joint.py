"""A world model whose encoder trains with the predictor (``world_model.train_encoder``, the conv encoder):
the terms, the config checks, the checkpoint round trip, reproducibility, and `vjepa demo world-model`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_cli as cli
from helpers import two_rooms_shards
from vjepa_pipeline.config import ConfigError, load_config
from vjepa_pipeline.data.batch import TrajectoryBatch
from vjepa_pipeline.envs.two_rooms import TwoRoomsEnv
from vjepa_pipeline.models.build import build_ac_predictor, build_encoder
from vjepa_pipeline.models.conv_encoder import ConvEncoder
from vjepa_pipeline.objectives.action_conditioned import (ActionConditionedObjective, inverse_dynamics_loss,
                                                          temporal_similarity)

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs/world_model/two_rooms_cpu.yaml"


def small_cfg(*extra: str):
    return load_config(RECIPE, ["data.crop_size=32", "model.conv_channels=8", "model.embed_dim=8",
                                "model.predictor.embed_dim=16", "model.predictor.num_heads=2",
                                "model.predictor.depth=1", *extra])


def two_rooms_batch(b: int = 6, t: int = 5, size: int = 32, seed: int = 0) -> TrajectoryBatch:
    """Random walks of the point agent, rendered."""
    env, rng = TwoRoomsEnv(size=size), np.random.default_rng(seed)
    frames, actions, states = [], [], []
    for _ in range(b):
        obs, info = env.reset(seed=int(rng.integers(1 << 30)))
        f, a, s = [obs["pixels"]], [], [info["state"]]
        for _ in range(t - 1):
            act = rng.uniform(-0.1, 0.1, 2)
            obs, _, _, _, info = env.step(act)
            f.append(obs["pixels"]), a.append(act), s.append(info["state"])
        frames.append(np.stack(f)), actions.append(np.stack(a)), states.append(np.stack(s))
    return TrajectoryBatch(frames=torch.from_numpy(np.stack(frames)),
                           actions=torch.tensor(np.stack(actions), dtype=torch.float32),
                           states=torch.tensor(np.stack(states), dtype=torch.float32))


# ---- the encoder and the terms -------------------------------------------------------------------

def test_conv_encoder_gives_one_latent_per_frame_and_names_bad_input():
    enc = ConvEncoder(embed_dim=8, channels=8, stages=3, img_size=32)
    assert enc(torch.randn(4, 3, 32, 32)).shape == (4, 1, 8)
    frames = torch.randn(4, 3, 32, 32)
    tubelet = frames.unsqueeze(2).repeat(1, 1, 2, 1, 1)  # a frame repeated to fill a tubelet: the same latent
    torch.testing.assert_close(enc(tubelet), enc(frames))
    with pytest.raises(ValueError, match=r"frames must be \(B, 3"):
        enc(torch.randn(4, 3, 64, 64))
    with pytest.raises(ValueError, match="divisible"):
        ConvEncoder(img_size=36, stages=3)
    with pytest.raises(ValueError, match="masks do not apply"):
        enc(frames, masks=[torch.zeros(4, 1, dtype=torch.long)])


def test_temporal_similarity_and_inverse_dynamics_terms_by_hand():
    z = torch.zeros(1, 3, 1, 2)
    z[0, 1, 0] = torch.tensor([3.0, 4.0])  # frame 0 -> 1: distance 5; frame 1 -> 2: distance 5
    assert temporal_similarity(z).item() == pytest.approx(25.0)
    a = torch.tensor([[[1.0, 10.0], [3.0, 30.0]]])
    pred = a + torch.tensor([0.5, 5.0])
    # each dim is scaled by its batch std, so a dim in other units weighs the same
    per_dim = (0.5 / a[..., 0].std()) ** 2
    assert inverse_dynamics_loss(pred, a).item() == pytest.approx(2 * per_dim.item(), rel=1e-5)


def test_the_encoder_trains_with_the_predictor_and_every_term_is_logged():
    cfg = small_cfg("data.num_frames=5", "world_model.rollout_steps=2")
    obj = ActionConditionedObjective.from_config(cfg)
    assert set(obj.trainable_networks()) == {"encoder", "predictor", "inverse_dynamics"}
    assert obj.frozen_networks() == {}
    out = obj.step(two_rooms_batch())
    out.loss.backward()
    assert {"loss_teacher_forcing", "loss_rollout", "loss_vicreg_var", "loss_vicreg_cov", "loss_temporal",
            "loss_inverse_dynamics"} <= set(out.terms)
    for name, net in obj.trainable_networks().items():
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name
    assert out.features is not None and out.features.shape == (6 * 5, 1, 8)


def test_a_frozen_encoder_refuses_the_shaping_terms():
    cfg = small_cfg("world_model.train_encoder=false", "objective.vicreg_variance_weight=0",
                    "objective.vicreg_covariance_weight=0", "world_model.temporal_weight=0",
                    "world_model.inverse_dynamics_weight=0")
    obj = ActionConditionedObjective.from_config(cfg)
    assert set(obj.trainable_networks()) == {"predictor"} and set(obj.frozen_networks()) == {"encoder"}
    enc = build_encoder(cfg.model, 1, cfg.data.crop_size)
    pred = build_ac_predictor(cfg, embed_dim=enc.embed_dim)
    with pytest.raises(ValueError, match="need train_encoder=True"):
        ActionConditionedObjective(enc, pred, temporal_weight=1.0)


@pytest.mark.parametrize("overrides,message", [
    (["objective.kind=vjepa", "model.predictor.kind=masked", "data.source=synthetic"], "model.encoder_kind"),
    (["objective.vicreg_variance_weight=0"], "world_model.train_encoder: an encoder trained with the predictor"),
    (["world_model.train_encoder=false", "objective.vicreg_variance_weight=0",
      "objective.vicreg_covariance_weight=0", "world_model.inverse_dynamics_weight=0"], "world_model.temporal_weight"),
    (["world_model.train_encoder=false", "world_model.temporal_weight=0", "world_model.inverse_dynamics_weight=0"],
     "objective.vicreg_variance_weight"),
    (["data.crop_size=60"], "data.crop_size"),
    (["model.encoder_kind=mlp"], "model.encoder_kind"),
])
def test_config_mistakes_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(RECIPE, overrides)


# ---- through the pipeline: shards -> trainer -> checkpoint -> planner ------------------------------

@pytest.fixture(scope="module")
def joint_runs(tmp_path_factory):
    from vjepa_pipeline.train.pretrain import pretrain

    root = tmp_path_factory.mktemp("joint")
    two_rooms_shards(root, episodes=4, steps=10)
    runs = []
    for name in ("a", "b"):
        cfg = load_config(RECIPE, [
            f"name={name}", f"data.path={root / 'shards'}", f"train.run_dir={root}", "train.max_steps=4",
            "optim.warmup_steps=1", "optim.cooldown_steps=1", "data.num_workers=0", "data.allow_shared_shards=true",
            "data.batch_size=4", "data.num_frames=4", "world_model.rollout_steps=2", "model.conv_channels=8",
            "model.predictor.embed_dim=16", "model.predictor.num_heads=2", "model.predictor.depth=1",
            "train.checkpoint_every_steps=4", "data.shuffle_buffer=4", "data.batches_per_epoch=4"])
        pretrain(cfg, progress=False)
        runs.append(root / name)
    return runs


def test_the_run_loads_as_a_world_model_and_plans(joint_runs, tmp_path):
    from vjepa_pipeline.checkpoint.ac_checkpoint import load_world_model
    from vjepa_pipeline.planning import CEMConfig, LatentWorldModel
    from vjepa_pipeline.planning.mpc import run_episode

    loaded = load_world_model(joint_runs[0])
    assert isinstance(loaded.encoder, ConvEncoder) and loaded.predictor.patches_per_frame == 1
    model = LatentWorldModel.from_loaded(loaded)
    env = TwoRoomsEnv()
    obs, _ = env.reset(seed=0)
    assert model.encode(obs["pixels"]).shape == (1, 1, 32)
    cfg = CEMConfig(horizon=3, samples=8, top_k=2, iterations=1, action_low=-0.1, action_high=0.1, distance="l2",
                    intermediate=True)
    ep = run_episode(env, model, cfg=cfg, max_steps=2, options={"start": (0.2, 0.2), "goal": (0.8, 0.2)})
    assert ep.steps == 2 and len(ep.energies) == 2 and all(np.isfinite(ep.energies))
    metrics = [json.loads(x) for x in (joint_runs[0] / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_temporal" in r and "loss_inverse_dynamics" in r for r in metrics)


def test_same_seed_same_weights(joint_runs):
    from vjepa_pipeline.checkpoint.ac_checkpoint import read_ac_run

    a, b = (read_ac_run(r) for r in joint_runs)
    assert a.step == b.step == 4
    for sd_a, sd_b in ((a.encoder_sd, b.encoder_sd), (a.predictor_sd, b.predictor_sd)):
        assert sd_a.keys() == sd_b.keys()
        for k in sd_a:
            assert torch.equal(sd_a[k], sd_b[k]), k


def test_export_native_round_trips_and_official_is_refused(joint_runs, tmp_path):
    from vjepa_pipeline.checkpoint.ac_checkpoint import export_ac_run, load_world_model

    export_ac_run(joint_runs[0], tmp_path / "wm.pt", "native")
    run, native = load_world_model(joint_runs[0]), load_world_model(tmp_path / "wm.pt")
    x = torch.randn(2, 3, 1, 32, 32)
    torch.testing.assert_close(run.encoder(x), native.encoder(x))
    with pytest.raises(ValueError, match="use --format native"):
        export_ac_run(joint_runs[0], tmp_path / "official.pt", "official")


# ---- the demo ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_demo_world_model_quick_writes_the_report_and_plans_better_than_random(tmp_path):
    code, out, err = cli("demo", "world-model", "--quick", "--out", str(tmp_path / "demo"))
    assert code == 0, err
    summary = json.loads((tmp_path / "demo/report/summary.json").read_text())
    task = summary["tasks"]["two_rooms"]
    assert set(task) == {"world_model", "world_model_random_encoder", "random", "greedy"}
    for s in task.values():
        assert s["episodes"] == 6
        assert {"success_rate", "mean_final_distance", "seconds_per_action", "success_95ci"} <= s.keys()
    assert task["greedy"]["success_rate"] == 0.0  # the pairs are those the wall defeats it on
    # beats the random policy: ends far closer to the goal (0.19 vs 0.48 on the dev machine, 2 of 6 pairs
    # reached vs 0); success on 6 pairs after 400 steps is too coarse to demand more than "not worse"
    assert task["world_model"]["success_rate"] >= task["random"]["success_rate"]
    assert task["world_model"]["mean_final_distance"] < 0.75 * task["random"]["mean_final_distance"]
    g = summary["guided_fraction"]
    assert g["world_model"] > g["world_model_random_encoder"]
    for name in ("summary.md", "plots/paths.png", "plots/energy_landscape.png",
                 "prediction/world_model/report.md"):
        assert (tmp_path / "demo/report" / name).is_file(), name
    for stage in range(1, 6):
        assert f"[{stage}/5]" in out


def test_demo_world_model_refuses_bad_sizes_in_one_line(tmp_path):
    code, _, err = cli("demo", "world-model", "--pairs", "0", "--out", str(tmp_path / "d"))
    assert code == 2 and "--pairs: must be >= 1" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()
