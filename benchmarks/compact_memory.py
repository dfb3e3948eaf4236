"""Peak memory of `embedkd index compact` against the code of a baseline commit, which rewrote every shard in
memory before writing any (the index's vectors held at once); now each rewritten shard is written as soon as it
is made and let go (`indexer.shards.ShardedIndex.compact`'s `write`).

The index: `--shards` shards of `--shard-size` vectors (`--dim`-d, Flat; document i's vector is row i of a
seeded matrix, as in `writes_during_add.py`), with `--deleted` of each shard's documents deleted (listed with
it, under the bound past which a delete rewrites its shard), so a compaction rewrites every shard. It is built
once; each compaction runs on a fresh copy of it, in a fresh child process that imports `indexer` from the
given source tree and reports its peak RSS (VmHWM) and wall time; rounds alternate the trees.

    git worktree add /tmp/base-compact f2e5b3e
    .venv/bin/python benchmarks/compact_memory.py --baseline /tmp/base-compact --out docs/compact_memory.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from command import command_line, emit  # this folder is on sys.path when a script in it runs
from filtered_search import TableEncoder, _clustered, table_docs  # this folder is on sys.path when a script in it runs

from indexer.build import build_index, delete_items
from indexer.context import open_catalog
from indexer.corpus import ListSource
from indexer.settings import load_settings

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import indexer.compaction
assert indexer.compaction.__file__.startswith(sys.argv[1]), indexer.compaction.__file__
from indexer.compaction import compact_index
from indexer.context import open_catalog
from indexer.settings import load_settings
catalog = open_catalog(load_settings(home=sys.argv[2]))
t0 = time.perf_counter()
out = compact_index(catalog, "m")
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child would report its (large) parent's peak
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": time.perf_counter() - t0, "count": out["count"], "shards": out["shards"],
                  "deleted_before": out["deleted_before"], "peak_rss_mb": hwm / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--shard-size", type=int, default=100000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--deleted", type=float, default=0.02, help="share of each shard's documents deleted")
    ap.add_argument("--baseline", required=True, help="source tree of the baseline commit (a git worktree)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    trees = {"baseline": str(Path(args.baseline).resolve()), "streamed": str(Path(__file__).resolve().parents[1])}
    n = args.shards * args.shard_size
    x, _ = _clustered(n, args.dim, 100, 0)
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as root:
        built = Path(root) / "built"
        catalog = open_catalog(load_settings(home=built), migrate=True)
        build_index(catalog, "m", TableEncoder(x), ListSource(table_docs(0, n)), shard_size=args.shard_size,
                    progress=False)
        step = round(1 / args.deleted)
        delete_items(catalog, "m", [f"d{i}" for i in range(0, n, step)])
        catalog.close()
        del x
        for _ in range(args.rounds):
            for name, tree in trees.items():
                home = Path(root) / "run"
                shutil.rmtree(home, ignore_errors=True)
                shutil.copytree(built, home)
                done = subprocess.run([sys.executable, "-c", CHILD, tree, str(home)], capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"the {name} compaction failed:\n{done.stderr}")
                runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    vectors_mb = n * args.dim * 4 / 2**20
    summary = {name: {"peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in rs), 1),
                      "seconds": round(statistics.median(r["seconds"] for r in rs), 2)} for name, rs in runs.items()}
    emit({"command": command_line(__file__, args), "vectors": n, "index_vectors_mb": round(vectors_mb, 1),
          "shard_vectors_mb": round(vectors_mb / args.shards, 1), "runs": runs, "median": summary,
          "peak_rss_ratio_baseline_over_streamed": round(summary["baseline"]["peak_rss_mb"]
                                                         / summary["streamed"]["peak_rss_mb"], 2),
          "seconds_ratio_streamed_over_baseline": round(summary["streamed"]["seconds"]
                                                        / summary["baseline"]["seconds"], 2)}, args.out)


if __name__ == "__main__":
    main()
