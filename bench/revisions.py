"""Run bench/build_child.py against this checkout or a git revision of it (a temporary worktree),
so a benchmark can compare the code under test with a baseline revision in the same run."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def checkout(rev: str | None) -> Iterator[Path]:
    """This checkout (rev None), or a detached worktree of ``rev`` removed afterwards."""
    if rev is None:
        yield ROOT
        return
    with tempfile.TemporaryDirectory(prefix="vjepa-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), rev], check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def build_with(code: Path, src: Path, out: Path, opts: dict) -> dict:
    """Build ``src`` into ``out`` with the package in ``code``; the child's JSON report."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "build_child.py"), str(src), str(out), json.dumps(opts)],
                         env=env, capture_output=True, text=True, cwd=str(code))
    if run.returncode != 0:
        raise SystemExit(f"build with {code} failed:\n{run.stderr[-3000:]}")
    report = json.loads(run.stdout.strip().splitlines()[-1])
    if Path(report["code"]).resolve() != code.resolve():
        raise SystemExit(f"the build imported {report['code']}, not {code}")
    return report
