"""A pickle payload shared by the tests that check no checkpoint file can run code when loaded."""

from __future__ import annotations


class Payload:
    """What a planted checkpoint or DeepSpeed file could smuggle in: unpickling it would call
    ``_mark``, so ``Payload.built`` turning True means the loader ran untrusted code."""

    built = False

    def __reduce__(self):
        return (Payload._mark, ())

    @staticmethod
    def _mark():
        Payload.built = True
        return "pwned"
