"""Images as a mixture source: ImageNet-style class folders of jpg / png files, or image shards (tars
whose samples hold a ``.jpg`` / ``.jpeg`` / ``.png`` member, optionally ``.json`` / ``.cls``).

An image trains as a still clip: the image repeated to the clip's frames, as the official V-JEPA 2
loader does for ImageNet in VideoMix22M (``VideoDataset.get_item_image``: ``image.repeat(fpc, ...)``
then the video transform). Here the crop and resize run once on the single frame, which is then
repeated: the same pixels, ``num_frames`` times cheaper.

A compressed image sample is ``{"key", "image": bytes, "meta": dict | None, "label": int | None}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ..errors import LoaderError
from ..shards.format import iter_url_groups
from .sources import file_samples

IMAGE_SUFFIXES = ("jpg", "jpeg", "png")
SAMPLE_MEMBERS = (*IMAGE_SUFFIXES, "json", "cls")  # the members of an image shard's sample that are read
MAX_IMAGE_BYTES = 64 << 20  # a larger member is not a training image (a broken or hostile shard)
MAX_IMAGE_PIXELS = 100_000_000  # decoded size cap (decompression bombs): ~100 MP


def image_folder_items(root: str | os.PathLike) -> list[dict]:
    """The images of a folder: ImageNet-style class folders (``root/<class>/<image>``, labels = the
    class folders in sorted order) or images directly in ``root`` (unlabelled). Sorted by path, so
    every rank and worker sees the same list. Items are ``{"key", "path", "label"}``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LoaderError(f"image source {root} is not a folder (give ImageNet-style class folders of jpg / png, "
                          "or image shards)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found: list[tuple[str, int | None]] = []
    for label, cls in enumerate(classes):
        found += [(str(p), label) for p in sorted((root / cls).rglob("*")) if _is_image(p)]
    found += [(str(p), None) for p in sorted(root.iterdir()) if _is_image(p)]
    if not found:
        raise LoaderError(f"image source {root} holds no .jpg / .jpeg / .png files (in it or in its class folders)")
    return [{"key": _key(Path(path), root), "path": path, "label": label} for path, label in found]


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower().lstrip(".") in IMAGE_SUFFIXES


def _key(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def image_file_samples(items: Iterator[dict], on_error: Callable[[str], None],
                       on_unreadable: Callable[[str, BaseException], None] | None = None) -> Iterator[dict]:
    """Compressed image samples read from files (see :func:`~.sources.cycle_samples`)."""
    return file_samples(items, on_error, on_unreadable, member="image")


def image_tar_samples(urls: Iterator[str], on_error: Callable[[str], None],
                      on_unreadable: Callable[[str, BaseException], None] | None = None) -> Iterator[dict]:
    """Compressed image samples from image shards (local paths or ``pipe:`` URLs), read with the shard
    format's tar reader (its guards against headers that lie about their size). A shard that cannot
    be opened or read to its end is reported and counted once (the complete samples read before the
    break are kept, the one it broke in is dropped with it); each bad sample is counted once, under
    one reason: an oversized image member, no image, or bad metadata."""
    def broken(url: str, exc: BaseException) -> None:
        if on_unreadable is not None:
            on_unreadable(url, exc)
        on_error("unreadable shard")

    for s in iter_url_groups(urls, broken, wanted=SAMPLE_MEMBERS, skip_over=MAX_IMAGE_BYTES, fold_case=True):
        if "truncated" in s:  # the tar broke inside or right after it: counted as the unreadable shard
            continue
        image = next((s[k] for k in IMAGE_SUFFIXES if k in s), None)
        if image is None:
            on_error("oversized member" if s.get("oversized") else "no image in sample")
            continue
        try:
            meta = json.loads(s["json"]) if "json" in s else None
            if meta is not None and not isinstance(meta, dict):
                raise ValueError("metadata is not a mapping")
            label = int(s["cls"]) if "cls" in s else (meta or {}).get("label")
            label = None if label is None else int(label)
        except (ValueError, TypeError):
            on_error("bad metadata")
            continue
        yield {"key": s["key"], "image": image, "meta": meta, "label": label}


class ImageDecodeError(Exception):
    """Bytes that are not a readable image (or too large to decode); the message is a short reason
    (failures are counted per reason)."""


def decode_image(data: bytes) -> torch.Tensor:
    """An RGB uint8 frame (1, H, W, 3) from jpg / png bytes; ImageDecodeError when unreadable."""
    from torchvision.io import ImageReadMode, decode_image as tv_decode

    if not data:
        raise ImageDecodeError("empty")
    width, height = _header_size(data)
    if width * height > MAX_IMAGE_PIXELS:  # refused before decoding allocates it (decompression bombs)
        raise ImageDecodeError("too many pixels")
    try:
        chw = tv_decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):
        raise ImageDecodeError("unreadable") from None
    if chw.ndim != 3 or min(chw.shape[1:]) < 1:
        raise ImageDecodeError("empty")
    return chw.permute(1, 2, 0).unsqueeze(0).contiguous()


def _header_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image header alone (Pillow reads it lazily, without decoding)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Image.DecompressionBombError:
        raise ImageDecodeError("too many pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageDecodeError("unreadable") from None
