"""`vjepa data collect` -> shards -> a tiny world model -> `vjepa plan`: the command runs the fixed pairs
for every method, writes comparable summaries, and refuses a world model that does not fit the
environment in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_cli as cli
from helpers import two_rooms_shards
from vjepa_pipeline.config import load_config
from vjepa_pipeline.planning.benchmark import pair_options, wilson_interval
from vjepa_pipeline.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_rooms_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    two_rooms_shards(root, episodes=4, steps=12)
    cfg = load_config(ROOT / "configs/world_model/moving_square_cpu.yaml", [
        "name=wm", f"data.path={root / 'shards'}", f"train.run_dir={root}", "train.max_steps=2",
        "optim.warmup_steps=1", "optim.cooldown_steps=1", "data.num_workers=0", "data.allow_shared_shards=true",
        "data.batch_size=2", "model.patch_size=16"])
    pretrain(cfg, progress=False)
    return root


def test_plan_runs_every_method_and_writes_the_summary(two_rooms_run, tmp_path):
    code, out, err = cli("plan", "--world-model", str(two_rooms_run / "wm"), "--env", "two_rooms", "--episodes", "2",
                         "--max-steps", "3", "--horizon", "2", "--samples", "16", "--top-k", "4", "--iterations", "2",
                         "--intermediate", "--out", str(tmp_path / "report"))
    assert code == 0, err
    summary = json.loads((tmp_path / "report/summary.json").read_text())
    task = summary["tasks"]["two_rooms"]
    assert summary["planner_config"]["intermediate"] is True and summary["planner_config"]["horizon"] == 2
    assert set(task) == {"world_model", "random", "greedy"}
    for method, s in task.items():
        assert s["episodes"] == 2 and 0.0 <= s["success_rate"] <= 1.0
        assert {"mean_final_distance", "seconds_per_action", "success_95ci"} <= s.keys()
    assert task["world_model"]["seconds_per_action"] > 0 and task["greedy"]["seconds_per_action"] == 0
    rows = [json.loads(x) for x in (tmp_path / "report/episodes.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["method"] for r in rows} == set(task)
    assert "world_model" in out and "summary:" in out
    for picture in ("paths.png", "energy_landscape.png"):  # the report's pictures
        assert (tmp_path / "report/plots" / picture).read_bytes()[:4] == b"\x89PNG"


def test_greedy_fails_at_the_wall_on_the_fixed_pairs(tmp_path):
    code, _, err = cli("plan", "--world-model", "unused", "--env", "two_rooms", "--episodes", "6", "--methods",
                       "greedy", "--out", str(tmp_path / "r"))
    assert code == 0, err
    s = json.loads((tmp_path / "r/summary.json").read_text())["tasks"]["two_rooms"]["greedy"]
    assert s["success_rate"] == 0.0  # the pairs are the ones a straight line cannot solve
    assert (tmp_path / "r/plots/paths.png").exists() and not (tmp_path / "r/plots/energy_landscape.png").exists()
    assert len(pair_options("two_rooms", 6)) == 6 and pair_options("two_rooms", 3) == pair_options("two_rooms", 3)


def test_a_world_model_that_does_not_fit_the_environment_is_one_line(two_rooms_run, tmp_path):
    code, _, err = cli("plan", "--world-model", str(two_rooms_run / "wm"), "--env", "push", "--episodes", "1",
                       "--methods", "world_model", "--out", str(tmp_path / "r"))
    assert code == 2 and "state" in err and err.count("\n") == 1, err
    code, _, err = cli("plan", "--world-model", str(two_rooms_run / "wm"), "--env", "two_rooms", "--episodes", "1",
                       "--methods", "world_model", "--model", "data.crop_size=32", "--out", str(tmp_path / "r2"))
    assert code == 2 and "model.*" in err and err.count("\n") == 1, err


def test_wilson_interval():
    lo, hi = wilson_interval(45, 50)
    assert 0.78 < lo < 0.80 and 0.95 < hi < 0.97
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
