"""Which code is running: the git commit, branch and uncommitted diff of the checkout, or (outside
git) a hash of the package sources. Recorded in run directories so a run can be reproduced."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from .atomic import atomic_write_text, write_json

PACKAGE = Path(__file__).resolve().parents[1]


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def code_state(repo: Path = PACKAGE.parent) -> tuple[dict, str]:
    """(summary, uncommitted diff) of the code in ``repo``."""
    commit = _git("rev-parse", "HEAD", cwd=repo)
    if commit is None:  # not a checkout (installed package): hash the sources instead
        h = hashlib.sha256()
        for path in sorted(PACKAGE.rglob("*.py")):
            h.update(str(path.relative_to(PACKAGE)).encode())
            h.update(path.read_bytes())
        return {"git": None, "package_sha256": h.hexdigest()}, ""
    diff = _git("diff", "HEAD", "--", ".", cwd=repo) or ""
    untracked = (_git("ls-files", "--others", "--exclude-standard", cwd=repo) or "").split()
    branch = (_git("rev-parse", "--abbrev-ref", "HEAD", cwd=repo) or "").strip()
    return {"git": str(repo), "commit": commit.strip(), "branch": branch, "dirty": bool(diff.strip()),
            "untracked_files": len(untracked)}, diff


def write_code_state(folder: Path) -> dict:
    """``folder/code.json`` (+ ``code.diff`` when the checkout has uncommitted changes)."""
    info, diff = code_state()
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "code.json", info, indent=1)
    if diff:
        atomic_write_text(folder / "code.diff", diff)
    else:
        (folder / "code.diff").unlink(missing_ok=True)
    return info
