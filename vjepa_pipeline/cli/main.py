"""The ``vjepa`` command. Each subcommand lives in its own module and registers itself here.

Exit codes: 0 success, 2 usage or configuration error (one clear line, no traceback),
1 runtime failure.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import CheckpointError, ConfigError, LoaderError, UsageError
from . import (
    config_cmd,
    data_cmd,
    demo_cmd,
    eval_cmd,
    export_cmd,
    launch_cmd,
    model_info,
    objective,
    plan_cmd,
    pretrain_cmd,
    shards_cmd,
)

COMMANDS = (demo_cmd, data_cmd, shards_cmd, pretrain_cmd, eval_cmd, plan_cmd, launch_cmd, export_cmd, objective,
            model_info, config_cmd)

DESCRIPTION = """\
vjepa-pipeline: self-supervised video representation learning with V-JEPA.

Pipeline: raw footage -> shards -> streaming loader -> V-JEPA pretraining -> frozen-backbone eval.
Recipes live in configs/ and ship with the package: --config takes a YAML file or a recipe name
(debug, vjepa_vitl16, ...). Every command that takes --config also takes dotted overrides
such as optim.lr=3e-4 model.pos_embed=sincos.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vjepa", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides after options (commands that take overrides)
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (ConfigError, UsageError) as exc:
        print(f"vjepa {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except CheckpointError as exc:
        print(f"vjepa {args.command}: checkpoint error: {exc}", file=sys.stderr)
        return 1
    except LoaderError as exc:  # the data failed while running (paths were checked up front: exit 2)
        print(f"vjepa {args.command}: data error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"vjepa {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `vjepa config | head`: the reader left; not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return 0


if __name__ == "__main__":
    sys.exit(main())
