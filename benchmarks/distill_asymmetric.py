"""Mixed encoders: queries by one model, documents by another, on BEIR folders (exact search).

A student distilled with the default `cosine+kl` loss is trained into its teacher's embedding space,
so its vectors can meet the teacher's. This scores every (query model, document model) pair of
`--models` on each `--data` folder, nDCG@10 and Recall@100, with paired intervals against the teacher
(the first model) and against the student on both sides (`--student`, by default the second model):
a diagnostic of where a student loses, on its queries or on its documents (docs/distill.md,
"Documents by the student, queries by the teacher"):

    .venv/bin/python benchmarks/distill_asymmetric.py --models $M /tmp/asym/D0 prune:$M:3 \
        --data ../shared/data/scifact /tmp/unseen/faq --cache /tmp/asym/vec --speed 512 --out /tmp/asym.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from embedkd.evaluation.beir import load_beir
from embedkd.evaluation.compare import paired_comparison
from embedkd.evaluation.metrics import per_query_metrics, retrieval_metrics
from embedkd.evaluation.retrieval import exact_run
from embedkd.text_encoder import load_text_encoder


def vectors(model: str, texts: list[str], role: str, cache: Path, tag: str) -> np.ndarray:
    key = hashlib.sha256(f"{os.path.abspath(model) if os.path.exists(model) else model}|{role}|{tag}".encode()).hexdigest()[:16]
    path = cache / f"{key}.npy"
    if path.exists():
        return np.load(path)
    encoder = load_text_encoder(model)
    encode = getattr(encoder, "encode_queries", encoder) if role == "query" else encoder
    out = np.asarray(encode(texts), dtype=np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def speed(models: list[str], docs: list[str], queries: list[str], rounds: int = 3) -> dict:
    """Documents per second (batches as indexing encodes them) and milliseconds per single query, for
    each model; rounds interleave the models so machine noise falls on all of them alike (medians)."""
    encoders = {m: load_text_encoder(m) for m in models}
    for enc in encoders.values():  # first calls pay one-off setup
        enc(docs[:16])
        enc.encode_queries(queries[:2])
    doc_s: dict[str, list[float]] = {m: [] for m in models}
    query_ms: dict[str, list[float]] = {m: [] for m in models}
    for _ in range(rounds):
        for m, enc in encoders.items():
            t0 = time.perf_counter()
            enc(docs)
            doc_s[m].append(len(docs) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for q in queries:
                enc.encode_queries([q])
            query_ms[m].append(1000 * (time.perf_counter() - t0) / len(queries))
    return {m: {"docs_per_s": float(np.median(doc_s[m])), "ms_per_query": float(np.median(query_ms[m])),
                "documents": len(docs), "queries": len(queries), "rounds": rounds} for m in models}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", required=True, help="the teacher first, then students / prunes")
    ap.add_argument("--student", help="the model compared with (default: the second of --models)")
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--cache", default="/tmp/asym/vec")
    ap.add_argument("--speed", type=int, default=0, metavar="N",
                    help="also time N documents and N/4 single queries of the first --data folder per model")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    teacher, student = a.models[0], a.student or a.models[1]
    result: dict = {"models": a.models, "teacher": teacher, "student": student, "split": a.split, "data": {}}
    for root in a.data:
        t0 = time.time()
        data = load_beir(root, a.split)
        docs = list(data.corpus)
        qids = [q for q in data.queries if q in data.qrels]
        tag = hashlib.sha256(("\n".join(d.id for d in docs) + "|" + "\n".join(qids)).encode()).hexdigest()[:12]
        dv = {m: vectors(m, [d.content for d in docs], "document", Path(a.cache), tag) for m in a.models}
        qv = {m: vectors(m, [data.queries[q] for q in qids], "query", Path(a.cache), tag) for m in a.models}
        pairs, per_query = {}, {}
        for qm in a.models:
            for dm in a.models:
                if qv[qm].shape[1] != dv[dm].shape[1]:
                    continue
                run = exact_run([d.id for d in docs], dv[dm], qids, qv[qm], 100, True, data.qrels)
                name = f"q={qm} | d={dm}"
                pairs[name] = retrieval_metrics(run, data.qrels)
                pq = per_query_metrics(run, data.qrels)
                per_query[name] = np.array([pq.get(q, {}).get("ndcg@10", 0.0) for q in qids])
        ref = f"q={teacher} | d={teacher}"
        own = f"q={student} | d={student}"
        for name, metrics in pairs.items():
            metrics["share_of_teacher"] = metrics["ndcg@10"] / pairs[ref]["ndcg@10"]
            if name != ref:
                metrics["vs_teacher"] = paired_comparison(per_query[ref], per_query[name])
            if name != own:
                metrics["vs_student"] = paired_comparison(per_query[own], per_query[name])
        result["data"][root] = {"documents": len(docs), "queries": len(qids), "pairs": pairs,
                                "seconds": round(time.time() - t0, 1)}
        print(json.dumps({root: {n: round(m["ndcg@10"], 4) for n, m in pairs.items()}}, indent=1), flush=True)
    if a.speed:
        data = load_beir(a.data[0], a.split)
        rng = np.random.default_rng(0)
        docs = [d.content for d in data.corpus]
        docs = [docs[i] for i in rng.choice(len(docs), size=min(a.speed, len(docs)), replace=False)]
        queries = [data.queries[q] for q in list(data.queries)[: max(1, a.speed // 4)]]
        result["speed"] = speed(a.models, docs, queries)
        teacher_speed = result["speed"][teacher]
        for m, row in result["speed"].items():
            row["docs_vs_teacher"] = row["docs_per_s"] / teacher_speed["docs_per_s"]
            row["query_time_vs_teacher"] = row["ms_per_query"] / teacher_speed["ms_per_query"]
        print(json.dumps(result["speed"], indent=1), flush=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
