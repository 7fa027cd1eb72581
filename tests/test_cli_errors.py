"""User mistakes through the `vjepa` command (issue "Reliability", item 12): each one is a single
line on stderr and exit code 2, as the README promises, never a traceback, a hang or exit code 1.

Every case runs the real command in a subprocess on tiny inputs; the bad inputs are listed in
CASES (docs: the number of bad inputs tried is ``len(CASES)``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def vjepa(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "vjepa_pipeline", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A workspace: a 2-step debug run (encoder and export source), a few clips listed in a CSV,
    a file standing where folders are expected, broken shard folders and recipes."""
    from vjepa_pipeline.data.synthetic import moving_objects_clip
    from vjepa_pipeline.shards.media import write_video

    w = tmp_path_factory.mktemp("cli_errors")
    run = vjepa("pretrain", "--config", "debug", "--no-progress", f"train.run_dir={w / 'runs'}", "train.max_steps=2",
                "train.checkpoint_every_steps=2", cwd=w, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    (w / "vids").mkdir()
    for i in range(4):
        write_video(w / "vids" / f"v{i}.mp4", moving_objects_clip(i, 16, 32).numpy(), fps=8)
    (w / "good.csv").write_text("".join(f"{w / 'vids' / f'v{i}.mp4'} {i % 2}\n" for i in range(4)))
    (w / "empty.csv").write_text("")
    (w / "afile").write_text("a file, not a folder\n")
    (w / "badidx").mkdir()
    (w / "badidx" / "index.json").write_text('{"format": "vjepa-shards", "version": 1, "shards": [')
    index = {"format": "vjepa-shards", "version": 1, "totals": {"samples": 1}, "label_map": {"a": 0},
             "shards": [{"name": "../elsewhere/s-000000.tar", "samples": 1}]}
    (w / "outside").mkdir()
    (w / "outside" / "index.json").write_text(json.dumps(index))
    (w / "nototals").mkdir()
    (w / "nototals" / "index.json").write_text(json.dumps({"format": "vjepa-shards", "version": 1, "shards": []}))
    (w / "noshards").mkdir()
    (w / "noshards" / "index.json").write_text(json.dumps({**index, "shards": [], "totals": {"samples": 0}}))
    (w / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    (w / "device.yaml").write_text("defaults: /dev/null\n")
    corrupt = w / "runs" / "corrupt"
    corrupt.mkdir(parents=True)
    (corrupt / "config.yaml").write_text("name: [unclosed\n")
    for name, ds in {"ok": {}, "crop": {"crop_size": 36}, "frames": {"num_frames": 7},
                     "missing": {"train": str(w / "nope.csv")}, "empty": {"train": str(w / "empty.csv")},
                     "outside": {"source": "shards", "train": str(w / "outside"), "val": str(w / "outside")},
                     "noshards": {"source": "shards", "train": str(w / "noshards"), "val": str(w / "noshards")},
                     }.items():
        dataset = {"name": "toy", "source": "csv", "train": str(w / "good.csv"), "val": str(w / "good.csv"),
                   "num_frames": 8, "frame_step": 1, "crop_size": 32,
                   "probe": {"kind": "linear", "epochs": 1, "batch_size": 2, "lrs": [1e-3], "weight_decays": [0.0]},
                   **ds}
        (w / f"suite_{name}.yaml").write_text(yaml.safe_dump({"name": name, "num_workers": 0, "datasets": [dataset]}))
    return w


PRETRAIN = ("pretrain", "--config", "debug", "--no-progress", "train.max_steps=2")
EVAL = ("eval", "--encoder", "{ws}/runs/debug", "--device", "cpu", "--out", "{ws}/eval_out", "--suite")
ROOT_SKIP = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")

# (case, arguments: "{ws}" is the workspace, "{case}" the case), one bad input each.
_CASES = [
    ("data-path-missing", (*PRETRAIN, "data.source=shards", "data.path={ws}/nope", "train.run_dir={ws}/runs_{case}")),
    ("data-path-missing-csv", (*PRETRAIN, "data.source=csv", "data.path={ws}/nope.csv",
                               "train.run_dir={ws}/runs_{case}")),
    ("index-malformed", (*PRETRAIN, "data.source=shards", "data.path={ws}/badidx", "train.run_dir={ws}/runs_{case}")),
    ("index-without-totals", (*PRETRAIN, "data.source=shards", "data.path={ws}/nototals",
                              "train.run_dir={ws}/runs_{case}")),
    ("run-dir-is-a-file", (*PRETRAIN, "train.run_dir={ws}/afile")),
    ("run-dir-under-a-file", (*PRETRAIN, "train.run_dir={ws}/afile/runs")),
    ("lr-inf", (*PRETRAIN, "optim.lr=.inf", "train.run_dir={ws}/runs_{case}")),
    ("max-steps-1e26", (*PRETRAIN[:-1], "train.max_steps=100000000000000000000000000",
                        "train.run_dir={ws}/runs_{case}")),
    ("corrupt-run-config", (*PRETRAIN, "name=corrupt", "train.run_dir={ws}/runs")),
    ("non-utf8-recipe", ("config", "--config", "{ws}/latin1.yaml")),
    ("defaults-a-device", ("config", "--config", "{ws}/device.yaml")),
    ("config-a-device", ("config", "--config", "/dev/null")),
    ("export-out-under-a-file", ("export", "{ws}/runs/debug", "--out", "{ws}/afile/enc.pt")),
    ("export-out-is-a-folder", ("export", "{ws}/runs/debug", "--out", "{ws}/vids")),
    ("export-hf-out-is-a-file", ("export", "{ws}/runs/debug", "--format", "hf", "--out", "{ws}/afile")),
    ("eval-out-under-a-file", (*EVAL[:-3], "--out", "{ws}/afile/o", "--suite", "{ws}/suite_ok.yaml")),
    ("eval-dataset-missing", (*EVAL, "{ws}/suite_missing.yaml")),
    ("eval-dataset-empty", (*EVAL, "{ws}/suite_empty.yaml")),
    ("eval-shards-empty", (*EVAL, "{ws}/suite_noshards.yaml")),
    ("eval-crop-not-divisible", (*EVAL, "{ws}/suite_crop.yaml")),
    ("eval-frames-not-divisible", (*EVAL, "{ws}/suite_frames.yaml")),
    ("index-names-a-shard-outside", (*EVAL, "{ws}/suite_outside.yaml")),
    ("run-dir-unwritable", (*PRETRAIN, "train.run_dir={ws}/readonly/runs")),
    ("eval-out-unwritable", (*EVAL[:-3], "--out", "{ws}/readonly/o", "--suite", "{ws}/suite_ok.yaml")),
]
CASES = [pytest.param(case, args, id=case, marks=[ROOT_SKIP] if "readonly" in " ".join(args) else [])
         for case, args in _CASES]


@pytest.mark.parametrize("case, args", CASES)
def test_a_user_mistake_is_one_line_and_exit_2(ws, case, args):
    if "readonly" in " ".join(args):
        (ws / "readonly").mkdir(exist_ok=True)
        (ws / "readonly").chmod(0o555)
    out = vjepa(*(a.format(ws=ws, case=case) for a in args), cwd=ws)  # a run directory per case
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, f"{case}: exit {out.returncode}\n{out.stderr[-3000:]}"
    assert "Traceback" not in out.stderr and len(lines) == 1, f"{case}:\n{out.stderr[-3000:]}"
    assert lines[0].startswith(f"vjepa {args[0]}: error: "), lines[0]
