"""Phrasing helpers for config problems: key paths, values with their types, nearest names."""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable
from typing import Any

# repr() of a YAML value can be unbounded (a large list, or a shared subtree repeated through
# aliases: billions of items); messages show a bounded preview built without the full repr.
_PREVIEW = reprlib.Repr()
_PREVIEW.maxlevel = 3
_PREVIEW.maxstring = _PREVIEW.maxother = 60
_PREVIEW.maxlong = 40
_PREVIEW.maxlist = _PREVIEW.maxtuple = _PREVIEW.maxdict = _PREVIEW.maxset = _PREVIEW.maxfrozenset = 6


def join_path(path: str, key: str | int) -> str:
    """Dotted path of a child: ``join_path('optim', 'lr') == 'optim.lr'``; ints index lists."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def short(value: Any, limit: int = 80) -> str:
    """A repr of ``value`` of at most ``limit`` characters, never built in full (nested containers
    show their first items and levels, long strings and numbers their start)."""
    try:
        text = _PREVIEW.repr(value)
    except (ValueError, RecursionError):  # e.g. an int beyond Python's int -> str digit limit
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: Any) -> str:
    """``'abc' (str)`` -- the value and its type, shortened for long values (bounded work)."""
    return f"{short(value, 60)} ({type(value).__name__})"


def closest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    matches = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=cutoff)
    return matches[0] if matches else None


def quoted(choices: Iterable[Any]) -> str:
    return ", ".join(repr(c) for c in choices)
