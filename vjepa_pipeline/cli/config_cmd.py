"""``vjepa config``: validate a recipe and print the fully resolved config."""

from __future__ import annotations

import sys

from .common import add_config_args, load


def register(sub) -> None:
    p = sub.add_parser("config", help="validate a recipe and print the resolved config as YAML",
                       description="Load a recipe with overrides, validate it, and print the resolved config "
                                   "(what a run directory's config.yaml would hold). Exit code 2 if invalid.")
    add_config_args(p)
    p.set_defaults(run=run)


def run(args) -> int:
    import yaml

    from ..config import config_to_dict

    cfg = load(args)
    yaml.safe_dump(config_to_dict(cfg), sys.stdout, sort_keys=False)
    return 0
