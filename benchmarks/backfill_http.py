"""An index fed over HTTP, then upgraded to a new model by a backfill with no --corpus.

The index is built from a small seed file; everything else arrives at a real `embedkd serve` as HTTP writes
of 1 to 10 documents (new ones, then updates of some of their texts, then deletes). The server stopped, the
real CLI runs `upgrade backfill --dry-run` and then `upgrade backfill` to the 3-layer prune of the v1 model.
Then an index built from scratch with v2 from the documents the index should hold (as the script sent them)
is compared with the backfilled one: counts, and for each of `--queries` SciFact queries the overlap of their
top 10 (1.0: the backfill embedded each document as last written). Run it on each tree:

    benchmarks/backfill_http.py --out docs/backfill_http.json
    PYTHONPATH=/tmp/old benchmarks/backfill_http.py --out docs/backfill_http_before.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backfill_sources import _cli, _ok, _write, first_documents
from command import command_line, emit

HERE = Path(__file__).resolve().parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _feed(home: Path, rows: list[dict], args: argparse.Namespace) -> tuple[dict[str, str], dict]:
    """Start a server, write to it over HTTP, stop it; the documents the index should hold (id -> text)."""
    import httpx

    port = _port()
    env = {**os.environ, "EMBEDKD_HOME": str(home)}
    code = "import sys; from embedkd.cli.main import main; sys.argv[0] = 'embedkd'; sys.exit(main())"
    server = subprocess.Popen([sys.executable, "-c", code, "serve", "--port", str(port), "--compact-every", "0"],
                              env=env, stderr=subprocess.DEVNULL)
    held = {r["_id"]: r["text"] for r in rows[: args.seed_docs]}
    rng = random.Random(0)
    counts = {"requests": 0, "added": 0, "updated": 0, "deleted": 0}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    if c.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            t0, i = time.perf_counter(), args.seed_docs
            while i < len(rows):  # new documents, 1 to 10 a request
                part = rows[i : i + rng.randint(1, 10)]
                r = c.post("/indexes/web/documents", json={"documents": part})
                assert r.status_code == 200, r.text
                held.update({d["_id"]: d["text"] for d in part})
                counts["requests"] += 1
                counts["added"] += len(part)
                i += len(part)
            for doc_id in rng.sample(sorted(held), args.updates):  # texts changed, one request each
                text = held[doc_id] + " (revised)"
                assert c.post("/indexes/web/documents", json={"documents": [{"_id": doc_id, "text": text}]}).status_code == 200
                held[doc_id] = text
                counts["requests"] += 1
                counts["updated"] += 1
            for doc_id in rng.sample(sorted(held), args.deletes):
                assert c.delete(f"/indexes/web/items/{doc_id}").status_code == 200
                del held[doc_id]
                counts["requests"] += 1
                counts["deleted"] += 1
            counts["seconds"] = round(time.perf_counter() - t0, 1)
    finally:
        server.terminate()
        server.wait(60)
    return held, counts


def _overlaps(home: Path, model: str, queries: list[str]) -> list[float]:
    """For each query by `model`, the share of the backfilled index's top 10 that the fresh build's has."""
    from embedkd.text_encoder import load_text_encoder
    from indexer.context import open_catalog
    from indexer.search import Searcher
    from indexer.settings import load_settings

    catalog = open_catalog(load_settings(home=home))
    encoder = load_text_encoder(model, precision="fp32")
    vectors = encoder.encode_queries(queries)
    searcher = Searcher(catalog)
    web, fresh = (searcher.search_vectors(name, vectors, k=10, source_fingerprint=encoder.record.fingerprint)
                  for name in ("web", "fresh"))
    catalog.close()
    return [len({h.id for h in a} & {h.id for h in b}) / 10 for a, b in zip(web, fresh)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(HERE.parent.parent / "shared/data/scifact"))
    p.add_argument("--v1", default=None, help="v1 model (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--docs", type=int, default=2000)
    p.add_argument("--seed-docs", type=int, default=10, help="documents of the build's file; the rest over HTTP")
    p.add_argument("--updates", type=int, default=50)
    p.add_argument("--deletes", type=int, default=50)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    rows = first_documents(args)
    v2 = f"prune:{args.v1}:3"
    with open(Path(args.data) / "queries.jsonl") as fh:
        queries = [json.loads(line)["text"] for line in fh][: args.queries]
    import embedkd

    report: dict = {"command": command_line(__file__, args), "code": str(Path(embedkd.__file__).parent.parent)}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        seed = _write(Path(tmp) / "seed.jsonl", rows[: args.seed_docs])
        _ok(_cli(home, "index", "build", "--index", "web", "--model", args.v1, "--corpus", str(seed), "--json"))
        held, report["http"] = _feed(home, rows, args)
        dry = _cli(home, "upgrade", "backfill", "--index", "web", "--model", v2, "--dry-run", "--json")
        report["dry_run"] = {"exit": dry.returncode, "stdout": dry.stdout.strip().splitlines()[-1:][:1],
                             "stderr": dry.stderr.strip().splitlines()[-1:]}
        t0 = time.perf_counter()
        proc = _cli(home, "upgrade", "backfill", "--index", "web", "--model", v2, "--json")
        report["backfill"] = {"exit": proc.returncode, "seconds": round(time.perf_counter() - t0, 1)}
        if proc.returncode != 0:
            report["backfill"]["error"] = proc.stderr.strip().splitlines()[-1][:400]
        else:
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            report["backfill"].update(switched=out["switched"], count=out["count"], expected=len(held))
            fresh = _write(Path(tmp) / "fresh.jsonl", [{"_id": k, "text": v} for k, v in held.items()])
            t0 = time.perf_counter()
            _ok(_cli(home, "index", "build", "--index", "fresh", "--model", v2, "--corpus", str(fresh), "--json"))
            report["fresh_build_seconds"] = round(time.perf_counter() - t0, 1)
            overlaps = _overlaps(home, v2, queries)
            report["top10_overlap_with_fresh_v2_build"] = {"mean": round(sum(overlaps) / len(overlaps), 4),
                                                           "min": min(overlaps), "queries": len(overlaps)}
    emit(report, args.out)


if __name__ == "__main__":
    main()
