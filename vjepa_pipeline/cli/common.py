"""Helpers shared by subcommands: the --config/overrides arguments and config loading."""

from __future__ import annotations

import argparse
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
