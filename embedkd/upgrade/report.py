"""Compatibility report: how an index built by v1 answers v2 queries, with and without adapters.

Matrix rows (query model / document vectors): v1/v1 (today), v2/v2 (a full reindex), raw v2 on v1
(same dimension only), v2 + each adapter on v1. Headline: the share of the reindex gain recovered,
(adapted - v1/v1) / (v2/v2 - v1/v1), meaningful where v2/v2 beats v1/v1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedkd.out_dir import output_folder

from .heldout import top_k

__all__ = [
    "compat_matrix",
    "compatibility_report",
    "load_beir_queries",
    "plot_matrix",
    "recovered_share",
    "retrieval_metrics",
]


def load_beir_queries(data: str | Path, split: str = "test") -> tuple[list[str], list[str], dict[str, dict[str, int]]]:
    """(query ids, query texts, qrels) of a BEIR folder's split (`embedkd.evaluation.load_labelled_queries`)."""
    from embedkd.evaluation.beir import load_labelled_queries

    queries, qrels = load_labelled_queries(data, split)
    return list(queries), list(queries.values()), qrels


def retrieval_metrics(ranked: np.ndarray, scores: np.ndarray | None, doc_ids: Sequence[str], qids: Sequence[str],
                      qrels: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """nDCG@10, recall@100 and MRR@10 of ranked corpus rows per query (`embedkd.evaluation`'s metrics)."""
    from embedkd.evaluation.metrics import METRICS
    from embedkd.evaluation.metrics import retrieval_metrics as run_metrics

    run = {qid: {doc_ids[j]: float(len(row) - r) for r, j in enumerate(row)} for qid, row in zip(qids, ranked)}
    judged = {q: dict(qrels[q]) for q in qids if q in qrels}
    means = run_metrics(run, judged)
    return {m: float(means[m]) for m in METRICS}


def recovered_share(adapted: float, v1: float, v2: float) -> float | None:
    """(adapted - v1) / (v2 - v1); None where v2 is not better than v1."""
    gap = v2 - v1
    return None if gap <= 1e-9 else float((adapted - v1) / gap)


def compat_matrix(doc_v1: np.ndarray, doc_v2: np.ndarray | None, q_v1: np.ndarray, q_v2: np.ndarray,
                  adapters: Mapping[str, Any], doc_ids: Sequence[str], qids: Sequence[str],
                  qrels: Mapping[str, Mapping[str, int]], k: int = 100) -> dict[str, Any]:
    """The compatibility matrix from arrays. `adapters` maps a name to an object with `.apply`."""
    rows: dict[str, dict[str, float]] = {"v1/v1": retrieval_metrics(top_k(q_v1, doc_v1, k), None, doc_ids, qids, qrels)}
    if doc_v2 is not None:
        rows["v2/v2"] = retrieval_metrics(top_k(q_v2, doc_v2, k), None, doc_ids, qids, qrels)
    if q_v2.shape[1] == doc_v1.shape[1]:
        rows["v2 raw/v1"] = retrieval_metrics(top_k(q_v2, doc_v1, k), None, doc_ids, qids, qrels)
    for name, adapter in adapters.items():
        rows[f"v2+{name}/v1"] = retrieval_metrics(top_k(adapter.apply(q_v2), doc_v1, k), None, doc_ids, qids, qrels)
    v1 = rows["v1/v1"]["ndcg@10"]
    out: dict[str, Any] = {"matrix": rows}
    if "v2/v2" in rows:
        v2 = rows["v2/v2"]["ndcg@10"]
        out["recovered"] = {name: recovered_share(r["ndcg@10"], v1, v2) for name, r in rows.items()
                            if name.startswith("v2+") or name == "v2 raw/v1"}
    return out


def plot_matrix(report: Mapping[str, Any], path: str | Path, title: str = "") -> Path:
    """Bar chart of nDCG@10 per row, v1/v1 and v2/v2 drawn as reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["matrix"]
    names = list(rows)
    values = [rows[n]["ndcg@10"] for n in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names)), 4.0))
    colors = ["#888888" if n in ("v1/v1", "v2/v2") else "#4477aa" for n in names]
    ax.bar(range(len(names)), values, color=colors)
    ax.axhline(rows["v1/v1"]["ndcg@10"], color="#cc3311", linestyle="--", linewidth=1, label="v1/v1 (today)")
    if "v2/v2" in rows:
        ax.axhline(rows["v2/v2"]["ndcg@10"], color="#009988", linestyle="--", linewidth=1, label="v2/v2 (reindex)")
    for i, v in enumerate(values):
        ax.text(i, v + 0.003, f"{v:.3f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    lo = min(values) - 0.05
    ax.set_ylim(max(0.0, lo), max(values) + 0.03)
    ax.set_ylabel("nDCG@10")
    ax.set_title(title or "query model / index vectors")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def compatibility_report(catalog, index_name: str, model: str, data: str, *, split: str = "test",
                         corpus: str | None = None, out_dir: str | Path = "docs", sample_docs: int | None = None,
                         seed: int = 0, encoder_for=None) -> dict[str, Any]:
    """Fit every adapter kind for the index (nothing registered), encode the whole corpus with v2 as a
    reindex would, and write the matrix as JSON and PNG under `out_dir`."""
    from indexer import store
    from indexer.catalog import get_index, items_by_faiss_ids

    from .fit import fit_from_pairs
    from .pairs import encode_pairs
    from .run import default_sample_docs, index_corpora, labelled_queries, load_sampled, sample_index, stored_vectors
    from .select import CANDIDATES

    out = output_folder(out_dir)  # both before the reindex-sized encoding, not after it
    qids, texts, qrels = labelled_queries(catalog, index_name, data, split)
    with catalog.session() as s:
        index = get_index(s, index_name)
        _ = index.model
        s.expunge(index)
    if encoder_for is None:
        from embedkd.text_encoder import load_text_encoder as encoder_for
    v1 = encoder_for(index.model.source)
    v2 = encoder_for(model)
    with index_corpora(catalog, index_name, corpus) as corpora:  # read twice while pinned: a sample, then all
        sample, index = sample_index(catalog, index_name, corpora, sample_docs or default_sample_docs(index.count), seed)
        docs = {d.id: str(d.content) for d in corpora}
    sample, index, faiss_index = load_sampled(catalog, index_name, sample)
    stored, as_indexed = stored_vectors(faiss_index, index.factory, sample.faiss_ids, seed=seed)
    pairs = encode_pairs(sample, getattr(v1, "encode_queries", v1), getattr(v2, "encode_queries", v2),
                         stored, v1_docs=v1, v2_docs=v2, seed=seed)
    outcome = fit_from_pairs(pairs, CANDIDATES, seed=seed, index_v1=as_indexed)
    faiss_ids = faiss_index.stored_ids()
    with catalog.session() as s:
        items = items_by_faiss_ids(s, index.id, faiss_ids.tolist())
        ext = {f: it.external_id for f, it in items.items()}
    doc_v1 = faiss_index.reconstruct(faiss_ids) if store.stores_exact_vectors(index.factory) else None
    doc_ids = [ext[int(f)] for f in faiss_ids]
    if doc_v1 is None:
        doc_v1 = v1([docs[d] for d in doc_ids])
    doc_v2 = v2([docs[d] for d in doc_ids])
    report = compat_matrix(doc_v1, doc_v2, getattr(v1, "encode_queries", v1)(texts),
                           getattr(v2, "encode_queries", v2)(texts),
                           {c.kind: c.adapter for c in outcome.candidates}, doc_ids, qids, qrels)
    report.update(index=index_name, model=v2.record.name, chosen=outcome.chosen.kind,
                  gate={"accepted": outcome.decision.accepted, "reason": outcome.decision.reason},
                  heldout={c.kind: c.figures for c in outcome.candidates})
    out.mkdir(parents=True, exist_ok=True)
    (out / f"upgrade_compat_{index_name}.json").write_text(json.dumps(report, indent=2))
    report["plot"] = str(plot_matrix(report, out / f"upgrade_compat_{index_name}.png",
                                     f"{index_name}: {Path(model).name} queries"))
    return report
