"""Packaged recipes: `--config` takes a file or a recipe name, and a built wheel carries the recipes
(configs/pretrain, eval) so that a non-editable install runs from any directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vjepa_pipeline.config import ConfigError, load_config
from vjepa_pipeline.config.recipes import recipe_dir, recipe_names, resolve_recipe

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = ROOT / "configs" / "pretrain"


def vjepa(*args: str, cwd: Path, pythonpath: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "vjepa_pipeline", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_a_source_checkout_uses_its_own_recipe_folders():
    assert recipe_dir("pretrain") == PRETRAIN
    assert recipe_dir("eval") == ROOT / "eval"
    assert recipe_names("pretrain") == sorted(p.stem for p in PRETRAIN.glob("*.yaml"))
    assert {"debug", "demo", "vjepa_vitl16"} <= set(recipe_names("pretrain"))
    assert {"demo", "k400", "ssv2"} <= set(recipe_names("eval"))


@pytest.mark.parametrize("spec", ["debug", "debug.yaml", "pretrain/debug", "pretrain/debug.yaml",
                                  "configs/pretrain/debug.yaml"])
def test_recipe_names_resolve_from_any_directory(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no such files here: the names are looked up in the package
    assert resolve_recipe(spec) == PRETRAIN / "debug.yaml"
    assert load_config(spec) == load_config(PRETRAIN / "debug.yaml")
    assert resolve_recipe("eval/k400.yaml", "eval") == resolve_recipe("k400", "eval") == ROOT / "eval" / "k400.yaml"


def test_a_file_wins_over_a_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "debug").write_text("name: mine\n")
    assert resolve_recipe("debug") == Path("debug")
    assert load_config("debug").name == "mine"
    (tmp_path / "debug").unlink()
    (tmp_path / "debug").mkdir()  # e.g. a run directory: not a recipe
    assert resolve_recipe("debug") == PRETRAIN / "debug.yaml"
    (tmp_path / "mine").mkdir()
    with pytest.raises(ConfigError, match="cannot read config file mine"):
        load_config("mine")


def test_inheritance_from_a_packaged_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cooldown = load_config("vjepa2_vitl16_cooldown")  # defaults: vjepa2_vitl16.yaml, next to it
    assert cooldown == load_config(PRETRAIN / "vjepa2_vitl16_cooldown.yaml")
    assert cooldown.data.num_frames == 64 and cooldown.model.size == "large"


@pytest.mark.parametrize("spec", ["nope", "pretrain/nope.yaml", "../debug", "configs/other/debug.yaml"])
def test_an_unknown_name_lists_the_packaged_recipes(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(spec)
    msg = str(info.value)
    assert f"config file not found: {spec}" in msg and "\n" not in msg
    assert "packaged: debug, demo, tiny_cpu" in msg


def test_cli_takes_recipe_names_from_another_directory(tmp_path):
    out = vjepa("config", "--config", "debug", "train.max_steps=3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "name: debug" in out.stdout and "max_steps: 3" in out.stdout
    bad = vjepa("config", "--config", "debgu", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "did you mean 'debug'?" in bad.stderr and "packaged: debug, demo" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    suite = vjepa("eval", "--suite", "k4000", "--encoder", "x", cwd=tmp_path)
    assert suite.returncode == 2 and "Traceback" not in suite.stderr
    assert "no packaged eval suite" in suite.stderr and "k400, k600" in suite.stderr


def build_wheel(dest: Path) -> Path:
    """A wheel of the project, built offline from a copy of the files that go into it (so the
    build leaves no build/ folder in the checkout)."""
    src = dest / "src"
    for name in ("pyproject.toml", "setup.py", "README.md"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("vjepa_pipeline", "configs", "eval"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    wheels = dest / "wheels"
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-q", "-w", str(wheels), str(src)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    (wheel,) = wheels.glob("vjepa_pipeline-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> Path:
    """The project's wheel installed (without dependencies) into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(tmp)
    site = tmp / "site"
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                          str(site), str(wheel)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return site


@pytest.mark.slow
def test_a_wheel_install_runs_the_packaged_recipes(wheel_site, tmp_path):
    site = wheel_site
    packaged = site / "vjepa_pipeline" / "recipes"
    assert sorted(p.name for p in (packaged / "pretrain").glob("*.yaml")) == sorted(p.name for p in PRETRAIN.glob("*.yaml"))
    world = ROOT / "configs" / "world_model"
    assert sorted(p.name for p in (packaged / "world_model").glob("*.yaml")) == sorted(p.name for p in world.glob("*.yaml"))
    assert (packaged / "eval" / "demo.yaml").is_file() and (packaged / "eval" / "k400.yaml").is_file()

    work = tmp_path / "elsewhere"  # a directory without configs/ or eval/
    work.mkdir()
    where = subprocess.run(
        [sys.executable, "-c", "import json, vjepa_pipeline; from vjepa_pipeline.config.recipes import recipe_dir; "
         "from vjepa_pipeline.demo.plan import RECIPE, SUITE; "
         "print(json.dumps([vjepa_pipeline.__file__, str(recipe_dir('pretrain')), str(RECIPE), str(SUITE)]))"],
        cwd=work, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=300)
    assert where.returncode == 0, where.stderr
    for path in json.loads(where.stdout):
        assert Path(path).resolve().is_relative_to(site.resolve()), path  # the installed copy, not the checkout

    config = vjepa("config", "--config", "pretrain/vjepa2_vitl16_cooldown", cwd=work, pythonpath=site)
    assert config.returncode == 0, config.stderr
    assert "num_frames: 64" in config.stdout and "size: large" in config.stdout  # inherited from vjepa2_vitl16
    pretrain = vjepa("pretrain", "--config", "debug", "--no-progress", "train.max_steps=2",
                     f"train.run_dir={tmp_path / 'runs'}", "train.checkpoint_every_steps=2", cwd=work, pythonpath=site)
    assert pretrain.returncode == 0, pretrain.stderr[-3000:]
    assert "done: step 2" in pretrain.stdout
    assert (tmp_path / "runs" / "debug" / "config.yaml").is_file()
    assert not (work / "runs").exists()


@pytest.mark.slow
def test_the_quick_demo_runs_from_a_wheel_install(wheel_site, tmp_path):
    """`vjepa demo` finds configs/pretrain/demo.yaml and eval/demo.yaml in the package (about 30-60 s)."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = tmp_path / "demo"
    run = vjepa("demo", "--quick", "--out", str(out), cwd=work, pythonpath=wheel_site, timeout=1500)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "[5/5] report: done" in run.stdout
    assert (out / "report" / "report.md").is_file() and (out / "report" / "summary.json").is_file()
    assert list(work.iterdir()) == []  # nothing written into the working directory
