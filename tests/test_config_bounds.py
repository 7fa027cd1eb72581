"""Recipes that would make the loader work without end (issue "Reliability", item 10): a YAML
alias bomb ("billion laughs") is refused on the YAML node graph before any value is built, and no
error message repr()s an unbounded value."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from vjepa_pipeline.config import ConfigError, load_config
from vjepa_pipeline.config.messages import describe

ROOT = Path(__file__).resolve().parents[1]

# Nine levels of nine aliases: 9**9 (387 million) strings once expanded; a few hundred bytes of YAML.
BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"{c}: &{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    + ["name: *i", ""])


def _limit_memory() -> None:  # child process only: an unbounded loader dies instead of swapping the host
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_billion_laughs_recipe_is_one_line_exit_2_quickly_and_in_bounded_memory(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    try:
        out = subprocess.run([sys.executable, "-m", "vjepa_pipeline", "config", "--config", str(bomb)], env=env,
                             cwd=tmp_path, capture_output=True, text=True, timeout=60, preexec_fn=_limit_memory,
                             check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("the alias bomb was still being expanded after 60 s")
    assert time.monotonic() - t0 < 30
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "alias" in out.stderr and str(bomb) in out.stderr


def test_billion_laughs_is_refused_in_under_a_second_in_bounded_memory(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ConfigError) as info:
            load_config(bomb)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 1.0 and peak < 20 << 20, (seconds, peak)
    assert "\n" not in str(info.value) and "alias bomb" in str(info.value)


def test_an_alias_bomb_in_an_override_is_refused_too():
    levels = ["&a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [
        f"&{c} [{', '.join(['*' + p] * 10)}]" for p, c in zip("abcd", "bcde", strict=True)]
    with pytest.raises(ConfigError) as info:
        load_config("debug", [f"optim.lr=[{', '.join(levels)}, *e]"])
    msg = str(info.value)
    assert "optim.lr" in msg and "alias bomb" in msg and "\n" not in msg and len(msg) < 400


def test_recursive_aliases_and_deep_nesting_are_one_line_errors(tmp_path):
    (tmp_path / "rec.yaml").write_text("name: &a [*a]\n")
    (tmp_path / "deep.yaml").write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    for name, words in (("rec.yaml", "recursive"), ("deep.yaml", "nested too deeply")):
        with pytest.raises(ConfigError) as info:
            load_config(tmp_path / name)
        assert words in str(info.value) and "\n" not in str(info.value)


def test_reasonable_aliases_still_work(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "defaults: " + str(ROOT / "configs/pretrain/debug.yaml") + "\n"
        "masks:\n  - &m {num_blocks: 3, spatial_scale: [0.15, 0.15]}\n  - *m\n")
    cfg = load_config(tmp_path / "r.yaml")
    assert cfg.masks[0] == cfg.masks[1] and cfg.masks[0].num_blocks == 3


def test_a_wrong_value_is_described_in_bounded_length_and_work():
    from vjepa_pipeline.config.messages import short

    big = list(range(10))
    for _ in range(12):  # 10**12 leaves through shared references: repr() would never finish
        big = [big] * 10
    t0 = time.perf_counter()
    text = describe(big)
    assert time.perf_counter() - t0 < 0.1 and len(text) < 80 and text.endswith("(list)")
    assert len(short("x" * 10**6)) <= 80 and len(describe(10**5000)) < 80
    with pytest.raises(ConfigError) as info:
        load_config("debug", ["name=[" + ", ".join(["'abcdefgh'"] * 50_000) + "]"])
    assert len(str(info.value)) < 400
