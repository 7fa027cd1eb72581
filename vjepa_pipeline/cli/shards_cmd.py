"""``vjepa shards build|inspect``: raw footage -> WebDataset shards, and checking them."""

from __future__ import annotations

import argparse
from pathlib import Path

BUILD_HELP = """\
Turn a folder of videos (optionally one sub-folder per class) or a manifest (official V-JEPA CSV
'path label', CSV with a 'path' header, or JSONL) into tar shards of re-encoded clips plus
index.json. Every option maps to the config section 'shards' (see `vjepa config`); dotted
overrides such as shards.crf=20 work too. Bad inputs are skipped and listed with a reason in
index.json. Interrupted builds resume: re-run the same command.

Trajectories (world models, docs/world_model.md) are detected (--layout auto) and sharded frame-exact
with their actions / states: a folder of episode folders (a video or frames/ plus actions.* and
states.*: npy, npz, csv or jsonl), a JSONL manifest naming them, or DROID's raw layout (a CSV of
episode folders with trajectory.h5 and recordings/MP4, as the official V-JEPA 2-AC code reads it).

examples:
  vjepa shards build ~/videos/ucf101 shards/ucf101 --workers 8 --max-clip-seconds 10
  vjepa shards build ~/robot/episodes shards/robot --workers 8          # generic trajectory layout
  vjepa shards build droid_train_paths.csv shards/droid --workers 32    # DROID, actions = pose deltas
  vjepa shards build train.csv shards/k400 --short-side 256 --samples-per-shard 500
  vjepa shards build ~/videos shards/raw --slurm --slurm-tasks 64 launch.partition=cpu
  vjepa shards build ~/raw shards/curated --scene-threshold 0.3 --min-motion 1 --dedup-distance 4

Curation (each optional; settings, per-filter counts, every dropped clip and score histograms go to
index.json["curation"], shown by `vjepa shards inspect`): scene cuts (one extra decode of each
source; each scene becomes its own clips, starting on a keyframe), a motion score per encoded clip
(static clips dropped) and perceptual hashes; near-duplicates (also re-encoded at other sizes) are
removed over the whole build when it is packed, keeping the largest source, then the smallest path.
"""

# command-line flag -> shards config key
FLAG_KEYS = {
    "workers": "workers", "short_side": "short_side", "fps": "fps", "crf": "crf", "preset": "preset",
    "gop_seconds": "gop_seconds", "max_clip_seconds": "max_clip_seconds", "min_seconds": "min_seconds",
    "samples_per_shard": "samples_per_shard", "target_shard_mb": "target_shard_mb", "prefix": "prefix",
    "seed": "seed", "labels": "labels", "layout": "layout", "action_rule": "action_rule",
    "action_dim": "action_dim", "state_dim": "state_dim", "droid_camera": "droid_camera",
    "scene_threshold": "scene_threshold", "min_motion": "min_motion", "dedup_distance": "dedup_distance",
}


def register(sub) -> None:
    p = sub.add_parser("shards", help="build and inspect WebDataset video shards",
                       description="Build WebDataset video shards from raw footage, and inspect them.")
    shards_sub = p.add_subparsers(dest="shards_command", metavar="<build|inspect>", required=True)

    b = shards_sub.add_parser("build", help="raw videos or a manifest -> shards", description=BUILD_HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("source", type=Path, help="video or episode folder, or manifest file (.csv, .txt, .jsonl)")
    b.add_argument("out_dir", type=Path, help="output folder for shards and index.json")
    b.add_argument("--config", type=Path, help="YAML recipe whose 'shards' section is used")
    b.add_argument("--workers", type=int, help="parallel encoder processes (default 1)")
    b.add_argument("--short-side", type=int, help="output short side in px (default 256; never upscales)")
    b.add_argument("--keep-resolution", action="store_true", help="do not resize")
    b.add_argument("--fps", type=float, help="resample to this frame rate (default: keep)")
    b.add_argument("--crf", type=int, help="x264 quality, lower is better (default 23)")
    b.add_argument("--preset", help="x264 preset (default veryfast)")
    b.add_argument("--gop-seconds", type=float, help="keyframe interval in seconds (default 1)")
    b.add_argument("--passthrough", action="store_true", help="store the source bytes untouched")
    b.add_argument("--max-clip-seconds", type=float, help="split long videos into clips of at most this length")
    b.add_argument("--min-seconds", type=float, help="drop videos / trailing clips shorter than this")
    b.add_argument("--scene-threshold", type=float,
                   help="cut videos at scene changes whose score (ffmpeg's scene score, 0-1) exceeds this; 0.3 "
                        "is typical (default: no cuts)")
    b.add_argument("--min-motion", type=float,
                   help="drop clips whose motion score (mean grey-level change per frame, 0-255) is below "
                        "this; 1 drops static shots (default: keep all)")
    b.add_argument("--dedup-distance", type=int,
                   help="drop near-duplicate clips whose frame hashes differ by at most this many bits of 64 "
                        "(4 is typical; default: keep duplicates)")
    b.add_argument("--samples-per-shard", type=int, help="samples per shard (default: from --target-shard-mb)")
    b.add_argument("--target-shard-mb", type=float, help="shard size target in MiB (default 512)")
    b.add_argument("--prefix", help="shard name prefix (default 'shard')")
    b.add_argument("--seed", type=int, help="seed of the input shuffle (default 0)")
    b.add_argument("--labels", help="label file: JSON {name: id} or one name per line; unknown labels are skipped")
    group = b.add_mutually_exclusive_group()
    group.add_argument("--labelled", action="store_true", help="require one sub-folder per class")
    group.add_argument("--unlabelled", action="store_true", help="ignore sub-folder names")
    b.add_argument("--layout", choices=("auto", "videos", "episodes", "droid"),
                   help="what the source holds (default auto: trajectories are detected)")
    b.add_argument("--action-rule", choices=("sum", "mean", "first", "pose_delta"),
                   help="how actions between kept frames combine when the loader skips frames: sum "
                        "(increments), mean (rates), first (held commands), pose_delta (from the states, "
                        "as for DROID) (default: pose_delta for DROID, sum otherwise)")
    b.add_argument("--action-dim", type=int, help="expected action dimension (default: the most common)")
    b.add_argument("--state-dim", type=int, help="expected state dimension (default: the most common)")
    b.add_argument("--droid-camera", help="DROID metadata key of the camera recording (default left_mp4_path)")
    b.add_argument("--keep-work", action="store_true", help="keep the staging folder <out>/.work")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.add_argument("--slurm", action="store_true", help="encode as a SLURM job array, then pack in a final job")
    b.add_argument("--slurm-tasks", type=int, default=16, help="array tasks with --slurm (default 16)")
    b.add_argument("--task-index", type=int, help=argparse.SUPPRESS)
    b.add_argument("--num-tasks", type=int, help=argparse.SUPPRESS)
    b.add_argument("--pack-only", action="store_true", help=argparse.SUPPRESS)
    b.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides (shards.*, launch.*)")
    b.set_defaults(run=run_build)

    i = shards_sub.add_parser("inspect", help="validate shards, print statistics, write a contact sheet",
                              description="Validate every shard of a build (tar readable, members complete, "
                                          "metadata consistent, videos decode), print totals and histograms "
                                          "and write a contact-sheet PNG of sampled frames.")
    i.add_argument("shard_dir", type=Path, help="folder holding index.json and the shards")
    i.add_argument("--sheet", type=Path, help="contact sheet path (default <shard_dir>/contact_sheet.png)")
    i.add_argument("--sheet-samples", type=int, default=12, help="samples shown on the contact sheet")
    i.add_argument("--no-decode", action="store_true", help="skip decoding every video (faster)")
    i.add_argument("--decoder", choices=("decord", "torchcodec", "pyav"), default="decord",
                   help="the decoder your training loader uses (data.decoder); every video is also read "
                        "with it, since PyAV reading a file does not mean it does (default decord)")
    i.set_defaults(run=run_inspect)


def resolve_config(args):
    from ..config import load_config

    overrides = list(args.overrides)
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"shards.{key}={value}")
    if args.keep_resolution:
        overrides.append("shards.short_side=null")
    if args.passthrough:
        overrides.append("shards.reencode=false")
    if args.labelled or args.unlabelled:
        overrides.append(f"shards.labelled={'true' if args.labelled else 'false'}")
    if args.keep_work:
        overrides.append("shards.keep_work=true")
    return load_config(args.config, overrides)


def run_build(args) -> int:
    from ..launch.submit import LaunchError, submit_build
    from ..shards.build import BuildError, ShardBuilder
    from ..shards.items import SourceError
    from ..errors import UsageError

    cfg = resolve_config(args)
    builder = ShardBuilder(args.source, args.out_dir, cfg.shards)
    try:
        if args.slurm:  # the path of `vjepa launch shards`
            return submit_build(builder, cfg, args.slurm_tasks)
        if args.task_index is not None or args.pack_only:
            plan = builder.plan()
            if args.task_index is not None:
                builder.encode(plan, args.task_index, args.num_tasks or 1, progress=not args.no_progress)
            if args.pack_only:
                builder.pack(plan)
                builder.finish()
            return 0
        index = builder.run(progress=not args.no_progress)
    except (BuildError, SourceError, LaunchError) as exc:
        raise UsageError(str(exc)) from None
    print_summary(index)
    return 0


def print_summary(index: dict) -> None:
    t = index["totals"]
    traj = index.get("trajectories")
    inputs = "episodes" if traj else "videos"
    what = (f"actions {'/'.join(map(str, traj['action_dim']))}-D ({', '.join(traj['action_rule'])}), states "
            f"{'/'.join(map(str, traj['state_dim']))}-D" if traj else f"{len(index['label_map'])} labels")
    print(f"{t['samples']} samples from {t.get('sharded', t['videos'] - t['skipped'])} of {t['videos']} {inputs} "
          f"({t['hours']:.3f} h, {t['frames']} frames) in {len(index['shards'])} shards of "
          f"{index['samples_per_shard']}; {what}")
    if index["skipped"]:
        reasons: dict[str, int] = {}
        for s in index["skipped"]:
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
        print(f"skipped {len(index['skipped'])}: " + ", ".join(f"{r} x{n}" for r, n in sorted(reasons.items())))
        for s in index["skipped"][:10]:
            print(f"  {s['path']}: {s['reason']}" + (f" ({s['detail']})" if s.get("detail") else ""))
        if len(index["skipped"]) > 10:
            print(f"  ... {len(index['skipped']) - 10} more in index.json")
    if index.get("curation"):
        from ..shards.curation import render_curation

        print("\n".join(render_curation(index["curation"])))
    ignored = index.get("ignored") or []
    if ignored:
        exts: dict[str, int] = {}
        for entry in ignored:
            ext = entry["reason"].rpartition("(")[2].rstrip(")")
            exts[ext] = exts.get(ext, 0) + 1
        print(f"ignored {len(ignored)} other files (not video extensions): "
              + ", ".join(f"{e} x{n}" for e, n in sorted(exts.items())) + "; listed in index.json")


def run_inspect(args) -> int:
    from ..shards.inspect import InspectError, inspect_shards
    from ..errors import UsageError

    try:
        report = inspect_shards(args.shard_dir, decode=not args.no_decode,
                                sheet_path=args.sheet or args.shard_dir / "contact_sheet.png",
                                sheet_samples=args.sheet_samples, decoder=args.decoder)
    except InspectError as exc:
        raise UsageError(str(exc)) from None
    print(report.render())
    return 0 if report.ok else 1
