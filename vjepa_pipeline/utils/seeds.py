"""Stable seeds from integers: the one hash that mixes several integers into a seed (masks per
(seed, rank, step, generator); loader streams per (seed, rank, worker role, epoch) and per
shuffle position).

Pure Python (splitmix64 steps), so the same integers give the same seed on every machine, Python
version and number of workers. It must never change, or recorded runs stop being reproducible.
"""

from __future__ import annotations

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*parts: int) -> int:
    """Deterministic, platform-independent hash of integers into a 63-bit seed."""
    h = 0x6A09E667F3BCC908
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _MASK64))
    return h & ((1 << 63) - 1)
