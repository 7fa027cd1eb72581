"""`vjepa launch` against a real SLURM (the local cluster of slurm/local_cluster.sh): 2-node DDP
pretraining, preemption -> checkpoint -> self-requeue -> resume with the same loss curve, a shard
job array equal to a local build, an eval job array, and the plain sbatch template."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from waiting import wait_until

from vjepa_pipeline.utils.jsonl import read_jsonl

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "configs/pretrain/debug.yaml"
STEPS = 200
# The debug recipe on 2 nodes x 1 CPU task (gloo); every step logged so curves can be compared.
PRETRAIN = ["--config", str(DEBUG), "--cluster", "local", "--nodes", "2", "train.num_nodes=2", "train.strategy=ddp",
            f"train.max_steps={STEPS}", "train.checkpoint_every_steps=50", "logging.log_every_steps=1"]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def vjepa(*args, timeout: float = 240, cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "vjepa_pipeline", *map(str, args)], env=env(), cwd=cwd or ROOT,
                          check=False, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def metrics(run_dir: Path) -> list[dict]:
    return read_jsonl(run_dir / "metrics.jsonl")


def queued(job_id: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job_id], check=False, capture_output=True, text=True, timeout=30)
    return bool(out.stdout.strip())


def logs(run_dir: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted((run_dir / "logs").glob("*_log.*")))


@pytest.fixture(scope="module")
def straight_run(slurm_cluster, tmp_path_factory) -> Path:
    """The uninterrupted 2-node run, submitted with `vjepa launch pretrain ... --wait`."""
    root = tmp_path_factory.mktemp("launch_straight")
    vjepa("launch", "pretrain", *PRETRAIN, "--partition", slurm_cluster.partition, f"train.run_dir={root}",
          "--wait")
    return root / "debug"


def test_two_node_ddp_pretraining_through_vjepa_launch(straight_run):
    run = straight_run
    assert [r["step"] for r in metrics(run)] == list(range(1, STEPS + 1))  # one merged stream, rank 0
    assert (run / "last").read_text().strip() == f"step_{STEPS:010d}"
    ckpt = run / f"checkpoints/step_{STEPS:010d}/data_state"
    assert sorted(p.name for p in ckpt.iterdir()) == ["rank_0.json", "rank_1.json"]
    jobs = read_jsonl(run / "launch/jobs.jsonl")
    assert len(jobs) == 1 and jobs[0]["num_nodes"] == 2 and jobs[0]["ntasks"] == 2
    sub = read_jsonl(run / "launch/submissions.jsonl")
    assert sub[0]["job_id"] == jobs[0]["job_id"] and sub[0]["cluster"] == "local"
    script = (run / "launch/sbatch.sh").read_text()
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=1" in script and "\nsrun " in script
    assert json.loads((run / "launch/code.json").read_text())
    assert (run / "config.yaml").exists()
    # Two (fake) nodes, one rank each, joined in one gloo process group.
    for rank in (0, 1):
        out = (run / "logs" / f"{jobs[0]['job_id']}_{rank}_log.out").read_text()
        assert f"node={rank}(2), global_rank={rank}(2)" in out
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in (run / "logs" / f"{jobs[0]['job_id']}_0_log.err").read_text()


def test_preemption_and_requeue_resume_with_the_same_curve(straight_run, slurm_cluster, tmp_path):
    t0 = time.monotonic()
    vjepa("launch", "pretrain", *PRETRAIN, "--partition", slurm_cluster.partition, f"train.run_dir={tmp_path}",
          "logging.wandb_mode=offline")
    run = tmp_path / "debug"
    job = read_jsonl(run / "launch/submissions.jsonl")[0]["job_id"]
    wait_until(lambda: len(metrics(run)) >= 30, 120, f"step 30 of job {job}\n{logs(run)}")
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    signalled = time.time()
    requeue = wait_until(lambda: read_jsonl(run / "launch/requeues.jsonl"), 60, f"the requeue\n{logs(run)}")[0]
    wait_until(lambda: len(read_jsonl(run / "launch/jobs.jsonl")) >= 2, 120, f"the restart\n{logs(run)}")
    # Then a requeue from outside (scontrol requeue: SIGTERM, SIGKILL after KillWait): the job saves a
    # checkpoint at the step the ranks agree on when the grace allows it (else it resumes from the
    # last periodic checkpoint, and the metrics past it are rewritten).
    wait_until(lambda: len(metrics(run)) >= 110, 120, f"step 110 of job {job}\n{logs(run)}")
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
    wait_until(lambda: len(read_jsonl(run / "launch/jobs.jsonl")) >= 3, 120, f"the 2nd restart\n{logs(run)}")
    wait_until(lambda: not queued(job), 180, f"job {job} to finish\n{logs(run)}")
    jobs = read_jsonl(run / "launch/jobs.jsonl")
    stop = requeue["step"]
    assert 30 <= stop < STEPS, f"preempted at step {stop}: too late to test a resume"
    assert [j["job_id"] for j in jobs] == [job] * 3 and [j["restart_count"] for j in jobs] == [0, 1, 2]
    assert jobs[1]["resumed_from"].endswith(f"step_{stop:010d}")  # the preemption checkpoint, not a periodic one
    periodic = int(jobs[2]["resumed_from"].rsplit("_", 1)[1])
    assert 100 <= periodic < STEPS, jobs[2]  # the SIGTERM checkpoint (>= 110) or the periodic one at 100
    assert len(read_jsonl(run / "launch/requeues.jsonl")) == 1  # only the USR2 requeue was the job's own
    assert (run / "last").read_text().strip() == f"step_{STEPS:010d}"
    a, b = metrics(straight_run), metrics(run)
    assert [r["step"] for r in b] == list(range(1, STEPS + 1))  # no step lost or repeated
    wandb_id = (run / "wandb_id").read_text().strip()  # both segments log into the same wandb run
    segments = sorted((run / "wandb").glob("offline-run-*"))
    assert len(segments) == 3 and all(p.name.endswith(wandb_id) for p in segments), segments
    diff = max(abs(ra["loss"] - rb["loss"]) for ra, rb in zip(a, b))
    assert diff < 1e-4, diff
    print(f"\npreempted at step {stop}; signal -> requeue {requeue['unix_time'] - signalled:.1f}s, requeue -> "
          f"resumed job start {jobs[1]['unix_time'] - requeue['unix_time']:.1f}s; hard requeue resumed from step "
          f"{periodic}; max |loss diff| {diff:.2e}; total {time.monotonic() - t0:.0f}s")


def test_shard_job_array_builds_the_same_shards_as_a_local_build(slurm_cluster, tmp_path, generated_clips):
    from vjepa_pipeline.config.schema import ShardsConfig
    from vjepa_pipeline.shards.build import ShardBuilder

    local = tmp_path / "local"
    ShardBuilder(generated_clips, local, ShardsConfig(short_side=64, samples_per_shard=2),
                 log=lambda *a: None).run(progress=False)
    array = tmp_path / "array"
    vjepa("launch", "shards", generated_clips, array, "--tasks", "3", "--cluster", "local", "--partition",
          slurm_cluster.partition, "shards.short_side=64", "shards.samples_per_shard=2", "--wait")
    a, b = (json.loads((d / "index.json").read_text()) for d in (local, array))
    assert a == b
    for shard in a["shards"]:
        assert (local / shard["name"]).read_bytes() == (array / shard["name"]).read_bytes()
    subs = read_jsonl(array / "launch/submissions.jsonl")
    assert [s["stage"] for s in subs] == ["shards", "shards-final"] and subs[0]["tasks"] == 3


def test_eval_job_array_one_task_per_dataset(straight_run, slurm_cluster, tmp_path, generated_clips):
    import yaml

    from vjepa_pipeline.config.schema import ShardsConfig
    from vjepa_pipeline.shards.build import ShardBuilder

    shards = tmp_path / "shards"
    ShardBuilder(generated_clips, shards, ShardsConfig(short_side=64, samples_per_shard=2),
                 log=lambda *a: None).run(progress=False)
    probe = {"kind": "knn", "epochs": 1, "batch_size": 4, "holdout_fraction": 0.34, "knn_k": 2}
    datasets = [{"name": name, "train": str(shards), "val": str(shards), "num_frames": 8, "frame_step": 2,
                 "crop_size": 32, "probe": probe} for name in ("toy_a", "toy_b")]
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "tiny", "num_workers": 0, "feature_batch_size": 4,
                                     "datasets": datasets}))
    out = tmp_path / "report"
    vjepa("launch", "eval", "--suite", suite, "--encoder", straight_run, "--out", out, "--cluster", "local",
          "--partition", slurm_cluster.partition, "--wait")
    for name in ("toy_a", "toy_b"):
        results = json.loads((out / name / "results.json").read_text())
        assert list(results["datasets"]) == [name]
    assert read_jsonl(out / "launch/submissions.jsonl")[0]["tasks"] == 2


def test_plain_sbatch_template_one_node_two_tasks(slurm_cluster, tmp_path):
    args = [str(DEBUG), f"train.run_dir={tmp_path}", "train.devices=2", "train.strategy=ddp", "train.max_steps=6",
            "train.checkpoint_every_steps=3", "logging.log_every_steps=1"]
    job = subprocess.run(["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1",
                          f"--partition={slurm_cluster.partition}", "--time=10", f"--output={tmp_path}/batch.out",
                          f"--export=ALL,VJEPA_PYTHON={sys.executable}",
                          str(ROOT / "slurm/templates/pretrain.sbatch"), *args],
                         check=True, env=env(), cwd=ROOT, timeout=60, capture_output=True, text=True).stdout.strip()
    wait_until(lambda: not queued(job), 180, f"job {job}")  # (sbatch --wait polls every ~10 s)
    run = tmp_path / "debug"
    assert [r["step"] for r in metrics(run)] == [1, 2, 3, 4, 5, 6], (tmp_path / "batch.out").read_text()
    jobs = read_jsonl(run / "launch/jobs.jsonl")
    assert jobs[0]["ntasks"] == 2 and jobs[0]["num_nodes"] == 1
    assert "pretrain.sbatch" in (run / "launch" / f"sbatch_{jobs[0]['job_id']}.sh").read_text() or \
        "vjepa_pipeline pretrain" in (run / "launch" / f"sbatch_{jobs[0]['job_id']}.sh").read_text()
    assert (run / "launch/code.json").exists() and (run / "config.yaml").exists()
    assert sorted(p.name for p in (run / "logs").glob("*_log.out")) == [f"{jobs[0]['job_id']}_{t}_log.out"
                                                                       for t in (0, 1)]
