"""Near-duplicate clips: perceptual signatures and the build-wide, deterministic choice of kept copies.

A clip's signature is the 64-bit difference hash (dHash) of SIGNATURE_FRAMES of its frames, spread
evenly over it, from the grey analysis frames of :mod:`.curation`. A dHash compares neighbouring
block means (9x8 blocks), so it survives re-encoding, resizing and mild colour changes: the same
footage at another size or bitrate hashes within a few bits.

Two clips are near-duplicates when their durations agree (within DURATION_TOLERANCE) and their
signatures differ in at most ``distance x SIGNATURE_FRAMES`` bits (``shards.dedup_distance`` is the
mean per hashed frame, of 64). The decision is global and independent of how the build was split:
clips are visited in priority order - the largest source picture first (the best copy), then the
smallest source path, clip start and key - and each is dropped if it is near a clip already kept,
else kept. Candidate pairs come from an exact-match index on bands of the signature (pigeonhole:
signatures within T bits agree exactly on at least one of T + 1 bands), so the pass is close to
linear in the number of clips rather than quadratic.
"""

from __future__ import annotations

import numpy as np

SIGNATURE_FRAMES = 4  # hashed frames per clip
HASH_BITS = 64
DURATION_TOLERANCE = 0.1  # near-duplicates' durations differ by at most this share (plus 50 ms)


def frame_dhash(grey: np.ndarray) -> int:
    """64-bit dHash of a grey frame whose height divides by 8 and width by 9 (the analysis size):
    block means on a 9x8 grid, one bit per left-to-right increase."""
    h, w = grey.shape
    blocks = grey.reshape(8, h // 8, 9, w // 9).mean(axis=(1, 3))
    bits = (blocks[:, 1:] > blocks[:, :-1]).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def signature_hex(hashes: list[int]) -> str:
    """A clip signature: its frames' dHashes, 16 hex digits each."""
    return "".join(f"{h:016x}" for h in hashes)


def signature_distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def _bands(bits: int, count: int) -> list[tuple[int, int]]:
    """``count`` contiguous (shift, width) bands covering ``bits`` bits."""
    edges = [round(i * bits / count) for i in range(count + 1)]
    return [(lo, hi - lo) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def priority(sample_meta: dict) -> tuple:
    """Sort key of the kept copy: largest source picture, then smallest source path, start, key."""
    src = sample_meta.get("source_video") or {}
    pixels = int(src.get("width") or 0) * int(src.get("height") or 0)
    return (-pixels, str(sample_meta["source"]), float(sample_meta["clip_start"]), str(sample_meta["key"]))


def find_duplicates(clips: list[dict], distance: int) -> dict[str, str]:
    """{dropped key: key of the kept copy} over ``clips`` ({"key", "signature", "duration",
    "priority"}); clips without a signature are always kept."""
    bits = SIGNATURE_FRAMES * HASH_BITS
    limit = distance * SIGNATURE_FRAMES
    bands = _bands(bits, min(limit + 1, bits))
    index: dict[tuple[int, int], list[int]] = {}
    kept: list[tuple[int, float, str]] = []  # (signature, duration, key)
    dropped: dict[str, str] = {}
    for clip in sorted((c for c in clips if c.get("signature")), key=lambda c: c["priority"]):
        sig, dur = int(clip["signature"], 16), float(clip["duration"])
        keys = [(b, (sig >> lo) & ((1 << width) - 1)) for b, (lo, width) in enumerate(bands)]
        seen: set[int] = set()
        match = None
        for band_key in keys:
            for j in index.get(band_key, ()):
                if j in seen:
                    continue
                seen.add(j)
                other, odur, okey = kept[j]
                if (abs(dur - odur) <= DURATION_TOLERANCE * max(dur, odur) + 0.05
                        and (sig ^ other).bit_count() <= limit):
                    # the first kept clip found in priority order (candidate lists are in kept order)
                    if match is None or j < match:
                        match = j
        if match is not None:
            dropped[clip["key"]] = kept[match][2]
            continue
        for band_key in keys:
            index.setdefault(band_key, []).append(len(kept))
        kept.append((sig, dur, clip["key"]))
    return dropped
