"""Index build, search and evaluation on a real SciFact slice with the real all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pytest

from embedkd.evaluation import evaluate_index, exact_run, load_beir, retrieval_metrics
from indexer import store
from indexer.build import add_documents, build_index, delete_items
from indexer.catalog import get_index
from indexer.corpus import Doc, ListSource, read_corpus
from indexer.errors import UserError
from indexer.search import Searcher

from .helpers import load_index


def _searcher(catalog, encoder):
    return Searcher(catalog, lambda _source: encoder)


def test_build_and_eval_match_plain_sentence_transformers(catalog, minilm, beir_small):
    data = load_beir(beir_small)
    out = build_index(catalog, "sf", minilm, read_corpus(beir_small), progress=False)
    assert out["count"] == sum(1 for _ in read_corpus(beir_small))
    ours = evaluate_index(_searcher(catalog, minilm), "sf", data)

    # Reference: plain SentenceTransformer.encode + exact FAISS inner product.
    docs = list(read_corpus(beir_small))
    dv = minilm.model.encode([d.content for d in docs], normalize_embeddings=True)
    qids = list(data.queries)
    qv = minilm.model.encode([data.queries[q] for q in qids], normalize_embeddings=True)
    ref = retrieval_metrics(exact_run([d.id for d in docs], dv, qids, qv), data.qrels)
    assert ours["queries"] == ref["queries"] > 0
    for key in ("ndcg@10", "recall@100", "mrr@10"):
        assert abs(ours[key] - ref[key]) < 1e-6, key
    assert ours["ndcg@10"] > 0.3  # a real model on real data retrieves relevant documents


def test_add_update_delete(sqlite_catalog, minilm, beir_small):
    docs = list(read_corpus(beir_small))
    build_index(sqlite_catalog, "inc", minilm, ListSource(docs[:30]), progress=False)
    changed = Doc(docs[0].id, "Zebrafish regenerate heart tissue after injury.", None)
    out = add_documents(sqlite_catalog, "inc", minilm, ListSource([changed, *docs[1:40]]), progress=False)
    assert (out["added"], out["updated"], out["unchanged"]) == (10, 1, 29)
    searcher = _searcher(sqlite_catalog, minilm)
    assert searcher.search("inc", ["zebrafish heart regeneration"], k=1)[0][0].id == docs[0].id
    new_doc = docs[35]
    assert searcher.search("inc", [new_doc.content], k=1)[0][0].id == new_doc.id

    out = delete_items(sqlite_catalog, "inc", [new_doc.id, docs[0].id])
    assert out["deleted"] == 2 and out["count"] == 38
    hits = searcher.search("inc", [new_doc.content], k=38)[0]
    assert len(hits) == 38 and new_doc.id not in {h.id for h in hits} and docs[0].id not in {h.id for h in hits}
    with sqlite_catalog.session() as s:
        index = get_index(s, "inc")
        assert index.count == 38 and index.generation == 3
    # Only the current generation's files remain: its manifest and the files it names (shard 0 as the build wrote
    # it, listing the changed document's old vector as deleted; shard 1, the add's, rewritten by the delete; the
    # empty template new shards are copied from).
    files = sorted(f.name for f in (sqlite_catalog.settings.index_dir / "inc").iterdir())
    assert files == ["inc.g1.s0.faiss", "inc.g1.template.faiss", "inc.g3.s1.faiss", "inc.g3.shards.json"]


@pytest.mark.parametrize("factory", ["HNSW16", "IVF4,Flat", "IVF4,PQ16x4"])
def test_other_factories_build_search_and_delete(sqlite_catalog, minilm, beir_small, factory):
    docs = list(read_corpus(beir_small))
    build_index(sqlite_catalog, "f", minilm, ListSource(docs), factory=factory, progress=False)
    searcher = _searcher(sqlite_catalog, minilm)
    top = searcher.search("f", [docs[3].content], k=5)[0]
    assert docs[3].id in {h.id for h in top}
    delete_items(sqlite_catalog, "f", [docs[3].id])  # listed as deleted: skipped
    assert docs[3].id not in {h.id for h in searcher.search("f", [docs[3].content], k=len(docs))[0]}
    delete_items(sqlite_catalog, "f", [docs[4].id], purge=True)  # both out of the file
    rows = searcher.search("f", [d.content for d in docs], k=len(docs))
    assert not {docs[3].id, docs[4].id} & {h.id for row in rows for h in row}
    if "PQ" not in factory:  # every other document still answers as itself (IVF once answered with the next id)
        assert [row[0].id for row in rows[5:]] == [d.id for d in docs[5:]]


def test_exact_vectors_read_back(sqlite_catalog, minilm, beir_small):
    docs = list(read_corpus(beir_small))[:12]
    build_index(sqlite_catalog, "v", minilm, ListSource(docs), progress=False)
    got = load_index(sqlite_catalog, "v").reconstruct(np.arange(12))
    np.testing.assert_allclose(got, minilm([d.content for d in docs]), atol=1e-5)
    assert store.stores_exact_vectors("HNSW32") and not store.stores_exact_vectors("IVF64,PQ16")


def test_ivf_with_too_few_documents_is_a_clear_error(sqlite_catalog, minilm, beir_small):
    docs = list(read_corpus(beir_small))[:10]
    with pytest.raises(UserError, match="needs at least 64 vectors"):
        build_index(sqlite_catalog, "tiny", minilm, ListSource(docs), factory="IVF64,Flat", progress=False)
    with sqlite_catalog.session() as s, pytest.raises(UserError):
        get_index(s, "tiny")
