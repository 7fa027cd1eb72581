"""Phrasing helpers for config problems: key paths, values with their types, nearest names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


def join_path(path: str, key: str | int) -> str:
    """Dotted path of a child: ``join_path('optim', 'lr') == 'optim.lr'``; ints index lists."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def describe(value: Any) -> str:
    """``'abc' (str)`` -- the value and its type, shortened for long values."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def closest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    matches = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=cutoff)
    return matches[0] if matches else None


def quoted(choices: Iterable[Any]) -> str:
    return ", ".join(repr(c) for c in choices)
