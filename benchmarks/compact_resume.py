"""A compaction killed midway, then run again: how long the rerun takes with the code of a baseline commit (which
made every shard again) and with this tree (which reuses the shards the killed one had staged,
`indexer/staging.py`).

The index: HNSW (`--factory`), `--shards` shards of `--shard-size` vectors (`--dim`-d; document i's vector is row i
of a seeded clustered matrix, as in `compact_memory.py`), `--deleted` of each shard's documents deleted (listed, so a
compaction rebuilds every shard's graph without them). Built once. Per run, on a fresh copy, each in a fresh
child process importing `indexer` from the tree under test: a compaction killed (SIGKILL) as soon as `--kill-at`
rewritten shards are staged; then the rerun, timed. The trees alternate ABBA (`--rounds` pairs). Once per tree, an
uninterrupted compaction on a fresh copy gives the time of the whole job. After each rerun: the ids the index holds,
`index verify`, and self-recall@1 of `--probe` stored vectors (each should find itself).

    git worktree add /tmp/old 3f20b5b
    .venv/bin/python benchmarks/compact_resume.py --baseline /tmp/old --out docs/compact_resume.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
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
print(json.dumps({"seconds": time.perf_counter() - t0, "count": out["count"], "resumed": out.get("resumed")}))
"""

CHECK = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from indexer.build import index_row, load_current
from indexer.context import open_catalog
from indexer.settings import load_settings
from indexer.verify import verify_index
catalog = open_catalog(load_settings(home=sys.argv[2]))
index = load_current(catalog, index_row(catalog, "m"))
stored = np.sort(index.stored_ids())
probe = np.random.default_rng(0).choice(stored, int(sys.argv[3]), replace=False)
_, found = index.search(index.reconstruct(probe), 1)
print(json.dumps({"stored": len(stored), "stored_sha": __import__("hashlib").sha256(stored.tobytes()).hexdigest()[:16],
                  "self_recall_at_1": float((found[:, 0] == probe).mean()), "verify_ok": verify_index(catalog, "m")["ok"]}))
"""


def _child(code: str, *argv: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"a child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _killed(tree: str, home: Path, kill_at: int) -> float:
    """Start a compaction, SIGKILL it once `kill_at` rewritten shards are staged; seconds it ran."""
    folder = home / "indexes" / "m"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, tree, str(home)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        if len(list(folder.glob("m.compacting-*.faiss"))) >= kill_at:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        raise SystemExit(f"the compaction ended (exit {proc.returncode}) before {kill_at} shards were staged")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--shard-size", type=int, default=50000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--factory", default="HNSW32")
    ap.add_argument("--deleted", type=float, default=0.03, help="share of each shard's documents deleted")
    ap.add_argument("--kill-at", type=int, default=2, help="staged shards when the first compaction is killed")
    ap.add_argument("--probe", type=int, default=2000)
    ap.add_argument("--baseline", required=True, help="source tree of the baseline commit (a git worktree)")
    ap.add_argument("--rounds", type=int, default=1, help="ABBA pairs")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    trees = {"baseline": str(Path(args.baseline).resolve()), "resumable": str(Path(__file__).resolve().parents[1])}
    n = args.shards * args.shard_size
    x, _ = _clustered(n, args.dim, 100, 0)
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    whole: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as root:
        built = Path(root) / "built"
        catalog = open_catalog(load_settings(home=built), migrate=True)
        t0 = time.perf_counter()
        build_index(catalog, "m", TableEncoder(x), ListSource(table_docs(0, n)), factory=args.factory,
                    shard_size=args.shard_size, progress=False)
        build_s = time.perf_counter() - t0
        step = round(1 / args.deleted)
        delete_items(catalog, "m", [f"d{i}" for i in range(0, n, step)])
        catalog.close()
        del x
        home = Path(root) / "run"

        def fresh() -> None:
            shutil.rmtree(home, ignore_errors=True)
            shutil.copytree(built, home)

        for name in ("baseline", "resumable", "resumable", "baseline") * args.rounds:
            fresh()
            killed_s = _killed(trees[name], home, args.kill_at)
            rerun = _child(CHILD, trees[name], str(home))
            runs[name].append({"killed_after_s": round(killed_s, 2), "rerun_s": round(rerun["seconds"], 2),
                               "resumed": rerun["resumed"], **_child(CHECK, trees[name], str(home), str(args.probe))})
            print(name, runs[name][-1], flush=True)
        for name, tree in trees.items():
            fresh()
            whole[name] = {**_child(CHILD, tree, str(home)), **_child(CHECK, tree, str(home), str(args.probe))}
            print(name, "uninterrupted", whole[name], flush=True)
    med = {name: statistics.median(r["rerun_s"] for r in rs) for name, rs in runs.items()}
    killed = {name: statistics.median(r["killed_after_s"] for r in rs) for name, rs in runs.items()}
    emit({"command": command_line(__file__, args), "vectors": n, "deleted": len(range(0, n, step)),
          "build_s": round(build_s, 1), "runs": runs, "uninterrupted": whole,
          "median_rerun_s": {k: round(v, 2) for k, v in med.items()},
          "rerun_ratio_resumable_over_baseline": round(med["resumable"] / med["baseline"], 3),
          "killed_plus_rerun_over_uninterrupted": {
              name: round((killed[name] + med[name]) / whole[name]["seconds"], 3) for name in trees}}, args.out)


if __name__ == "__main__":
    main()
