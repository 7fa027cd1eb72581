"""`vjepa launch` without SLURM: resource validation, profiles, dry-run scripts, run-dir records,
and the preemption path (signal -> flag -> agreed step -> checkpoint -> stop -> resume)."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import lightning as L
import pytest

from vjepa_pipeline.cli.main import main
from vjepa_pipeline.config import ConfigError, load_config
from vjepa_pipeline.launch import profiles, rundir
from vjepa_pipeline.launch.resources import allocation, check_pretrain, parse_time
from vjepa_pipeline.launch.submit import plan_pretrain, resolve
from vjepa_pipeline.train import slurm_job
from vjepa_pipeline.train.preemption import PreemptionFlag
from vjepa_pipeline.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "configs/pretrain/debug.yaml"
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_NTASKS", "SLURM_PROCID",
              "SLURM_JOB_NAME", "SLURM_RESTART_COUNT", "SLURM_JOB_NODELIST", "SLURM_NODELIST", "MASTER_ADDR")


@pytest.fixture(autouse=True)
def no_slurm_env(monkeypatch):
    """These tests run outside SLURM even when pytest itself runs inside a job."""
    for var in SLURM_VARS:
        monkeypatch.delenv(var, raising=False)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- resources


@pytest.mark.parametrize("text,minutes", [("90", 90), ("1:30:00", 90), ("2-00:00:00", 2880), ("1-12", 2160),
                                          ("45:30", 46), ("0-01:00", 60), ("3-00:00:00", 4320)])
def test_parse_time(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("bad", ["1h", "", "1:2:3:4", "0", "a-1"])
def test_parse_time_rejects(bad):
    with pytest.raises(ConfigError, match="--time"):
        parse_time(bad)


def test_allocation_must_match_lightning():
    cfg = load_config(ROOT / "configs/pretrain/vjepa_vitl16.yaml")
    alloc = check_pretrain(cfg)
    assert (alloc.nodes, alloc.tasks_per_node, alloc.gpus_per_node, alloc.world_size) == (16, 8, 8, 128)
    bad = load_config(ROOT / "configs/pretrain/vjepa_vitl16.yaml", ["launch.nodes=4", "launch.gpus_per_node=4"])
    with pytest.raises(ConfigError) as err:
        check_pretrain(bad)
    text = str(err.value)
    assert "train.devices=8 but the job runs 4 task(s) per node" in text and "train.devices=4" in text
    assert "train.num_nodes=16 but --nodes 4" in text and "train.num_nodes=4" in text
    assert "global batch 3072 with the config, 384 with this allocation" in text


@pytest.mark.parametrize("overrides,match", [
    (["launch.gpus_per_node=8", "launch.tasks_per_node=4", "train.devices=4"], "one task per GPU"),
    (["launch.gpus_per_node=0", "train.accelerator=gpu"], "asks for no GPUs"),
    (["launch.gpus_per_node=2", "train.devices=2", "train.accelerator=cpu"], "use --cpu"),
    (["launch.gpus_per_node=0", "train.strategy=deepspeed_stage_2"], "needs GPUs"),
    (["launch.mem_per_gpu=lots"], "not a SLURM memory size"),
    (["launch.gpus_per_node=0", "launch.mem_per_gpu=8G"], "use launch.mem"),
])
def test_resource_problems_are_caught_before_submission(overrides, match):
    with pytest.raises(ConfigError, match=match):
        check_pretrain(load_config(DEBUG, overrides))


def test_cpu_jobs_run_tasks_per_node_processes():
    cfg = load_config(DEBUG, ["launch.gpus_per_node=0", "launch.tasks_per_node=2", "train.devices=2",
                              "launch.nodes=2", "train.num_nodes=2"])
    alloc = check_pretrain(cfg)
    assert alloc.cpu and alloc.world_size == 4
    assert allocation(load_config(DEBUG, ["launch.gpus_per_node=0"]).launch).tasks_per_node == 1


def test_launch_signal_is_validated():
    with pytest.raises(ConfigError, match="launch.signal"):
        load_config(DEBUG, ["launch.signal=TERM"])


# ----------------------------------------------------------------------------- profiles


def test_profiles_fill_defaults_but_the_recipe_wins(tmp_path):
    assert {"local", "example"} <= set(profiles.available_profiles())
    cfg = resolve(ROOT / "configs/pretrain/vjepa_vitl16.yaml", [], "example", [])
    assert (cfg.launch.partition, cfg.launch.account, cfg.launch.cluster) == ("gpu", "my-team", "example")
    assert "module load cuda/12.4 nccl" in cfg.launch.setup
    assert cfg.launch.time_min == 4320 and cfg.launch.nodes == 16  # the recipe's job shape
    local = resolve(DEBUG, [], "local", ["launch.nodes=3"])
    assert (local.launch.partition, local.launch.gpus_per_node, local.launch.nodes) == ("debug", 0, 3)


def test_profile_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="did you mean 'local'"):
        profiles.load_profile("locl")
    bad = tmp_path / "site.yaml"
    bad.write_text("partiton: gpu\n")
    with pytest.raises(ConfigError, match="did you mean 'partition'"):
        profiles.load_profile(str(bad))
    ok = tmp_path / "mysite.yaml"
    ok.write_text("launch:\n  partition: a100\n  setup: ['module load x']\n")
    monkeypatch.setenv("VJEPA_SLURM_PROFILES", str(tmp_path))
    assert profiles.load_profile("mysite")["partition"] == "a100"


# ----------------------------------------------------------------------------- dry run


@pytest.mark.parametrize("recipe", ["vjepa_vitl16.yaml", "vjepa2_vitl16.yaml"])
def test_dry_run_16_nodes_x_8_gpus_matches_lightning(tmp_path, capsys, recipe):
    rc = main(["launch", "pretrain", "--config", str(ROOT / "configs/pretrain" / recipe), "--cluster", "example",
               "--dry-run", f"train.run_dir={tmp_path}"])
    out = capsys.readouterr().out
    assert rc == 0
    script = out.split("----- sbatch script -----")[1].split("----- resolved config -----")[0]
    for line in ("#SBATCH --nodes=16", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --partition=gpu", "#SBATCH --account=my-team", "#SBATCH --requeue",
                 "#SBATCH --cpus-per-task=16", "module load cuda/12.4 nccl"):
        assert line in script.splitlines(), line
    assert any(ln.startswith("#SBATCH --signal=USR2@") for ln in script.splitlines())
    srun = [ln for ln in script.splitlines() if ln.startswith("srun ")]
    assert len(srun) == 1 and "submitit.core._submit" in srun[0]
    assert "--ntasks" not in srun[0] and "--gpus-per-task" not in script  # one task per GPU from sbatch
    resolved = out.split("----- resolved config -----")[1]
    import yaml

    cfg = yaml.safe_load(resolved)
    assert (cfg["train"]["num_nodes"], cfg["train"]["devices"]) == (16, 8)
    assert (cfg["launch"]["nodes"], cfg["launch"]["gpus_per_node"]) == (16, 8)
    assert "Lightning: num_nodes=16 devices=8" in out
    assert not any(tmp_path.iterdir())  # nothing written, nothing submitted


def test_cli_mismatch_is_one_clear_error(tmp_path, capsys):
    rc = main(["launch", "pretrain", "--config", str(ROOT / "configs/pretrain/vjepa_vitl16.yaml"), "--nodes", "2",
               "--dry-run", f"train.run_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "train.num_nodes=16 but --nodes 2" in err


def test_dry_run_refuses_a_changed_config_for_an_existing_run(tmp_path, capsys):
    pretrain(load_config(DEBUG, [f"train.run_dir={tmp_path}", "train.max_steps=2"]), progress=False)
    rc = main(["launch", "pretrain", "--config", str(DEBUG), "--cluster", "local", "--nodes", "2",
               "train.num_nodes=2", f"train.run_dir={tmp_path}", "train.max_steps=2", "--dry-run"])
    assert rc == 2 and "train.num_nodes: 1 -> 2" in capsys.readouterr().err


def test_eval_array_one_task_per_dataset_and_encoder(tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: two\ndatasets:\n  - {name: a, train: /x/a_tr, val: /x/a_va}\n"
                     "  - {name: b, train: /x/b_tr, val: /x/b_va}\n")
    rc = main(["launch", "eval", "--suite", str(suite), "--encoder", "runs/r1", "--encoder", "runs/r2",
               "--cluster", "local", "--out", str(tmp_path / "rep"), "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "job array of 4 task(s)" in out and "#SBATCH --array=0-3%" in out
    assert f"r2:b -> {tmp_path / 'rep/r2/b'}" in out
    rc = main(["launch", "eval", "--suite", str(suite), "--encoder", "runs/r1", "--dataset", "c", "--dry-run"])
    assert rc == 2 and "not in the suite" in capsys.readouterr().err
    rc = main(["launch", "eval", "--suite", str(suite), "--encoder", "r", "--gpus-per-node", "4", "--dry-run"])
    assert rc == 2 and "at most 1 GPU" in capsys.readouterr().err


def test_shards_array_plan(tmp_path, capsys, generated_clips):
    rc = main(["launch", "shards", str(generated_clips), str(tmp_path / "shards"), "--tasks", "4",
               "--cluster", "local", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0 and "job array of 4 task(s)" in out and "dependency afterok" in out
    assert "#SBATCH --gpus-per-node" not in out


@pytest.mark.parametrize("array_size", [None, 3])
def test_dry_run_script_is_what_submitit_submits(tmp_path, monkeypatch, array_size):
    """render_script calls submitit's private _make_sbatch_string (no public API returns the
    script): submitting through the public SlurmExecutor API, with a fake sbatch, must write the
    very same text. Fails loudly when submitit changes or drops that function."""
    from functools import partial

    import submitit

    from vjepa_pipeline.launch.resources import allocation
    from vjepa_pipeline.launch.sbatch import describe_job, executor_parameters, render_script

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("srun", "exit 0"), ("sbatch", "echo 'Submitted batch job 4242'")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ["PATH"])
    launch = load_config(None, ["launch.partition=gpu", "launch.account=team", "launch.qos=high", "launch.nodes=2",
                                "launch.gpus_per_node=4", "launch.mem_per_gpu=64G", "launch.signal=USR1",
                                "launch.setup=[module load cuda]", "launch.array_parallelism=2"]).launch
    params = executor_parameters(launch, allocation(launch), "vjepa-test", describe_job("test", "a check"),
                                 array=array_size is not None)
    folder = tmp_path / "logs"
    executor = submitit.SlurmExecutor(folder=str(folder))
    executor.update_parameters(**params)
    if array_size is None:
        executor.submit(print, "job")
    else:
        executor.submit_array([partial(print, i) for i in range(array_size)])
    submitted = (folder / "4242_submission.sh").read_text()
    assert submitted == render_script(params, folder, array_size)
    assert "#SBATCH --partition=gpu" in submitted and "module load cuda" in submitted


# ----------------------------------------------------------------------------- run-dir records


def test_run_dir_records(tmp_path, monkeypatch):
    info = rundir.record_code(tmp_path)
    assert (tmp_path / "launch/code.json").exists()
    assert info.get("commit") or info.get("package_sha256")
    rundir.record_submission(tmp_path, "123", "#!/bin/bash\nsrun x\n", "pretrain", "local")
    assert (tmp_path / "launch/sbatch_123.sh").read_text() == (tmp_path / "launch/sbatch.sh").read_text()
    sub = rundir.read_jsonl(tmp_path / "launch/submissions.jsonl")
    assert sub[0]["job_id"] == "123" and sub[0]["cluster"] == "local"
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    monkeypatch.setenv("PATH", str(_fake_scontrol(tmp_path)) + os.pathsep + os.environ["PATH"])
    slurm_job.record_job_start(tmp_path, "step_3")
    jobs = rundir.read_jsonl(tmp_path / "launch/jobs.jsonl")
    assert jobs[-1]["job_id"] == "77" and jobs[-1]["restart_count"] == 2 and jobs[-1]["resumed_from"] == "step_3"
    assert (tmp_path / "launch/sbatch_77.sh").exists()  # `scontrol write batch_script`


def _fake_scontrol(tmp_path: Path, fail: bool = False) -> Path:
    """A fake `scontrol` that logs its arguments (and writes batch scripts)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "scontrol"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {bin_dir}/calls\n"
                      "if [ \"$1\" = write ]; then echo '#!/bin/bash' > \"$4\"; fi\n"
                      + ("exit 1\n" if fail else "exit 0\n"))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def test_requeue_is_bounded_by_max_requeues(tmp_path, monkeypatch):
    bin_dir = _fake_scontrol(tmp_path)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ["PATH"])
    assert slurm_job.requeue(tmp_path, 5, 2, "SIGUSR2") == (False, "not running under SLURM")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm_job.requeue(tmp_path, 5, 2, "SIGUSR2")[0]
    assert slurm_job.requeue(tmp_path, 9, 2, "SIGUSR2")[0]
    ok, message = slurm_job.requeue(tmp_path, 12, 2, "SIGUSR2")
    assert not ok and "max_requeues=2" in message
    assert (bin_dir / "calls").read_text().split("\n")[:2] == ["requeue 40_3", "requeue 40_3"]
    assert [r["step"] for r in rundir.read_jsonl(tmp_path / "launch/requeues.jsonl")] == [5, 9]


# ----------------------------------------------------------------------------- preemption


def test_signal_flag_is_ignored_in_forked_children():
    flag = PreemptionFlag(signal.SIGUSR2)
    assert flag.install()
    try:
        pid = os.fork()
        if pid == 0:  # a dataloader worker: the inherited handler must do nothing (and not kill it)
            os.kill(os.getpid(), signal.SIGUSR2)
            os._exit(3 if flag.raised else 0)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert not flag.raised
        os.kill(os.getpid(), signal.SIGUSR2)
        assert flag.raised
    finally:
        flag.uninstall()
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL


class SignalSelfAt(L.Callback):
    """Sends the preemption signal to this process right after optimizer step ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR2)


def test_usr2_checkpoints_at_the_agreed_step_stops_and_resumes_identically(tmp_path):
    def cfg(sub):
        return load_config(DEBUG, [f"train.run_dir={tmp_path / sub}", "train.max_steps=8",
                                   "train.checkpoint_every_steps=100", "train.accumulate_grad_batches=2"])

    pretrain(cfg("straight"), progress=False)
    first = pretrain(cfg("split"), extra_callbacks=[SignalSelfAt(3)], progress=False)
    run = tmp_path / "split/debug"
    # The signal lands after step 3's checks: every rank agrees on step 4, saves it and stops.
    assert first["preempted"]["step"] == 4 and first["global_step"] == 4
    assert not first["preempted"]["requeued"] and "not running under SLURM" in first["preempted"]["message"]
    assert (run / "last").read_text().strip() == "step_0000000004"
    assert (run / "checkpoints/step_0000000004/data_state/rank_0.json").exists()
    assert [r["step"] for r in metrics(run)] == [1, 2, 3, 4]
    second = pretrain(cfg("split"), progress=False)
    assert second["resumed_from"].endswith("step_0000000004") and second["preempted"] is None
    a, b = metrics(tmp_path / "straight/debug"), metrics(run)
    assert [r["step"] for r in b] == list(range(1, 9))  # no step lost or repeated
    assert max(abs(ra["loss"] - rb["loss"]) for ra, rb in zip(a, b)) < 1e-5
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL  # handler removed after training


def _agree_worker(rank: int, init_file: str, out: str):
    import torch.distributed as dist

    from vjepa_pipeline.train.preemption import PreemptionCallback

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)

    class Trainer:  # the attributes PreemptionCallback._agreed reads
        world_size = 2

        class strategy:
            root_device = "cpu"

    flag = PreemptionFlag()
    if rank == 1:
        flag.received_at = 1.0  # only rank 1 got the signal
    seen = PreemptionCallback(out, flag)._agreed(Trainer())
    Path(out, f"rank{rank}").write_text(str(seen))
    dist.destroy_process_group()


def test_ranks_agree_when_only_one_got_the_signal(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_agree_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="fork")
    assert (tmp_path / "rank0").read_text() == "True" and (tmp_path / "rank1").read_text() == "True"


def test_plan_pretrain_keeps_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    launch = plan_pretrain(resolve(DEBUG, [], "local", []))
    assert launch.cfg.train.run_dir == "runs" and launch.out_dir == tmp_path / "runs/debug"
    assert launch.params["ntasks_per_node"] == 1 and "gpus_per_node" not in launch.params


def test_a_run_with_a_live_job_is_not_submitted_twice(tmp_path, monkeypatch):
    from vjepa_pipeline.launch.submit import LaunchError, submit

    monkeypatch.chdir(tmp_path)
    launch = plan_pretrain(resolve(DEBUG, [], "local", []))
    rundir.record_submission(launch.out_dir, "123", "#!/bin/bash\n", "pretrain", "local")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/sh\necho '123 RUNNING'\n")
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ["PATH"])
    with pytest.raises(LaunchError, match=r"already has a queued or running job: 123 \(RUNNING\)"):
        submit(launch)
