"""Difficult footage through the shard builder: one file per defect real cameras and archives
produce (vjepa_pipeline.shards.footage), plus files that are not videos. For each file: kept (how
many clips, frames, size) or skipped (the reason), with this checkout and, with --baseline-ref,
with an older revision on the same files in the same run.

    python bench/footage.py [--baseline-ref REV] [--max-clip-seconds 1]

Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from revisions import build_with, checkout  # noqa: E402

from vjepa_pipeline.shards import footage  # noqa: E402


def verdicts(report: dict, files: dict[str, Path]) -> dict[str, str]:
    skipped = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    ignored = {Path(s["path"]).name for s in report.get("ignored", [])}
    out = {}
    for defect, path in files.items():
        clips = report["clips"].get(path.name)
        if clips:
            frames = sum(c[0] for c in clips)
            out[defect] = f"kept: {len(clips)} clips, {frames} frames, {clips[0][1]}x{clips[0][2]} @ {clips[0][3]:.4g} fps"
        elif path.name in skipped:
            out[defect] = f"skipped: {skipped[path.name]}"
        elif path.name in ignored:
            out[defect] = "ignored (extension)"
        else:
            out[defect] = "not mentioned"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline-ref", help="git revision to compare with (e.g. main~1)")
    ap.add_argument("--max-clip-seconds", type=float, default=1.0, help="clip length (default 1)")
    args = ap.parse_args()
    opts = {"short_side": 64, "samples_per_shard": 8, "max_clip_seconds": args.max_clip_seconds, "labelled": False}
    with tempfile.TemporaryDirectory(prefix="vjepa-footage-") as tmp:
        root = Path(tmp)
        files = footage.make_all(root / "src")
        (root / "src" / "notes.txt").write_text("not a video\n")
        files["not a video (.txt)"] = root / "src" / "notes.txt"
        reports = {}
        for name, rev in (("baseline", args.baseline_ref), ("current", None)):
            if name == "baseline" and rev is None:
                continue
            with checkout(rev) as code:
                reports[name] = build_with(code, root / "src", root / f"out_{name}", opts)
    rows = {name: verdicts(r, files) for name, r in reports.items()}
    kept = {name: sum(1 for v in row.values() if v.startswith("kept")) for name, row in rows.items()}
    print(f"{len(files)} inputs ({len(footage.MAKERS)} videos with one defect each, 1 text file)")
    header = "| defect | " + " | ".join(f"{n} ({args.baseline_ref})" if n == "baseline" else n for n in rows) + " |"
    print(header)
    print("|" + "---|" * (1 + len(rows)))
    for defect in files:
        print(f"| {defect} | " + " | ".join(rows[n][defect] for n in rows) + " |")
    print("kept: " + ", ".join(f"{n} {k} of {len(footage.MAKERS)}" for n, k in kept.items()))
    print(json.dumps({"bench": "footage", "inputs": len(files), "kept": kept,
                      "cpu_s": {n: round(r["cpu_s"], 2) for n, r in reports.items()}, "verdicts": rows}))


if __name__ == "__main__":
    main()
