"""The exception types shared across the package, importable without torch.

They sit on the lowest layer so that any package can raise them and the CLI can map them to exit
codes without importing the packages that raise them:

- ``ConfigError`` (exit code 2): a config, recipe or option value that cannot be read, built or
  validated; one line per problem, each starting with its key path.
- ``UsageError`` (exit code 2): a user mistake a command can explain in one line.
- ``CheckpointError`` (exit code 1): a checkpoint that cannot be read or does not fit the model.
- ``LoaderError`` (exit code 1): a dataset the training loader cannot run with (a bad path, too
  few shards, a failure rate above ``data.max_failure_rate``, nothing readable); one line.
"""

from __future__ import annotations

from collections.abc import Sequence


class ConfigError(ValueError):
    """A config could not be read, built or validated.

    ``problems`` holds one line per problem (each starting with its key path); ``str(err)``
    joins them, prefixed by the source (the YAML file) when known.
    """

    def __init__(self, problems: str | Sequence[str], source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        super().__init__(format_problems(self.problems, source))


def format_problems(problems: Sequence[str], source: str | None = None) -> str:
    where = f"{source}: " if source else ""
    if len(problems) == 1:
        return where + problems[0]
    lines = "\n".join(f"  {p}" for p in problems)
    return f"{where}{len(problems)} config problems:\n{lines}"


class UsageError(Exception):
    """A user mistake the command can explain in one line (exit code 2)."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


class LoaderError(Exception):
    """A data setup the loader cannot run with; the message says what to change (one line).

    A DataLoader worker's exception reaches the training process re-raised as
    ``LoaderError("Caught LoaderError in DataLoader worker process N.\nOriginal Traceback ...")``;
    that is turned back into the worker's one-line message."""

    def __init__(self, message: str = ""):
        head, _, rest = message.partition("\n")
        if head.startswith("Caught LoaderError in DataLoader worker") and "LoaderError: " in rest:
            where = head.removeprefix("Caught LoaderError in ").rstrip(".")
            message = f"{rest.rstrip().rsplit('LoaderError: ', 1)[1].strip()} (in {where})"
        super().__init__(message)


__all__ = ["CheckpointError", "ConfigError", "LoaderError", "UsageError", "format_problems"]
