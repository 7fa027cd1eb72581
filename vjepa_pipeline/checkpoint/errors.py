"""Checkpoint errors, importable without torch (the CLI maps them to exit code 1)."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""
