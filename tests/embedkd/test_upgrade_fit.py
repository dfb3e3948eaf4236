"""`fit_upgrade` end to end on a real catalog and FAISS index, with tiny deterministic numpy encoders."""

from __future__ import annotations

import hashlib
import json
import zlib

import numpy as np
import pytest

from embedkd.upgrade.run import fit_upgrade
from indexer.adapters import load_registered
from indexer.build import build_index
from indexer.context import open_catalog
from indexer.corpus import read_corpus
from indexer.encoder import ModelRecord
from indexer.errors import Conflict, UserError
from indexer.models import Adapter as AdapterRow
from indexer.settings import load_settings

WORDS = [f"w{i}" for i in range(300)]


class HashEncoder:
    """Bag of hashed words: each word a fixed random vector; optionally a fixed linear drift after."""

    def __init__(self, dim: int, seed: int, drift: np.ndarray | None = None) -> None:
        self.dim, self.seed, self.drift = dim, seed, drift
        tag = f"hash-{dim}-{seed}-{None if drift is None else drift.shape}"
        self.record = ModelRecord(name=tag, source=tag, dimension=dim if drift is None else drift.shape[1],
                                  fingerprint=hashlib.sha256(tag.encode()).hexdigest())

    def _word(self, w: str) -> np.ndarray:
        return np.random.default_rng(zlib.crc32(w.encode()) + self.seed).normal(size=self.dim)

    def __call__(self, texts):
        out = np.array([sum(self._word(w) for w in t.split()) for t in texts], dtype=np.float64)
        if self.drift is not None:
            out = out @ self.drift
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.astype(np.float32)


def _corpus(tmp_path, n: int):
    rng = np.random.default_rng(0)
    path = tmp_path / "corpus.jsonl"
    with open(path, "w") as fh:
        for i in range(n):
            sents = [" ".join(rng.choice(WORDS, 9)).capitalize() + "." for _ in range(4)]
            fh.write(json.dumps({"_id": f"d{i}", "title": " ".join(rng.choice(WORDS, 4)), "text": " ".join(sents)}) + "\n")
    return path


@pytest.fixture()
def catalog(tmp_path):
    cat = open_catalog(load_settings(home=tmp_path / "home"))
    yield cat
    cat.close()


def _build(catalog, tmp_path, n=80):
    path = _corpus(tmp_path, n)
    v1 = HashEncoder(32, 1)
    build_index(catalog, "idx", v1, read_corpus(path), progress=False)
    return path, v1


def test_fit_registers_and_routes(catalog, tmp_path):
    path, v1 = _build(catalog, tmp_path)
    drift = np.linalg.qr(np.random.default_rng(3).normal(size=(48, 48)))[0][:32]
    v2 = HashEncoder(32, 1, drift=drift)  # a 48-d model whose space is a rotated embedding of v1's
    res = fit_upgrade(catalog, "idx", "v2", "auto", corpus=str(path), sample_docs=60, v1_encoder=v1, v2_encoder=v2)
    assert res["accepted"], res["reason"]
    assert res["heldout"]["agree_adapted"] >= res["heldout"]["agree_v1"]
    # the gate's self-retrieval also searched the 20 index documents outside the sample
    assert res["counts"]["distractors"] == 20
    assert res["heldout"]["self_adapted_index"] >= res["heldout"]["self_v1_index"] - 0.005
    assert set(res["candidates"]) == {"procrustes", "affine", "low-rank", "mlp", "rank"}  # no mean-shift across dims
    with catalog.session() as s:
        rows = s.query(AdapterRow).all()
        assert len(rows) == 1 and rows[0].active and rows[0].kind == res["kind"]
        adapter = load_registered(catalog.settings.adapter_dir, rows[0])
    q = v2(["w1 w2 w3 w4"])
    assert adapter.apply(q).shape == (1, 32)
    np.testing.assert_allclose(adapter.apply(q) @ v1(["w1 w2 w3 w4"]).T, [[1.0]], atol=0.05)
    # a second fit deactivates the first; without --corpus it reads the path the build recorded
    res2 = fit_upgrade(catalog, "idx", "v2", "procrustes", sample_docs=80, v1_encoder=v1, v2_encoder=v2)
    with catalog.session() as s:
        active = [(r.id, r.kind) for r in s.query(AdapterRow).filter(AdapterRow.active.is_(True))]
    assert active == [(res2["adapter_id"], "procrustes")]


def test_gate_refuses_unrelated_model_and_registers_nothing(catalog, tmp_path):
    path, v1 = _build(catalog, tmp_path)
    other = HashEncoder(32, 99)  # same kind of model, unrelated space: no linear map exists
    res = fit_upgrade(catalog, "idx", "other", "procrustes", corpus=str(path), sample_docs=80, v1_encoder=v1,
                      v2_encoder=other)
    assert not res["accepted"] and "backfill" in res["reason"]
    with catalog.session() as s:
        assert s.query(AdapterRow).count() == 0


def test_bad_input(catalog, tmp_path):
    path, v1 = _build(catalog, tmp_path, n=30)
    v2 = HashEncoder(32, 1, drift=np.eye(32)[:, :16])
    with pytest.raises(Conflict, match="already"):
        fit_upgrade(catalog, "idx", "same", corpus=str(path), v1_encoder=v1, v2_encoder=v1)
    with pytest.raises(UserError, match="at least 50"):
        fit_upgrade(catalog, "idx", "v2", corpus=str(path), v1_encoder=v1, v2_encoder=v2)
    missing = tmp_path / "elsewhere.jsonl"
    with pytest.raises(UserError, match="corpus not found"):
        fit_upgrade(catalog, "idx", "v2", corpus=str(missing), v1_encoder=v1, v2_encoder=v2)
    with pytest.raises(UserError, match="unknown adapter kind"):
        fit_upgrade(catalog, "idx", "v2", "rotation", corpus=str(path), v1_encoder=v1, v2_encoder=v2)
    with pytest.raises(UserError, match="no index"):
        fit_upgrade(catalog, "nope", "v2", corpus=str(path), v1_encoder=v1, v2_encoder=v2)


def test_new_documents_through_the_adapter(catalog, tmp_path):
    from embedkd.upgrade.adapted_encoder import adapted_encoder_for_index
    from indexer.build import add_documents
    from indexer.corpus import Doc, ListSource
    from indexer.errors import NotFound
    from indexer.search import Searcher

    path, v1 = _build(catalog, tmp_path)
    drift = np.linalg.qr(np.random.default_rng(3).normal(size=(48, 48)))[0][:32]
    v2 = HashEncoder(32, 1, drift=drift)
    with pytest.raises(NotFound, match="no active adapter"):
        adapted_encoder_for_index(catalog, "idx", v2)
    fit_upgrade(catalog, "idx", "v2", "procrustes", corpus=str(path), sample_docs=80, v1_encoder=v1, v2_encoder=v2)
    enc = adapted_encoder_for_index(catalog, "idx", v2)
    assert enc.record.fingerprint == v1.record.fingerprint
    add_documents(catalog, "idx", enc, ListSource([Doc("new1", "w7 w8 w9 w10 w11 w12")]), progress=False)
    hits = Searcher(catalog).search_vectors("idx", v2(["w7 w8 w9 w10 w11 w12"]), k=1,
                                            source_fingerprint=v2.record.fingerprint)
    assert hits[0][0].id == "new1"


def test_score_map_for_a_linear_upgrade_routes_queries_and_new_documents(catalog, tmp_path):
    """v2 = v1 through a fixed linear map into 48-d: the score map ranks the stored v1 vectors as v2 ranks
    its own, is registered, routes v2 queries, and new documents added through its inverse map are found.
    (A non-orthogonal head would make v2 worse than v1 here, and the gate rightly refuses that.)"""
    from embedkd.upgrade.adapted_encoder import adapted_encoder_for_index
    from indexer.build import add_documents
    from indexer.corpus import Doc, ListSource
    from indexer.search import Searcher

    path, v1 = _build(catalog, tmp_path)
    head = np.linalg.qr(np.random.default_rng(4).normal(size=(48, 48)))[0][:32]
    v2 = HashEncoder(32, 1, drift=head)
    res = fit_upgrade(catalog, "idx", "v2", "score-map", corpus=str(path), sample_docs=80, v1_encoder=v1,
                      v2_encoder=v2)
    assert res["accepted"], res["reason"]
    assert res["kind"] == "score-map" and res["heldout"]["agree_adapted"] > 0.95
    docs = list(read_corpus(path))
    texts = [str(d.content) for d in docs]
    query = v2(["w1 w2 w3 w4 w5"])
    searcher = Searcher(catalog)
    hits = searcher.search_vectors("idx", query, k=5, source_fingerprint=v2.record.fingerprint)[0]
    reindex = np.argsort(-(v2(texts) @ query[0]))[:5]
    assert [h.id for h in hits][:3] == [docs[i].id for i in reindex[:3]]
    enc = adapted_encoder_for_index(catalog, "idx", v2)
    add_documents(catalog, "idx", enc, ListSource([Doc("new1", "w7 w8 w9 w10 w11 w12")]), progress=False)
    hits = searcher.search_vectors("idx", v2(["w7 w8 w9 w10 w11 w12"]), k=1, source_fingerprint=v2.record.fingerprint)
    assert hits[0][0].id == "new1"


def test_labelled_eval_data_is_checked(catalog, tmp_path):
    path, v1 = _build(catalog, tmp_path)
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    rows = [json.loads(line) for line in path.read_text().splitlines()[:20]]
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": r["title"]}) + "\n"
                                                for i, r in enumerate(rows)))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\t{r['_id']}\t1\n" for i, r in enumerate(rows)))
    drift = np.linalg.qr(np.random.default_rng(3).normal(size=(48, 48)))[0][:32]
    v2 = HashEncoder(32, 1, drift=drift)
    res = fit_upgrade(catalog, "idx", "v2", "procrustes", corpus=str(path), sample_docs=80, eval_data=str(beir),
                      v1_encoder=v1, v2_encoder=v2)
    ndcg = res["labelled_ndcg@10"]
    assert set(ndcg) == {"v1", "procrustes"} and ndcg["procrustes"] >= ndcg["v1"] - 0.005
    assert res["accepted"] and res["heldout"]["ndcg_adapted"] == ndcg["procrustes"]


def test_no_recorded_corpus(catalog, tmp_path):
    from indexer.corpus import Doc, ListSource

    v1 = HashEncoder(32, 1)
    build_index(catalog, "mem", v1, ListSource([Doc(f"d{i}", f"w{i} w{i + 1} w{i + 2}") for i in range(60)]),
                progress=False)
    with pytest.raises(UserError, match="--corpus"):
        fit_upgrade(catalog, "mem", "v2", v1_encoder=v1, v2_encoder=HashEncoder(32, 2))


@pytest.mark.parametrize("factory, exact", [("HNSW8", True), ("IVF4,Flat", True), ("IVF4,PQ4x4", False)])
def test_fit_reads_the_index_view_per_factory(catalog, tmp_path, factory, exact):
    path = _corpus(tmp_path, 80)
    v1 = HashEncoder(32, 1)
    build_index(catalog, "idx", v1, read_corpus(path), factory=factory, progress=False)
    drift = np.linalg.qr(np.random.default_rng(3).normal(size=(32, 32)))[0]
    v2 = HashEncoder(32, 1, drift=drift)
    res = fit_upgrade(catalog, "idx", "v2", "procrustes", corpus=str(path), sample_docs=60, v1_encoder=v1,
                      v2_encoder=v2)
    # exact indexes give their vectors back for the fit, PQ ones are re-encoded; the gate checks every
    # kind among the index's own view of the sample and of the 20 other documents (PQ: quantized)
    assert res["v1_vectors"] == ("index" if exact else "re-encoded")
    assert res["counts"]["distractors"] == 20
    assert res["heldout"]["self_adapted_index"] >= res["heldout"]["self_v1_index"] - 0.005
    assert res["accepted"], res["reason"]
