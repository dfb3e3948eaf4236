"""`embedkd upgrade fit`: sample an index's content, encode with v1 and v2, fit, gate, register.

The index's documents are read from the corpora it was written from (`--corpus`, or the paths its build and
adds recorded; see `index_corpora`). Only documents that are in the index with the same content are used, so
their stored v1 vectors are the ones search compares against.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from embedkd.distill.log_queries import read_log_queries
from embedkd.evaluation.beir import check_judged_documents, load_labelled_queries, relevant_documents
from embedkd.evaluation.compare import standard_error
from indexer import jobs, store, text_log
from indexer.build import load_latest
from indexer.catalog import get_index, items_by_external_ids, items_by_faiss_ids
from indexer.context import Catalog
from indexer.corpus import Corpora, DocSource
from indexer.errors import Conflict, UserError
from indexer.hashing import sha256_text

from .fit import MIN_DOCS, FitOutcome, blend_candidates, choose_by_labels, fit_from_pairs, selection_score
from .gate import GateDecision
from .pairs import PairedVectors, Sample, encode_pairs, reservoir_sample
from .register import register_adapter
from .select import CANDIDATES, KINDS, Candidate

__all__ = ["DEFAULT_SAMPLE_DOCS", "default_sample_docs", "distractor_ids", "fit_upgrade", "index_corpora",
           "labelled_blend", "labelled_per_query", "sample_index", "stored_vectors"]

log = logging.getLogger(__name__)
DEFAULT_SAMPLE_DOCS = 2000
MAX_DISTRACTORS = 20_000  # other index documents the gate's self-retrieval searches among


def default_sample_docs(index_count: int) -> int:
    """0.5% of the index, at least 250 and at most 2,000 documents. A sampled document costs about
    four documents' encoding (its pieces through both models, itself through v2), so 0.5% keeps the fit
    near 1/50 of a reindex from ~50,000 documents on; on SciFact 250 documents gave nDCG@10 within
    0.003 of 2,000."""
    return int(min(DEFAULT_SAMPLE_DOCS, max(250, index_count // 200)))


@contextmanager
def index_corpora(catalog: Catalog, index_name: str, given: str | Sequence[str] | None = None,
                  pin_into: Path | None = None) -> Iterator[Corpora]:
    """The files the index's documents were written from, while the caller reads them, newest first (so a
    document is read as its latest write has it): the texts the service kept of those written over HTTP, pinned
    (`indexer.text_log.pinned`; into `pin_into`, else a private folder removed after), and the given paths,
    else every path its build and its adds recorded that still exists."""
    given = [given] if isinstance(given, str) else list(given or [])
    recorded = [] if given else jobs.sources(catalog, index_name)
    with text_log.pinned(catalog, index_name, pin_into) as kept:
        recorded += [(text_log.stamp(p), str(p)) for p in kept]
        newest_first = list(dict.fromkeys(p for _, p in sorted(recorded, reverse=True)))
        found = [p for p in newest_first if Path(p).exists()] + given
        if not found and newest_first:
            raise UserError(
                f"cannot find the documents of index {index_name!r}: the files they came from are not here ("
                f"{', '.join(newest_first[:3])}{', ...' * (len(newest_first) > 3)}: moved, or another machine); pass "
                "them with --corpus PATH (repeatable), or export the index with --with-corpora where they are"
            )
        if not found:
            raise UserError(
                f"cannot find the documents of index {index_name!r} (the catalog keeps no path to its corpus); "
                "pass the corpus it was built from with --corpus PATH"
            )
        yield Corpora(list(dict.fromkeys(found)))


def sample_index(catalog: Catalog, index_name: str, corpus: DocSource, size: int, seed: int = 0) -> tuple[Sample, Any]:
    """Sample up to `size` documents of the corpus that the index holds with the same content.
    Returns the sample and the index row."""
    with catalog.session() as s:
        index = get_index(s, index_name)
        _ = index.model
        s.expunge(index)
    candidates = reservoir_sample(corpus, int(size * 1.25) + 10, seed)
    with catalog.session() as s:
        items = items_by_external_ids(s, index.id, [d.id for d in candidates])
        known = {k: (v.faiss_id, v.content_hash) for k, v in items.items()}
    docs = [d for d in candidates if d.id in known and known[d.id][1] == sha256_text(str(d.content))][:size]
    titles = [(d.info or {}).get("title") for d in docs]
    sample = Sample([d.id for d in docs], [str(d.content) for d in docs], titles,
                    np.array([known[d.id][0] for d in docs], dtype=np.int64))
    return sample, index


def load_sampled(catalog: Catalog, index_name: str, sample: Sample) -> tuple[Sample, Any, Any]:
    """The index's row and files as they are now, and `sample` cut to the documents it still holds as sampled: a
    write that committed while `sample_index` read the corpus (minutes, for a large one) replaced the generation
    it saw, and deleted its files."""
    index, faiss_index = load_latest(catalog, index_name)
    held = np.isin(sample.faiss_ids, faiss_index.stored_ids())
    if not held.all():
        sample = Sample([i for i, h in zip(sample.ids, held) if h], [t for t, h in zip(sample.texts, held) if h],
                        [t for t, h in zip(sample.titles, held) if h], sample.faiss_ids[held])
    return sample, index, faiss_index


def distractor_ids(faiss_index: Any, faiss_ids: np.ndarray, distractors: int = MAX_DISTRACTORS,
                   seed: int = 0) -> np.ndarray:
    """Ids of up to `distractors` stored vectors outside the sample, sorted: what the gate's queries
    search among besides the sample, as search would."""
    others = np.setdiff1d(faiss_index.stored_ids(), faiss_ids)
    if len(others) > distractors:
        others = np.sort(np.random.default_rng(seed).choice(others, distractors, replace=False))
    return others


def stored_vectors(faiss_index: Any, factory: str, faiss_ids: np.ndarray, others: np.ndarray | None = None,
                   seed: int = 0) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(the sample's v1 vectors where the index stores them exactly, else None; the index's view of
    its documents for the gate: the sample's vectors as search sees them, then those of `others`
    (default: `distractor_ids`), or None where the index cannot give vectors back). A PQ/SQ index
    gives back its quantized vectors, which is what search scores against, so the gate checks them;
    the fit itself needs exact vectors and re-encodes the sample there."""
    if others is None:
        others = distractor_ids(faiss_index, faiss_ids, seed=seed)
    try:
        as_indexed = faiss_index.reconstruct(np.concatenate([faiss_ids, others]))
    except RuntimeError:  # an index type FAISS cannot reconstruct from: the gate checks the sample alone
        log.info("a %s index cannot give its vectors back; the gate's self-retrieval uses the sample alone",
                 factory)
        as_indexed = None
    exact = store.stores_exact_vectors(factory) and as_indexed is not None
    return (as_indexed[: len(faiss_ids)] if exact else None), as_indexed


def _encode_fn(encoder, queries: bool):
    return encoder.encode_queries if queries and hasattr(encoder, "encode_queries") else encoder


def labelled_queries(catalog: Catalog, index_name: str, eval_data: str, split: str = "test",
                     split_option: str = "--split") -> tuple[list[str], list[str], dict]:
    """(ids, texts, qrels) of `eval_data`'s queries of `split`, read before any encoding; their judged documents
    must be in the index (by id), or every figure of the labelled check would be a silent 0."""
    queries, qrels = load_labelled_queries(eval_data, split, split_option)
    with catalog.session() as s:
        present = set(items_by_external_ids(s, get_index(s, index_name).id, relevant_documents(qrels)))
    check_judged_documents(Path(eval_data) / "qrels" / f"{split}.tsv", qrels, present, corpus=f"index {index_name!r}")
    return list(queries), list(queries.values()), qrels


def labelled_per_query(catalog: Catalog, index: Any, faiss_index: Any, qids: list[str],
                       qrels: dict[str, dict[str, int]], vectors: dict[str, np.ndarray],
                       k: int = 100) -> dict[str, np.ndarray]:
    """nDCG@10 of each labelled query (in `qids` order) searched in the index (`faiss_index`, loaded) with
    each named set of query vectors (v1's, or v2's through an adapter): per query, for paired comparisons."""
    import pytrec_eval

    out = {}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})
    for name, q in vectors.items():
        scores, ids = faiss_index.search(np.ascontiguousarray(q, np.float32), k)
        with catalog.session() as s:
            items = {f: it.external_id for f, it in
                     items_by_faiss_ids(s, index.id, np.unique(ids[ids >= 0]).tolist()).items()}
        run = {qid: {items[int(f)]: float(sc) for f, sc in zip(ids[i], scores[i], strict=True) if int(f) in items}
               for i, qid in enumerate(qids)}
        res = evaluator.evaluate(run)
        out[name] = np.array([res[q]["ndcg_cut_10"] for q in qids if q in res])
    return out


def labelled_blend(outcome: FitOutcome, per_query: dict[str, np.ndarray],
                   score: Callable[[list[Candidate]], dict[str, np.ndarray]]) -> tuple[Candidate, GateDecision]:
    """The kind best on the labelled queries (`per_query`: nDCG@10 per query of "v1" and each candidate),
    blended with v1's query at each weight (`fit.blend_candidates`; `score` gives their per-query nDCG@10,
    added to `per_query`), chosen and gated on the same queries (`gate.decide`: clearly above v1). Where
    the labelled check accepted a plain adapter (`outcome.chosen`), the blend must also be clearly above
    that one: it costs a second encoding of every query."""
    base = max(outcome.candidates, key=lambda c: per_query[c.kind].mean())
    blends = blend_candidates(base, outcome.check, *outcome.heldout_queries)
    per_query.update(score(blends))
    means = {name: float(v.mean()) for name, v in per_query.items()}
    gain_se = {c.kind: standard_error(per_query[c.kind] - per_query["v1"]) for c in blends}
    chosen, decision = choose_by_labels(blends, means, gain_se=gain_se)
    rival = outcome.chosen if outcome.decision.accepted else None
    if decision.accepted and rival is not None:
        gain, se = means[chosen.kind] - means[rival.kind], standard_error(per_query[chosen.kind] - per_query[rival.kind])
        if gain <= 2 * se:
            decision = GateDecision(False, f"the best blend is not clearly above the {rival.kind} adapter on the "
                                           f"labelled queries (nDCG@10 +{gain:.4f}, standard error {se:.4f})")
    return chosen, decision


def fit_upgrade(catalog: Catalog, index_name: str, model: str, kind: str = "auto", *, corpus: str | Sequence[str] | None = None,
                sample_docs: int | None = None, queries: str | None = None, eval_data: str | None = None,
                eval_split: str = "test", seed: int = 0, activate: bool = True, encoder_for: Callable[[str], Any] | None = None,
                v1_encoder: Any = None, v2_encoder: Any = None, blend: bool = True) -> dict[str, Any]:
    """Fit, check and (when the gate accepts) register an adapter from `model` into the index's space.

    Returns the held-out figures; `accepted` False with `reason` when the gate refuses (nothing is
    registered then). `encoder_for(source)` loads a model (default `load_text_encoder`);
    `v1_encoder` / `v2_encoder` (callables with `.record`) replace loading, for library use and tests.
    `blend` (with `eval_data` only): also try v1's query blended with a share of the mapped one
    (`labelled_blend`), kept only when clearly better; False when v1 will not be served any more.
    """
    if encoder_for is None:
        from embedkd.text_encoder import load_text_encoder as encoder_for

    if kind != "auto" and kind not in KINDS:
        raise UserError(f"unknown adapter kind {kind!r}; use one of auto, {', '.join(KINDS)}")
    if sample_docs is not None and sample_docs < MIN_DOCS:
        raise UserError(f"--sample-docs {sample_docs} is too few: an adapter needs at least {MIN_DOCS} documents "
                        "(the default samples 0.5% of the index, 250 to 2,000)")
    # a bad log or bad labelled data fails before any encoding
    logged = read_log_queries(queries) if queries else None
    labelled_data = labelled_queries(catalog, index_name, eval_data, eval_split, "--eval-split") if eval_data else None
    t_start = time.perf_counter()
    with catalog.session() as s:
        index = get_index(s, index_name)
        v1_source, v1_fp, n_index = index.model.source, index.model.fingerprint, index.count
    v2 = v2_encoder or encoder_for(model)
    if v2.record.fingerprint == v1_fp:
        raise Conflict(f"index {index_name!r} was built with this model already; no upgrade or adapter is needed")
    sample_docs = sample_docs or default_sample_docs(n_index)
    with index_corpora(catalog, index_name, corpus) as path:
        sample, _ = sample_index(catalog, index_name, path, sample_docs, seed)
    # read (and checksummed) once: the gate's vectors and the labelled check both come from it
    sample, index, faiss_index = load_sampled(catalog, index_name, sample)
    if len(sample.ids) < MIN_DOCS:
        raise UserError(
            f"only {len(sample.ids)} documents of {path} are in index {index_name!r} with unchanged content; "
            f"an adapter needs at least {MIN_DOCS}: pass the corpus the index was built from"
        )
    v1 = v1_encoder or encoder_for(v1_source)
    if v1.record.fingerprint != v1_fp:
        raise Conflict(
            f"the index's model at {v1_source} no longer has the weights the index was built with; "
            "an adapter needs that model to encode query-like pieces"
        )
    stored, as_indexed = stored_vectors(faiss_index, index.factory, sample.faiss_ids, seed=seed)
    if not eval_data:
        faiss_index = None  # not held through the encoding when the labelled check will not search it
    log.info("sampled %d documents of %s; v1 document vectors %s", len(sample.ids), path,
             "read from the index" if stored is not None else "re-encoded (the index does not store them exactly)")
    pairs: PairedVectors = encode_pairs(sample, _encode_fn(v1, True), _encode_fn(v2, True), stored,
                                        v1_docs=v1, v2_docs=v2, seed=seed)
    extra = None
    if logged:
        extra = (_encode_fn(v2, True)(logged), _encode_fn(v1, True)(logged))
        if not eval_data:  # measured: docs/upgrade.md, "A larger query log"
            log.warning("fitting on a query log without labelled queries: the label-free check cannot tell whether "
                        "the log helps new queries (4,000 logged queries made the rank adapter worse on new ones "
                        "while its held-out figures rose); add --eval-data BEIR_DIR to check on real queries")
    kinds = CANDIDATES if kind == "auto" else (kind,)
    log.info("encoded %d pieces with both models in %.1fs; fitting %s", len(pairs.pieces),
             sum(pairs.seconds.values()), ", ".join(kinds))
    outcome: FitOutcome = fit_from_pairs(pairs, kinds, seed=seed, extra_pairs=extra, index_v1=as_indexed)
    labelled, blend_result = None, None
    if labelled_data:
        qids, texts, qrels = labelled_data
        lq1, lq2 = _encode_fn(v1, True)(texts), _encode_fn(v2, True)(texts)

        def score(candidates: list[Candidate]) -> dict[str, np.ndarray]:
            return labelled_per_query(catalog, index, faiss_index, qids, qrels,
                                      {c.kind: c.adapter.apply(lq2, lq1) for c in candidates})

        per_query = {**labelled_per_query(catalog, index, faiss_index, qids, qrels, {"v1": lq1}),
                     **score(outcome.candidates)}
        outcome.chosen, outcome.decision = choose_by_labels(
            outcome.candidates, {name: float(v.mean()) for name, v in per_query.items()})
        if blend:  # v1's query plus a share of the mapped one, where the labels say it is clearly better
            chosen, decision = labelled_blend(outcome, per_query, score)
            blend_result = {"kind": chosen.kind, "accepted": decision.accepted, "reason": decision.reason}
            if decision.accepted:
                outcome.chosen, outcome.decision = chosen, decision
                outcome.candidates.append(chosen)
        labelled = {name: float(v.mean()) for name, v in per_query.items()}
    seconds = time.perf_counter() - t_start
    docs_v2_seconds = pairs.seconds.get("encode_docs_v2", 0.0)
    reindex_estimate = docs_v2_seconds / max(1, len(sample.ids)) * n_index
    chosen = outcome.chosen
    result: dict[str, Any] = {
        "index": index_name,
        "model": v2.record.name,
        "kind": chosen.kind,
        "accepted": outcome.decision.accepted,
        "reason": outcome.decision.reason,
        "heldout": {**outcome.baseline, **chosen.figures},
        "candidates": {c.kind: {**{k: round(v, 4) for k, v in c.figures.items()},
                                "score": round(selection_score(c.figures), 4), "fit_seconds": round(c.fit_seconds, 3)}
                       for c in outcome.candidates},
        "counts": outcome.counts,
        "adapter": {"parameters": chosen.adapter.parameters, "bytes": chosen.adapter.nbytes,
                    "source_dim": chosen.adapter.source_dim, "target_dim": chosen.adapter.target_dim,
                    "info": chosen.adapter.info},
        "seconds": {"total": round(seconds, 2), "fit": round(outcome.fit_seconds, 2),
                    **{k: round(v, 2) for k, v in pairs.seconds.items()},
                    "reindex_estimate": round(reindex_estimate, 2)},
        "v1_vectors": "index" if stored is not None else "re-encoded",
        # a blend also encodes every query with the index's model: say so where the user reads the result
        "query_models": [v2.record.name, v1.record.name] if chosen.adapter.needs_index_queries else [v2.record.name],
        # label-free figures cannot see a v2 that is worse than v1 for real queries (docs/upgrade.md, "A second seed")
        "checked": f"labelled queries (nDCG@10 on the {eval_split} split of --eval-data)" if eval_data else
                   "label-free only (held-out pieces of the index's documents); it cannot show whether the new model "
                   "is better than v1 for real queries here: --eval-data BEIR_DIR with a few hundred labelled queries "
                   "checks that",
    }
    if labelled is not None:
        result["labelled_ndcg@10"] = labelled
    if blend_result is not None:
        result["blend"] = blend_result
    if outcome.decision.accepted:
        metrics = {k: v for k, v in result.items() if k in ("heldout", "candidates", "counts", "seconds", "checked")}
        if labelled is not None:
            metrics["labelled_ndcg@10"] = labelled
        result.update(register_adapter(catalog, index_name, chosen.adapter, v2.record, metrics, activate=activate))
    return result
