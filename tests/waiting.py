"""Polling helper shared by the tests that wait on SLURM jobs and daemons."""

from __future__ import annotations

import time


def wait_until(predicate, timeout: float, what: str, poll: float = 0.25):
    """Call ``predicate`` every ``poll`` s until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
