"""Packaged recipes: the pretraining recipes (``configs/pretrain/``), the world-model recipes
(``configs/world_model/``) and eval suites (``eval/``).

Both folders stay at the top of the repository; the wheel ships them inside the package as
``vjepa_pipeline/recipes/pretrain/*.yaml`` and ``vjepa_pipeline/recipes/eval/*.yaml`` (setup.py
maps the folders, nothing is copied in the source tree), and they are found with
``importlib.resources``. In a source checkout (editable install, or the repository on
PYTHONPATH) the package holds no ``recipes/`` folder and the checkout's own folders are used.

A recipe is given as a path, or, when no such file exists, by name: ``debug``, ``debug.yaml``,
``pretrain/debug`` or the checkout spelling ``configs/pretrain/debug.yaml`` (world models:
``world_model/droid_vitg16``; eval suites: ``k400``, ``eval/k400.yaml``). ``defaults:`` inheritance stays relative to the recipe's own file, which is
a real file in either case.
"""

from __future__ import annotations

import functools
import importlib.resources
import shutil
import tempfile
from pathlib import Path

from vjepa_pipeline.config.messages import closest

# kind -> (folder inside the installed package, folder in a source checkout, accepted name prefixes)
KINDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "pretrain": ("recipes/pretrain", "configs/pretrain", ("configs/pretrain/", "pretrain/")),
    "eval": ("recipes/eval", "eval", ("eval/",)),
    "world_model": ("recipes/world_model", "configs/world_model", ("configs/world_model/", "world_model/")),
}
WHAT = {"pretrain": "pretraining recipe", "eval": "eval suite", "world_model": "world-model recipe"}


@functools.cache
def recipe_dir(kind: str) -> Path:
    """The folder holding the packaged recipes of ``kind`` ('pretrain' or 'eval')."""
    packaged, checkout, _ = KINDS[kind]
    root = importlib.resources.files("vjepa_pipeline")
    folder = root.joinpath(packaged)
    if folder.is_dir():
        if isinstance(folder, Path):
            return folder
        return _extracted(folder)  # e.g. a zipped install: copy the YAML files out once
    return Path(str(root)).parent / checkout  # a source checkout: the repository's folder


def _extracted(folder) -> Path:
    out = Path(tempfile.mkdtemp(prefix="vjepa_recipes_"))
    for item in folder.iterdir():
        if item.is_file():
            with importlib.resources.as_file(item) as f:
                shutil.copyfile(f, out / item.name)
    return out


def recipe_names(kind: str = "pretrain") -> list[str]:
    """Names of the packaged recipes of ``kind`` (file stems, sorted)."""
    folder = recipe_dir(kind)
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def packaged_recipe(spec: str | Path, kind: str = "pretrain") -> Path | None:
    """The packaged recipe that ``spec`` names (see the module doc for the spellings), or None."""
    name = Path(spec).as_posix()
    for prefix in KINDS[kind][2]:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    name = name.removesuffix(".yaml")
    if not name or "/" in name or name.startswith("."):
        return None
    path = recipe_dir(kind) / f"{name}.yaml"
    return path if path.is_file() else None


def resolve_recipe(spec: str | Path, kind: str = "pretrain") -> Path | None:
    """A recipe path: ``spec`` itself when that file exists, else the packaged recipe it names;
    None when neither exists (``not_found`` phrases that). A folder named like a recipe (say the
    run directory ``debug/``) does not hide the packaged recipe."""
    path = Path(spec)
    if path.is_file():
        return path
    packaged = packaged_recipe(spec, kind)
    if packaged is None and path.exists():
        return path  # not a file: the reader says why it cannot be read
    return packaged


def not_found(spec: str | Path, kind: str = "pretrain") -> str:
    """``no packaged pretraining recipe of that name (did you mean 'debug'? packaged: debug, demo, ...)``."""
    names = recipe_names(kind)
    hint = closest(Path(spec).name.removesuffix(".yaml"), names)
    listed = ", ".join(names) if names else "none found"
    return f"no packaged {WHAT[kind]} of that name ({f'did you mean {hint!r}? ' if hint else ''}packaged: {listed})"
