"""Files written atomically get the mode a plain open() gives them: 0666 less the umask (issue
"Reliability", item 9). mkstemp's private 0600 kept teammates on a shared cluster from reading
shards, index.json, exports, contact sheets, `last` and the loader's data state, all of which are
written through ``utils.atomic``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vjepa_pipeline.config import dump_config, load_config
from vjepa_pipeline.utils import atomic
from vjepa_pipeline.utils.atomic import atomic_path, atomic_torch_save, atomic_write_text, write_json


def _write_all(d: Path) -> list[Path]:
    """One file through each atomic writer (shards and plots use atomic_path directly)."""
    with atomic_path(d / "shard-000000.tar") as tmp:
        tmp.write_bytes(b"\0" * 1024)
    atomic_write_text(d / "last", "step_0000000010\n")
    write_json(d / "index.json", {"format": "vjepa-shards"})
    atomic_torch_save({"x": 1}, d / "export.pt")
    dump_config(load_config("debug"), d / "config.yaml")
    return [d / n for n in ("shard-000000.tar", "last", "index.json", "export.pt", "config.yaml")]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        files = _write_all(tmp_path)
        still = os.umask(old)
    finally:
        os.umask(old)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == mode, (path.name, oct(path.stat().st_mode))
    assert still == umask  # writing (and reading the umask) left it as it was
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_an_existing_file_takes_the_umask_mode_when_replaced(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("{}")
    path.chmod(0o600)
    old = os.umask(0o022)
    try:
        write_json(path, {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_reading_the_umask_does_not_change_it():
    old = os.umask(0o037)
    try:
        assert atomic.current_umask() == 0o037 and atomic.current_umask() == 0o037
    finally:
        os.umask(old)


def test_umask_is_read_safely_without_proc(monkeypatch, tmp_path):
    """Where /proc/self/status is missing (not Linux) the umask is read by setting and restoring it."""
    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(atomic, "open", no_proc, raising=False)
    old = os.umask(0o027)
    try:
        assert atomic.current_umask() == 0o027
        assert atomic.current_umask() == 0o027  # restored after the read
        assert atomic.file_mode() == 0o640
    finally:
        os.umask(old)


def test_stale_temporaries_of_one_name_are_removed_and_nothing_else(tmp_path):
    from vjepa_pipeline.utils.atomic import remove_stale_temporaries

    for name in (".last.abc123.tmp", ".last.zz.tmp", "last", ".lastx.abc.tmp", ".config.yaml.q.tmp", "a.tmp"):
        (tmp_path / name).write_text("x")
    (tmp_path / ".[x].q.tmp").write_text("x")
    assert remove_stale_temporaries(tmp_path, "last") == 2
    assert remove_stale_temporaries(tmp_path, "[x]") == 1  # glob characters in a name are literal
    assert sorted(p.name for p in tmp_path.iterdir()) == [".config.yaml.q.tmp", ".lastx.abc.tmp", "a.tmp", "last"]
