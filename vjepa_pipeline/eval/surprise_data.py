"""Paired videos for ``vjepa eval surprise``: readers of the violation-of-expectation datasets and the
surprise suite files (``eval/surprise/*.yaml``).

Every reader returns :class:`Pair` s (a possible and an impossible video, identical until the event)
plus the list of inputs it skipped, with the reason; videos load lazily as uint8 (T, H, W, 3).

- shards (``vjepa data generate-violations`` + the shard builder, or your own): each sample's
  metadata (manifest columns) names its ``pair``, ``violation`` and ``possible`` (1 / 0);
- IntPhys dev (``<root>/<O1|O2|O3>/<scene>/<1..4>/scene/*.png`` + ``status.json`` with
  ``header.is_possible``): quadruplets of 2 possible + 2 impossible movies; as in the official
  evaluation, movie 1 is paired with the movie that stays pixel-identical to it the longest and
  the other two form the second pair;
- GRASP (``<root>/P_<Property>/<name>.mp4`` with ``<root>/IP_<Property>/<name>.mp4``): pairs by name;
- InfLevel-lab (``<root>/<property>/*.mp4``): pairs from the official CSV per property (columns
  ``vid1_path``, ``vid1_label``, ``vid2_path``, ``vid2_label``, ...; copy them from
  facebookresearch/jepa-intuitive-physics ``auxiliary_data_loading_files/inflevel/``).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..errors import UsageError

DATASETS = ("shards", "intphys", "grasp", "inflevel_lab")


@dataclass
class VideoRef:
    key: str
    load: Callable[[], np.ndarray] = field(repr=False)  # uint8 (T, H, W, 3)
    possible: bool
    event_frame: int | None = None


@dataclass
class Pair:
    """Twins identical until the event. ``group``: the pair's own id (unique in a set); ``quadruplet``:
    the id shared with the other pair of a matched quadruplet (IntPhys scene: two possible and two
    impossible movies of one scene, whose object content cancels in the sums), None outside one."""

    possible: VideoRef
    impossible: VideoRef
    violation: str
    group: str
    quadruplet: str | None = None


@dataclass
class SurpriseSuite:
    """A surprise suite file (eval/surprise/*.yaml); every key has a default but ``dataset`` / ``root``."""

    name: str = "surprise"  # report name
    dataset: str = "shards"  # shards | intphys | grasp | inflevel_lab
    root: str = ""  # the dataset's local folder (or the shard folder)
    properties: list[str] = field(default_factory=list)  # IntPhys blocks / GRASP / InfLevel properties; [] = all found
    pairs_dir: str = ""  # InfLevel-lab: folder of the official <property>.csv pair files ("" = <root>)
    frame_step: int | None = None  # keep every k-th frame; None = the model's training frame_step
    window: int | None = None  # frames per window (after frame_step); None = the model's clip length
    stride: int = 2  # frames (after frame_step) between window starts
    context_frames: list[int] = field(default_factory=list)  # [] = every whole-tubelet context length


_FIELD_TYPES = {"str": (str, "a string"), "int": (int, "an integer"), "int | None": (int, "an integer or null"),
                "list[str]": (str, "a list of strings"), "list[int]": (int, "a list of integers")}


def _check_field(path: Path, key: str, value) -> None:
    """One-line UsageError unless ``value`` fits the annotation of SurpriseSuite.``key``."""
    annotation = next(f.type for f in fields(SurpriseSuite) if f.name == key)
    kind, what = _FIELD_TYPES[str(annotation)]

    def fits(v) -> bool:
        return isinstance(v, kind) and not isinstance(v, bool)
    if annotation.startswith("list"):
        ok = isinstance(value, list) and all(fits(v) for v in value)
    else:
        ok = fits(value) or (annotation.endswith("| None") and value is None)
    if not ok:
        raise UsageError(f"surprise suite {path}: {key} must be {what}, got {value!r}")


def load_surprise_suite(path: str | Path) -> SurpriseSuite:
    """Read and check a suite YAML (unknown keys are errors, one line, with the nearest name)."""
    import yaml

    from ..config.messages import closest

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"surprise suite {path}: cannot read it ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"surprise suite {path}: expected a mapping of keys, got {type(raw).__name__}")
    names = [f.name for f in fields(SurpriseSuite)]
    for key in raw:
        if key not in names:
            hint = closest(str(key), names)
            raise UsageError(f"surprise suite {path}: unknown key {key!r}" + (f" (did you mean {hint!r}?)" if hint else ""))
    for key, value in raw.items():
        _check_field(path, key, value)
    suite = SurpriseSuite(**raw)
    if suite.dataset not in DATASETS:
        raise UsageError(f"surprise suite {path}: dataset {suite.dataset!r} is not one of {', '.join(DATASETS)}")
    if not suite.root:
        raise UsageError(f"surprise suite {path}: set root: to the dataset's local folder")
    root = Path(suite.root).expanduser()
    suite.root = str(root if root.is_absolute() else (path.parent / root))
    if suite.stride < 1 or any(v is not None and v < 1 for v in (suite.frame_step, suite.window)):
        raise UsageError(f"surprise suite {path}: stride, frame_step and window must be >= 1")
    return suite


# ---- shards ----------------------------------------------------------------------------------
def _decode(data: bytes, decoder_name: str = "auto") -> np.ndarray:
    from ..shards.decoders import get_decoder

    dec = get_decoder() if decoder_name == "auto" else get_decoder(decoder_name)
    n = dec.count_frames(data)
    return dec.decode(data, list(range(n)), n)


def _truthy(value) -> bool | None:
    text = str(value).strip().lower()
    return True if text in ("1", "true", "yes", "possible") else False if text in ("0", "false", "no", "impossible") else None


def _make_pairs(videos: dict[str, list[tuple[VideoRef, str, str | None]]], skipped: list[str]) -> list[Pair]:
    """Members (video, violation, quadruplet id) grouped by pair id -> pairs; a quadruplet id that does
    not name exactly two pairs is dropped (counted), the pairs stay."""
    pairs = []
    for group, members in sorted(videos.items()):
        poss = [m for m in members if m[0].possible]
        imp = [m for m in members if not m[0].possible]
        if len(poss) != 1 or len(imp) != 1:
            skipped.append(f"{group}: {len(poss)} possible and {len(imp)} impossible videos (a pair needs one each)")
            continue
        quad_ids = {poss[0][2], imp[0][2]}
        if len(quad_ids) > 1:  # the twins name different quadruplets: trust neither
            skipped.append(f"{group}: its videos name different quadruplets {sorted(map(str, quad_ids))} "
                           "(scored as a pair only)")
        pairs.append(Pair(poss[0][0], imp[0][0], poss[0][1], group, quad_ids.pop() if len(quad_ids) == 1 else None))
    sizes = Counter(p.quadruplet for p in pairs if p.quadruplet)
    for quad, n in sorted(sizes.items()):
        if n != 2:
            skipped.append(f"quadruplet {quad}: {n} pair(s), needs 2 (its pairs are scored as pairs only)")
    for p in pairs:
        if p.quadruplet and sizes[p.quadruplet] != 2:
            p.quadruplet = None
    return pairs


def pairs_from_shards(path: str | Path) -> tuple[list[Pair], list[str]]:
    """Pairs of a shard folder whose samples carry ``pair`` / ``violation`` / ``possible`` metadata."""
    from ..shards.format import TarBroken, iter_shard, read_index, shard_paths

    try:
        folder, index = read_index(path)  # a folder or its index.json
    except Exception as exc:  # the index reader's own error, one line
        raise UsageError(f"--data {path}: {str(exc).splitlines()[0]}") from None
    videos: dict[str, list[tuple[VideoRef, str]]] = {}
    skipped: list[str] = []
    for shard in shard_paths(folder, index):
        samples = []
        try:
            samples.extend(iter_shard(shard))
        except (TarBroken, OSError) as exc:  # a broken or missing shard: the rest of it is skipped and counted
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            skipped.append(f"{shard.name}: shard skipped after {len(samples)} samples ({why})")
        for sample in samples:
            meta = sample["json"] or {}
            extra = meta.get("extra") or {}
            ok = _truthy(extra.get("possible"))
            if sample["mp4"] is None or not extra.get("pair") or ok is None:
                skipped.append(f"{sample['key']}: no video, or no pair / possible metadata")
                continue
            data = sample["mp4"]
            event = extra.get("event_frame")
            ref = VideoRef(str(meta.get("source") or sample["key"]), lambda data=data: _decode(data), ok,
                           int(event) if str(event or "").isdigit() else None)
            quad = str(extra.get("quadruplet") or "") or None
            videos.setdefault(str(extra["pair"]), []).append((ref, str(extra.get("violation") or "unknown"), quad))
    return _make_pairs(videos, skipped), skipped


# ---- public datasets -------------------------------------------------------------------------
def _file_video(path: Path) -> Callable[[], np.ndarray]:
    return lambda: _decode(path.read_bytes())


def _png_video(folder: Path) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from PIL import Image

        files = sorted(folder.glob("*.png"))
        return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    return load


def _dirs(root: Path, wanted: list[str], what: str) -> list[Path]:
    found = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not found:
        raise UsageError(f"{root}: no {what} folders (is root: the dataset's folder?)")
    if wanted:
        missing = sorted(set(wanted) - {p.name for p in found})
        if missing:
            raise UsageError(f"{root}: no {what} folder(s) {missing} (found {[p.name for p in found][:8]})")
        found = [p for p in found if p.name in wanted]
    return found


def frame_digests(frames) -> list[bytes]:
    """One digest per frame (uint8 arrays): compares long videos without keeping them in memory."""
    import hashlib

    return [hashlib.sha1(np.ascontiguousarray(f).tobytes()).digest() for f in frames]


def intphys_matches(digests: list[list[bytes]]) -> list[tuple[int, int]]:
    """The two pairs of an IntPhys quadruplet (per-frame digests of movies 1-4): movie 1 goes with the
    movie that stays identical to it the longest (the official rule), the other two form a pair."""
    def breaking_point(a: list[bytes], b: list[bytes]) -> int:
        n = min(len(a), len(b))
        return next((t for t in range(n) if a[t] != b[t]), n)
    bps = [breaking_point(digests[0], digests[k]) for k in (1, 2, 3)]
    first = 1 + int(np.argmax(bps))
    rest = [k for k in (1, 2, 3) if k != first]
    return [(0, first), (rest[0], rest[1])]


def pairs_from_intphys(root: Path, blocks: list[str]) -> tuple[list[Pair], list[str]]:
    pairs, skipped = [], []
    for block in _dirs(root, blocks, "IntPhys block (O1, O2, O3)"):
        for scene in sorted(p for p in block.iterdir() if p.is_dir()):
            movies, labels = [], []
            for k in (1, 2, 3, 4):
                status = scene / str(k) / "status.json"
                try:
                    labels.append(bool(json.loads(status.read_text())["header"]["is_possible"]))
                except (OSError, ValueError, KeyError, TypeError):
                    labels = []
                    break
                movies.append(_png_video(scene / str(k) / "scene"))
            if len(labels) != 4:
                skipped.append(f"{block.name}/{scene.name}: not a quadruplet 1-4 with status.json header.is_possible")
                continue
            for a, b in intphys_matches([frame_digests(m()) for m in movies]):
                if labels[a] == labels[b]:
                    skipped.append(f"{block.name}/{scene.name}: movies {a + 1} and {b + 1} are both "
                                   f"{'possible' if labels[a] else 'impossible'}")
                    continue
                pi, ii = (a, b) if labels[a] else (b, a)
                scene_id = f"{block.name}/{scene.name}"
                pairs.append(Pair(VideoRef(f"{scene_id}/{pi + 1}", movies[pi], True),
                                  VideoRef(f"{scene_id}/{ii + 1}", movies[ii], False),
                                  block.name, f"{scene_id}/{pi + 1}-{ii + 1}", scene_id))
            if sum(p.quadruplet == f"{block.name}/{scene.name}" for p in pairs) == 1:  # its twin pair was skipped
                pairs[-1].quadruplet = None
                skipped.append(f"{block.name}/{scene.name}: one pair only, no quadruplet (scored as a pair)")
    return pairs, skipped


def pairs_from_grasp(root: Path, properties: list[str]) -> tuple[list[Pair], list[str]]:
    pairs, skipped = [], []
    props = [p.name[2:] for p in _dirs(root, [f"P_{p}" for p in properties], "GRASP P_<Property>")
             if p.name.startswith("P_")]
    if not props:
        raise UsageError(f"{root}: no P_<Property> folders (GRASP layout: P_<Property>/ and IP_<Property>/)")
    for prop in props:
        poss = {p.name: p for p in (root / f"P_{prop}").iterdir() if p.is_file()}
        imp_dir = root / f"IP_{prop}"
        imp = {p.name: p for p in imp_dir.iterdir() if p.is_file()} if imp_dir.is_dir() else {}
        for name in sorted(set(poss) ^ set(imp)):
            skipped.append(f"{prop}/{name}: only in {'P_' if name in poss else 'IP_'}{prop} (unpaired)")
        for name in sorted(set(poss) & set(imp)):
            pairs.append(Pair(VideoRef(f"P_{prop}/{name}", _file_video(poss[name]), True),
                              VideoRef(f"IP_{prop}/{name}", _file_video(imp[name]), False), prop, f"{prop}/{name}"))
    return pairs, skipped


def pairs_from_inflevel(root: Path, properties: list[str], pairs_dir: Path) -> tuple[list[Pair], list[str]]:
    pairs, skipped = [], []
    csvs = sorted(pairs_dir.glob("*.csv"))
    if properties:
        csvs = [c for c in csvs if c.stem in properties]
        missing = sorted(set(properties) - {c.stem for c in csvs})
        if missing:
            raise UsageError(f"{pairs_dir}: no pair file(s) {[m + '.csv' for m in missing]} (InfLevel-lab pairs "
                             "come from the official <property>.csv files)")
    if not csvs:
        raise UsageError(f"{pairs_dir}: no <property>.csv pair files (copy them from facebookresearch/"
                         "jepa-intuitive-physics evaluation_code/auxiliary_data_loading_files/inflevel/)")
    for pairs_csv in csvs:
        with open(pairs_csv, newline="") as fh:
            for n, row in enumerate(csv.DictReader(fh), start=2):
                try:
                    vids = [(root / row[f"vid{k}_path"], row[f"vid{k}_label"].strip().lower()) for k in (1, 2)]
                except (KeyError, AttributeError):
                    raise UsageError(f"{pairs_csv}:{n}: needs columns vid1_path, vid1_label, vid2_path, vid2_label") from None
                labels = sorted(label for _, label in vids)
                absent = [str(p) for p, _ in vids if not p.is_file()]
                if labels != ["impossible", "possible"] or absent:
                    skipped.append(f"{pairs_csv.name}:{n}: " + (f"missing {absent}" if absent else
                                   f"labels {labels} (a pair needs one possible, one impossible)"))
                    continue
                (pp, _), (ip, _) = sorted(vids, key=lambda v: v[1] != "possible")
                pairs.append(Pair(VideoRef(str(pp.relative_to(root)), _file_video(pp), True),
                                  VideoRef(str(ip.relative_to(root)), _file_video(ip), False), pairs_csv.stem,
                                  f"{pairs_csv.stem}:{n}"))
    return pairs, skipped


def read_pairs(suite: SurpriseSuite) -> tuple[list[Pair], list[str]]:
    """The suite's pairs and skipped inputs; UsageError (one line) when nothing can be paired."""
    root = Path(suite.root)
    if not root.exists():
        raise UsageError(f"{suite.name}: root {root} does not exist")
    if suite.dataset == "shards":
        pairs, skipped = pairs_from_shards(root)
    elif suite.dataset == "intphys":
        pairs, skipped = pairs_from_intphys(root, suite.properties)
    elif suite.dataset == "grasp":
        pairs, skipped = pairs_from_grasp(root, suite.properties)
    else:
        pairs, skipped = pairs_from_inflevel(root, suite.properties, Path(suite.pairs_dir) if suite.pairs_dir else root)
    if not pairs:
        first = f" (first skipped: {skipped[0]})" if skipped else ""
        raise UsageError(f"{root}: no possible / impossible pairs found, {len(skipped)} inputs skipped{first}")
    return pairs, skipped


__all__ = ["DATASETS", "Pair", "SurpriseSuite", "VideoRef", "frame_digests", "intphys_matches", "load_surprise_suite",
           "pairs_from_grasp", "pairs_from_inflevel", "pairs_from_intphys", "pairs_from_shards", "read_pairs"]
