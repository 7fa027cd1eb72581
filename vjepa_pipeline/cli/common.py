"""Helpers shared by subcommands: the --config/overrides arguments, config loading, and the checks
of user-given paths that turn a mistake into one line and exit code 2 before any work starts."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# A packaged recipe name (configs/pretrain/debug.yaml, shipped inside the package): works from any
# directory and from a non-editable install.
DEFAULT_RECIPE = Path("debug")


def add_config_args(parser: argparse.ArgumentParser, default: Path | None = None) -> None:
    parser.add_argument("--config", type=Path, default=default,
                        help="YAML recipe: a file, or the name of a packaged recipe such as debug or "
                             f"vjepa_vitl16 (see configs/pretrain/; default: {default or 'built-in defaults'})")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides applied after the recipe, e.g. optim.lr=3e-4 train.max_steps=50")


def load(args: argparse.Namespace):
    from ..config import load_config

    return load_config(args.config, args.overrides)


def check_output(path: str | os.PathLike, what: str, folder: bool, create: bool = False) -> Path:
    """Check that the command can write ``path`` -- a folder (``folder``) or a file -- and the
    folders above it: no file where a folder must go (or a folder where the file must go), write
    access to the nearest existing folder. ``create`` (folders only) makes the folder now and
    writes a probe file in it, so that a long job does not fail at its first write. UsageError
    naming ``what`` (the option or key that gave the path), one line."""
    import tempfile

    from ..errors import UsageError

    path = Path(path).expanduser()
    if path.exists():
        if folder and not path.is_dir():
            raise UsageError(f"{what}: {path} is a file, not a folder")
        if not folder and path.is_dir():
            raise UsageError(f"{what}: {path} is a folder; give a file name")
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None:  # a relative path from a vanished working directory
        raise UsageError(f"{what}: cannot create {path}")
    if existing != path and not existing.is_dir():
        raise UsageError(f"{what}: cannot create {path}: {existing} is a file, not a folder")
    place = existing if existing.is_dir() else existing.parent
    if not os.access(place, os.W_OK | os.X_OK):
        raise UsageError(f"{what}: cannot write {path}: no write access to {place}")
    if create and folder:
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as exc:
            raise UsageError(f"{what}: cannot write in {path}: {exc.strerror or exc}") from None
    return path


def check_dataset(source: str, path: str, what: str) -> None:
    """A file-backed dataset (``shards`` or ``csv``) that cannot be read at all -- missing, not a
    shard folder, a malformed index.json, an empty list -- is a usage error (one line, exit 2)
    found before any work starts; ``pipe:`` and remote URLs are left to the reader."""
    from ..errors import LoaderError, UsageError

    if source not in ("shards", "csv"):
        return
    from ..data.sources import expand_urls, file_list_items

    try:
        if source == "csv":
            file_list_items(path)
            return
        urls, samples = expand_urls(path)
    except LoaderError as exc:
        raise UsageError(f"{what}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:  # an index.json without usable totals
        raise UsageError(f"{what}: {path}: index.json is malformed ({type(exc).__name__}: {exc}); "
                         "re-run `vjepa shards build`, or check it with `vjepa shards inspect`") from None
    if not urls or samples == 0:
        raise UsageError(f"{what}: {path} holds no samples (an empty dataset)")
