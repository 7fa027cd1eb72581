"""Build shards with the vjepa_pipeline found on ``sys.path`` (the caller sets PYTHONPATH to a
checkout, e.g. a git worktree of an older revision) and print one JSON line: the index's totals,
skips and ignored files, wall time and CPU seconds (this process and its ffmpeg children).

    PYTHONPATH=<checkout> python bench/build_child.py SRC OUT '{"short_side": 64, ...}'

Used by bench/shards.py and bench/footage.py to compare revisions on the same inputs in one run.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tarfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    src, out, opts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    from vjepa_pipeline.config.schema import ShardsConfig
    from vjepa_pipeline.shards.build import ShardBuilder

    t0 = time.perf_counter()
    index = ShardBuilder(src, out, ShardsConfig(**opts), log=lambda *a, **k: None).run(progress=False)
    wall = time.perf_counter() - t0
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    clips: dict[str, list] = {}  # source -> [frames, width, height, fps] per clip
    for entry in index["shards"]:
        with tarfile.open(os.path.join(out, entry["name"])) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    m = json.load(tar.extractfile(member))
                    clips.setdefault(m["source"], []).append([m["num_frames"], m["width"], m["height"], m["fps"]])
    print(json.dumps({"totals": index["totals"], "skipped": index["skipped"], "ignored": index.get("ignored", []),
                      "clips": clips,
                      "shards": [e["name"] for e in index["shards"]], "wall_s": wall, "cpu_s": cpu,
                      "code": os.path.dirname(os.path.dirname(sys.modules["vjepa_pipeline"].__file__))}))


if __name__ == "__main__":
    main()
