"""IR metrics from pytrec_eval (trec_eval's definitions), as pure functions of a run and qrels."""

from __future__ import annotations

import pytrec_eval

__all__ = ["METRICS", "per_query_metrics", "retrieval_metrics"]

METRICS = ("ndcg@10", "recall@100", "mrr@10")


def per_query_metrics(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    """nDCG@10, Recall@100 and MRR@10 of every judged query (a query with no result scores 0)."""
    judged = {q: rel for q, rel in qrels.items() if rel}
    full = {q: {d: float(s) for d, s in run.get(q, {}).items()} for q in judged}
    per_q = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10", "recall.100"}).evaluate(full)
    # trec_eval's recip_rank has no cutoff: MRR@10 is recip_rank over each query's top 10.
    top10 = {q: dict(sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:10]) for q, docs in full.items()}
    rr = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(top10)
    return {q: {"ndcg@10": per_q.get(q, {}).get("ndcg_cut_10", 0.0),
                "recall@100": per_q.get(q, {}).get("recall_100", 0.0),
                "mrr@10": rr.get(q, {}).get("recip_rank", 0.0)} for q in judged}


def retrieval_metrics(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """nDCG@10, Recall@100 and MRR@10 averaged over the judged queries (a query with no result scores 0)."""
    per_q = per_query_metrics(run, qrels)
    n = len(per_q)
    if n == 0:
        return {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0, "queries": 0}
    out: dict[str, float] = {m: sum(v[m] for v in per_q.values()) / n for m in METRICS}
    out["queries"] = n
    return out
