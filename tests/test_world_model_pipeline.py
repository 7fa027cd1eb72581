"""The world model through the real pipeline: trajectory episodes -> `vjepa shards build` -> trajectory
loader -> `vjepa pretrain` with the action-conditioned objective -> offline validation.

Frame / action alignment is checked on videos whose frames encode their own index (brightness
4 x i), so a frame that slips by one shows in the numbers; the DROID test builds a tiny raw DROID
episode (trajectory.h5 + mp4 + metadata) and trains on it, with resume equivalence."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import StopAt
from vjepa_pipeline.config import ConfigError, ShardsConfig, load_config
from vjepa_pipeline.data.trajectory_stream import build_trajectory_stream
from vjepa_pipeline.errors import LoaderError
from vjepa_pipeline.shards.build import ShardBuilder
from vjepa_pipeline.shards.format import iter_shard, read_index, read_npz
from vjepa_pipeline.shards.media import ffmpeg_exe
from vjepa_pipeline.shards.trajectory_writers import write_droid_csv, write_droid_episode, write_episodes
from vjepa_pipeline.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]
LEVEL = 4  # frame i has brightness LEVEL * i


def index_video(path: Path, frames: int, fps: float = 20, vfr: bool = False) -> Path:
    """Frames whose brightness encodes their index; ``vfr``: irregular timestamps (every other frame
    0.4 of a frame late), kept as they are by the muxer."""
    data = np.zeros((frames, 48, 64, 3), np.uint8)
    for i in range(frames):
        data[i] = LEVEL * i
    vf = ["-vf", f"setpts=(N+0.4*mod(N\\,2))/({fps}*TB)", "-fps_mode", "passthrough"] if vfr else []
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x48",
           "-r", str(fps), "-i", "pipe:0", *vf, "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p",
           "-g", "5", str(path)]
    subprocess.run(cmd, input=data.tobytes(), check=True, capture_output=True)
    return path


def index_episode(folder: Path, frames: int, vfr: bool = False, **episode) -> Path:
    """A generic-layout episode: states = (i, -i), actions = (1, i) (actions[t] leads t -> t+1)."""
    folder.mkdir(parents=True)
    index_video(folder / "video.mp4", frames, vfr=vfr)
    i = np.arange(frames, dtype=np.float64)
    np.save(folder / "states.npy", np.stack([i, -i], 1))
    np.save(folder / "actions.npy", np.stack([np.ones(frames - 1), i[:-1]], 1))
    if episode:
        (folder / "episode.json").write_text(json.dumps(episode))
    return folder


def build(source: Path, out: Path, **opts) -> dict:
    ShardBuilder(source, out, ShardsConfig(**{"short_side": None, "crf": 0, **opts}), log=lambda *a: None).run(
        progress=False)
    return read_index(out)[1]


def frame_indices(mp4: bytes, count: int) -> list[int]:
    from vjepa_pipeline.shards.decoders import get_decoder

    frames = get_decoder("decord").decode(mp4, list(range(count)), count)
    return [int(round(float(f.mean()) / LEVEL)) for f in frames]


def samples_of(out: Path) -> list[dict]:
    index = read_index(out)[1]
    return [s for shard in index["shards"] for s in iter_shard(out / shard["name"])]


# ---- shards: alignment through cuts, ranges and irregular timestamps ---------------------------

def test_shards_keep_frames_and_arrays_aligned_through_cuts_and_vfr(tmp_path):
    src = tmp_path / "episodes"
    index_episode(src / "plain", 50)
    index_episode(src / "vfr", 40, vfr=True)
    index_episode(src / "ranged", 50, start_frame=7, end_frame=37)
    index = build(src, tmp_path / "shards", max_clip_seconds=1.0)  # 20 fps: pieces of 20 frames
    assert index["trajectories"]["action_dim"] == [2] and index["trajectories"]["state_dim"] == [2]
    seen = {}
    for s in samples_of(tmp_path / "shards"):
        t = s["json"]["trajectory"]
        a, b = t["source_frames"]
        arrays = read_npz(s["npz"])
        assert s["json"]["num_frames"] == b - a == t["frames"]
        # the decoded frames are exactly source frames a .. b-1 ...
        assert frame_indices(s["mp4"], b - a) == list(range(a, b)), (s["json"]["source"], a, b)
        # ... and so are the states; the actions are those leaving frames a .. b-2
        np.testing.assert_array_equal(arrays["states"][:, 0], np.arange(a, b))
        np.testing.assert_array_equal(arrays["actions"][:, 1], np.arange(a, b - 1))
        seen.setdefault(s["json"]["source"], []).append((a, b))
    assert sorted(seen["plain"]) == [(0, 20), (20, 40), (40, 50)]
    assert sorted(seen["vfr"]) == [(0, 20), (20, 40)]
    assert sorted(seen["ranged"]) == [(7, 27), (27, 37)]


def test_loader_windows_combine_actions_by_the_rule(tmp_path):
    src = tmp_path / "episodes"
    for n in range(4):
        index_episode(src / f"ep{n}", 30 + n)
    build(src, tmp_path / "sum")
    build(src, tmp_path / "mean", action_rule="mean")
    for rule, expect_step in (("sum", 4.0), ("mean", 1.0)):
        cfg = load_config(ROOT / "configs/world_model/moving_square_cpu.yaml", [
            f"data.path={tmp_path / rule}", "data.num_frames=4", "data.target_fps=5", "data.num_workers=0",
            "data.batch_size=4", "data.crop_size=32", "model.patch_size=16", "data.allow_shared_shards=true"])
        stream = build_trajectory_stream(cfg)
        batch = next(iter(stream))
        assert batch.frames.shape == (4, 4, 32, 32, 3) and batch.frames.dtype == torch.uint8
        assert batch.actions.shape == (4, 3, 2) and batch.states.shape == (4, 4, 2)
        for k in range(4):
            idx = batch.states[k, :, 0].long()
            assert torch.equal(idx - idx[0], torch.tensor([0, 4, 8, 12]))  # 20 fps -> 5 fps: every 4th frame
            shown = [int(round(float(f.float().mean()) / LEVEL)) for f in batch.frames[k]]
            assert shown == idx.tolist()  # the frames are the states' frames
            assert torch.all(batch.actions[k, :, 0] == expect_step)  # four unit actions per kept step
            per_frame = torch.stack([torch.arange(i, i + 4).float() for i in idx[:3].tolist()])
            want = per_frame.sum(1) if rule == "sum" else per_frame.mean(1)
            assert torch.equal(batch.actions[k, :, 1], want)


def test_dimension_mismatch_between_data_and_config_is_one_line(tmp_path):
    src = tmp_path / "episodes"
    write_episodes(src, 2, 8, fps=10)
    build(src, tmp_path / "shards")
    cfg = load_config(ROOT / "configs/world_model/moving_square_cpu.yaml",
                      [f"data.path={tmp_path / 'shards'}", "world_model.action_dim=7"])
    with pytest.raises(LoaderError, match=r"2-D actions but world_model.action_dim=7") as err:
        build_trajectory_stream(cfg)
    assert "\n" not in str(err.value)
    video_only = tmp_path / "videos"
    video_only.mkdir()
    index_video(video_only / "a.mp4", 10)
    build(video_only, tmp_path / "video_shards")
    cfg = load_config(ROOT / "configs/world_model/moving_square_cpu.yaml", [f"data.path={tmp_path / 'video_shards'}"])
    with pytest.raises(LoaderError, match="holds video shards, not trajectories"):
        build_trajectory_stream(cfg)


@pytest.mark.parametrize("override,message", [
    ("data.hflip=true", "data.hflip"),
    ("model.predictor.kind=masked", "model.predictor.kind"),
    ("data.source=synthetic", "data.source"),
    ("world_model.rollout_steps=4", "world_model.rollout_steps"),
    ("world_model.action_dim=0", "world_model.action_dim"),
])
def test_world_model_config_mistakes_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(ROOT / "configs/world_model/moving_square_cpu.yaml", [override])


def test_trajectory_sources_refuse_frame_rate_changes(tmp_path):
    src = tmp_path / "episodes"
    write_episodes(src, 1, 8, fps=10)
    from vjepa_pipeline.shards.build import BuildError

    with pytest.raises(BuildError, match="unset shards.fps"):
        build(src, tmp_path / "a", fps=5.0)
    with pytest.raises(BuildError, match="always re-encoded"):
        build(src, tmp_path / "b", reencode=False)


# ---- DROID: shards -> loader -> training, resume equivalence -------------------------------------

@pytest.fixture(scope="module")
def droid_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("droid")
    folders = [write_droid_episode(root / "raw" / f"episode_{i}", frames=40, fps=15, seed=i) for i in range(4)]
    csv = write_droid_csv(root / "droid_train_paths.csv", folders)
    index = build(Path(csv), root / "shards", samples_per_shard=1, short_side=None)
    return root / "shards", index


def droid_cfg(shards: Path, run_dir: Path, *extra):
    return load_config(ROOT / "configs/world_model/droid_vitg16.yaml", [
        f"data.path={shards}", f"train.run_dir={run_dir}", "world_model.encoder=null",
        "model.size=tiny", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
        "model.predictor.embed_dim=32", "model.predictor.depth=2", "model.predictor.num_heads=2",
        "model.activation_checkpointing=false", "data.crop_size=32", "data.batch_size=2", "data.num_workers=2",
        "data.batches_per_epoch=3", "data.shuffle_buffer=4", "train.devices=1", "train.num_nodes=1",
        "train.strategy=auto", "train.precision=32", "train.accelerator=cpu", "train.max_steps=6",
        "train.checkpoint_every_steps=3", "optim.warmup_steps=2", "optim.cooldown_steps=2",
        "logging.log_every_steps=1", "logging.wandb_mode=disabled", *extra])


def test_droid_episode_builds_with_pose_delta_actions(droid_shards):
    shards, index = droid_shards
    t = index["trajectories"]
    assert t["layout"] == ["droid"] and t["action_rule"] == ["pose_delta"]
    assert t["action_dim"] == [7] and t["state_dim"] == [7] and t["extrinsics_dim"] == [6]
    cfg = droid_cfg(shards, shards.parent / "runs", "data.num_workers=0", "data.allow_shared_shards=true")
    batch = next(iter(build_trajectory_stream(cfg)))
    assert batch.frames.shape == (2, 8, 32, 32, 3)
    assert batch.actions.shape == (2, 7, 7) and batch.states.shape == (2, 8, 7)
    from vjepa_pipeline.shards.actions import pose_deltas

    for k in range(2):  # the official poses_to_diffs of the window's states
        want = pose_deltas(batch.states[k].double().numpy())
        np.testing.assert_allclose(batch.actions[k].double().numpy(), want, rtol=1e-5, atol=1e-6)


def test_droid_training_resumes_exactly(droid_shards, tmp_path):
    shards, _ = droid_shards
    straight = droid_cfg(shards, tmp_path / "a")
    pretrain(straight, progress=False)
    split = droid_cfg(shards, tmp_path / "b")
    pretrain(split, extra_callbacks=[StopAt(3)], progress=False)
    summary = pretrain(split, progress=False)
    assert summary["resumed_from"].endswith("step_0000000003")
    rows = {}
    for name in ("a", "b"):
        rows[name] = [json.loads(x) for x in (tmp_path / name / "droid_vitg16/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows["b"]] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(rows["a"], rows["b"]):
        for key in ("loss", "loss_teacher_forcing", "loss_rollout", "lr"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-7), key
    ca = torch.load(tmp_path / "a/droid_vitg16/checkpoints/step_0000000006/model.ckpt", weights_only=True)
    cb = torch.load(tmp_path / "b/droid_vitg16/checkpoints/step_0000000006/model.ckpt", weights_only=True)
    for k, v in ca["state_dict"].items():
        torch.testing.assert_close(cb["state_dict"][k], v, rtol=1e-5, atol=1e-6)
    for k, v in ca["encoder"].items():  # the frozen encoder is stored and never moves
        assert torch.equal(cb["encoder"][k], v)
    assert all(k.startswith("predictor.") for k in ca["state_dict"])


# ---- the frozen encoder from another run --------------------------------------------------------

def test_encoder_from_a_vjepa_run_must_match_model_section(tmp_path):
    from vjepa_pipeline.eval.encoders import load_encoder
    from vjepa_pipeline.train.world_model import build_training_objective

    run_cfg = load_config(ROOT / "configs/pretrain/debug.yaml", [f"train.run_dir={tmp_path}", "train.max_steps=2"])
    pretrain(run_cfg, progress=False)
    src = tmp_path / "episodes"
    write_episodes(src, 2, 8, fps=10)
    build(src, tmp_path / "shards")
    same = ["model.embed_dim=64", "model.depth=2", "model.num_heads=4", "model.patch_size=8", "data.crop_size=32"]
    cfg = load_config(ROOT / "configs/world_model/moving_square_cpu.yaml", [
        f"data.path={tmp_path / 'shards'}", f"world_model.encoder={tmp_path / 'debug'}", *same])
    objective = build_training_objective(cfg)
    target = load_encoder(tmp_path / "debug").encoder.state_dict()
    for k, v in objective.encoder.state_dict().items():
        assert torch.equal(v, target[k])
    assert not any(p.requires_grad for p in objective.encoder.parameters())
    wrong = load_config(ROOT / "configs/world_model/moving_square_cpu.yaml", [
        f"data.path={tmp_path / 'shards'}", f"world_model.encoder={tmp_path / 'debug'}", *same, "model.depth=3"])
    with pytest.raises(ConfigError, match="model.\\* does not describe the encoder") as err:
        build_training_objective(wrong)
    assert "\n" not in str(err.value).strip()


# ---- the CPU recipe end to end: the predictor must use its actions -------------------------------

def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    import sys

    return subprocess.run([sys.executable, "-m", "vjepa_pipeline", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
def test_cpu_recipe_end_to_end_beats_both_baselines(tmp_path):
    """generate -> shards -> pretrain -> eval world-model, as the recipe header says; the trained
    predictor must be clearly below both baselines. The same predictor with its action input cut
    scores the same with shuffled and true actions: the check a blind model fails."""
    steps = [("data", "generate-trajectories", "--out", "data", "--episodes", "128", "--val-episodes", "24"),
             ("shards", "build", "data/train", "shards/moving_square/train", "--samples-per-shard", "16",
              "--workers", "2"),
             ("shards", "build", "data/val", "shards/moving_square/val", "--samples-per-shard", "8")]
    for args in steps:
        r = run_cli(*args, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli("pretrain", "--config", str(ROOT / "configs/world_model/moving_square_cpu.yaml"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli("eval", "world-model", "runs/moving_square_cpu", "--data", "shards/moving_square/val",
                "--horizons", "1", "2", "--out", "report", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "report/results.json").read_text())
    e = res["errors"]
    assert res["trajectories"] == 96 and res["beats_baselines"] == {"1": True, "2": True}
    for k in ("1", "2"):
        assert e["true_actions"][k] < 0.85 * e["last_frame"][k]
        assert e["true_actions"][k] < 0.85 * e["shuffled_actions"][k]
    assert (tmp_path / "report/plots/world_model_errors.png").stat().st_size > 5000
    assert "| 1 |" in (tmp_path / "report/report.md").read_text()
    metrics = [json.loads(x) for x in (tmp_path / "runs/moving_square_cpu/metrics.jsonl").read_text().splitlines()]
    assert {"loss_teacher_forcing", "loss_rollout"} <= metrics[-1].keys()

    # the same trained predictor made blind to its actions: the validation must say it is useless
    from vjepa_pipeline.checkpoint.ac_checkpoint import load_world_model
    from vjepa_pipeline.data.trajectory_eval import trajectory_windows
    from vjepa_pipeline.eval.world_model import latent_prediction_errors

    wm = load_world_model(tmp_path / "runs/moving_square_cpu")
    with torch.no_grad():
        wm.predictor.action_encoder.weight.zero_()
    windows = trajectory_windows(str(tmp_path / "shards/moving_square/val"), 3, 64, 32, crop_ratio=(1.0, 1.0))
    blind = latent_prediction_errors(wm.encoder, wm.predictor, windows, (1, 2))
    for k in (1, 2):
        assert blind["true_actions"][k] == pytest.approx(blind["shuffled_actions"][k], rel=1e-6)
        assert blind["true_actions"][k] > e["true_actions"][str(k)] * 1.1  # worse than the real model


def test_inspect_checks_trajectory_arrays(tmp_path):
    from vjepa_pipeline.shards.inspect import inspect_shards
    from vjepa_pipeline.shards.tario import ShardSample, write_shard
    from vjepa_pipeline.shards.format import npz_bytes

    src = tmp_path / "episodes"
    write_episodes(src, 2, 8, fps=10)
    out = tmp_path / "shards"
    build(src, out, samples_per_shard=2)
    assert inspect_shards(out, decode=False, sheet_path=tmp_path / "sheet.png").problems == []
    (shard,) = read_index(out)[1]["shards"]
    samples = list(iter_shard(out / shard["name"]))
    work = tmp_path / "work"
    work.mkdir()
    rewritten = []
    for i, s in enumerate(samples):
        arrays = read_npz(s["npz"])
        if i == 0:
            arrays["states"] = arrays["states"][:-1]  # one state row short
        else:
            arrays["actions"][0, 0] = np.nan
        (work / f"{i}.mp4").write_bytes(s["mp4"])
        (work / f"{i}.npz").write_bytes(npz_bytes(arrays))
        rewritten.append(ShardSample(s["key"], str(work / f"{i}.mp4"), s["json"], None, str(work / f"{i}.npz")))
    write_shard(out / shard["name"], rewritten)
    report = inspect_shards(out, decode=False, sheet_path=tmp_path / "sheet.png")
    text = " | ".join(report.problems)
    assert "7 states rows for 8 frames" in text and "actions holds non-finite values" in text


def test_eval_world_model_refuses_bad_data_in_one_line(droid_shards, tmp_path):
    from vjepa_pipeline.cli.main import main

    shards, _ = droid_shards
    pretrain(droid_cfg(shards, tmp_path, "train.max_steps=2", "optim.warmup_steps=1", "optim.cooldown_steps=1"),
             progress=False)
    run = tmp_path / "droid_vitg16"
    ok = main(["eval", "world-model", str(run), "--data", str(shards), "--out", str(tmp_path / "r"),
               "--batch-size", "2", "--horizons", "1", "3"])
    # 40 frames at 15 fps, 4 fps windows of 4 frames span 13 frames: 3 windows per episode
    assert ok == 0 and json.loads((tmp_path / "r/results.json").read_text())["trajectories"] == 12
    other = tmp_path / "square"
    write_episodes(other, 2, 8, fps=10)
    build(other, tmp_path / "square_shards")
    cases = [([str(tmp_path / "square_shards")], "2-D actions but world_model.action_dim=7"),
             ([str(shards), "--horizons", "60"], "0 windows of 61 frames from 0 samples")]
    for args, message in cases:
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["eval", "world-model", str(run), "--data", *args[:1], "--out", str(tmp_path / "x"),
                         *args[1:]])
        assert code == 1 and message in err.getvalue() and err.getvalue().count("\n") == 1, err.getvalue()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):  # data that cannot be read at all: a usage error, before any work
        code = main(["eval", "world-model", str(run), "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "y")])
    assert code == 2 and "--data" in err.getvalue() and err.getvalue().count("\n") == 1, err.getvalue()


def test_extrinsics_width_is_checked_before_training(droid_shards, tmp_path):
    shards, _ = droid_shards
    good = droid_cfg(shards, tmp_path, "world_model.use_extrinsics=true", "data.num_workers=0",
                     "data.allow_shared_shards=true")
    batch = next(iter(build_trajectory_stream(good)))
    assert batch.extrinsics.shape == (2, 8, 6)
    bad = droid_cfg(shards, tmp_path, "world_model.use_extrinsics=true", "world_model.extrinsics_dim=5")
    with pytest.raises(LoaderError, match="holds 6-D camera extrinsics but the predictor takes 5-D"):
        build_trajectory_stream(bad)
