"""HNSW built from chunks of 4,096 (as `indexer.build` now adds a job's chunks) against one add of every
vector: build time and recall@10 against exact search, alternating, on random unit vectors (a hard case
for HNSW; what matters is the difference between the two).

    .venv/bin/python benchmarks/hnsw_chunked_add.py --n 60000 --out docs/hnsw_chunked_add.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    import faiss
    import numpy as np

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.choice(args.n, 500, replace=False)] + 0.05 * rng.standard_normal((500, args.dim)).astype(np.float32)
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(x)
    _, truth = exact.search(q, 10)
    runs: dict[str, list[dict]] = {"once": [], "chunks": []}
    for _ in range(args.rounds):
        for mode in runs:
            index = faiss.IndexIDMap2(faiss.index_factory(args.dim, "HNSW32", faiss.METRIC_INNER_PRODUCT))
            t0 = time.perf_counter()
            step = args.n if mode == "once" else 4096
            for s in range(0, args.n, step):
                index.add_with_ids(x[s : s + step], np.arange(s, min(args.n, s + step)))
            seconds = time.perf_counter() - t0
            faiss.downcast_index(index.index).hnsw.efSearch = 128
            _, found = index.search(q, 10)
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))
            runs[mode].append({"seconds": seconds, "recall@10": recall})
            print(mode, runs[mode][-1], flush=True)
    report = {"n": args.n, "dim": args.dim, "runs": runs,
              "command": f"benchmarks/hnsw_chunked_add.py --n {args.n} --dim {args.dim} --rounds {args.rounds}"}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
