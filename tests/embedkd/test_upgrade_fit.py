"""`fit_upgrade` end to end on a real catalog and FAISS index, with tiny deterministic numpy encoders."""

from __future__ import annotations

import hashlib
import json
import re
import zlib

import numpy as np
import pytest

from embedkd.upgrade.run import fit_upgrade
from indexer.adapters import load_registered
from indexer.build import add_documents, build_index
from indexer.context import open_catalog
from indexer.corpus import Doc, ListSource, read_corpus
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
    assert res["checked"].startswith("label-free") and "--eval-data" in res["checked"]
    assert res["heldout"]["agree_adapted"] >= res["heldout"]["agree_v1"]
    # the gate's self-retrieval also searched the 20 index documents outside the sample
    assert res["counts"]["distractors"] == 20
    assert res["heldout"]["self_adapted_index"] >= res["heldout"]["self_v1_index"] - 0.005
    assert set(res["candidates"]) == {"procrustes", "affine", "low-rank", "mlp", "rank"}  # no mean-shift across dims
    with catalog.session() as s:
        rows = s.query(AdapterRow).all()
        assert len(rows) == 1 and rows[0].active and rows[0].kind == res["kind"]
        assert rows[0].metrics["checked"] == res["checked"]  # how the gate checked it stays with the adapter
        adapter = load_registered(catalog.settings.adapter_dir, rows[0])
    q = v2(["w1 w2 w3 w4"])
    assert adapter.apply(q).shape == (1, 32)
    np.testing.assert_allclose(adapter.apply(q) @ v1(["w1 w2 w3 w4"]).T, [[1.0]], atol=0.05)
    # a second fit deactivates the first; without --corpus it reads the path the build recorded
    res2 = fit_upgrade(catalog, "idx", "v2", "procrustes", sample_docs=80, v1_encoder=v1, v2_encoder=v2)
    with catalog.session() as s:
        active = [(r.id, r.kind) for r in s.query(AdapterRow).filter(AdapterRow.active.is_(True))]
    assert active == [(res2["adapter_id"], "procrustes")]


def test_a_service_loads_only_registered_query_models(catalog, tmp_path):
    """`embedkd serve` (registered_query_models_only): a query model a client names is loaded only if the index
    was built with it or an active adapter maps it in; before, any name was loaded (a hub download, a path)."""
    from indexer.errors import NotFound
    from indexer.search import Searcher

    path, v1 = _build(catalog, tmp_path)
    drift = np.linalg.qr(np.random.default_rng(3).normal(size=(48, 48)))[0][:32]
    v2 = HashEncoder(32, 1, drift=drift)
    assert fit_upgrade(catalog, "idx", "v2", "procrustes", corpus=str(path), sample_docs=60, v1_encoder=v1,
                       v2_encoder=v2)["accepted"]
    loaded: list[str] = []
    encoders = {v1.record.source: v1, v2.record.source: v2}

    def load(source: str):
        loaded.append(source)
        return encoders[source]

    service = Searcher(catalog, load, registered_query_models_only=True)
    with pytest.raises(NotFound, match="query model 'elsewhere' has no active adapter .*" + re.escape(repr(v2.record.source))):
        service.search("idx", ["w1 w2"], k=3, query_model="elsewhere")
    assert loaded == []
    routed = service.search("idx", ["w1 w2 w3"], k=3, query_model=v2.record.source)[0]
    own = service.search("idx", ["w1 w2 w3"], k=3, query_model=v1.record.source)[0]
    assert routed[0].id == own[0].id and sorted(loaded) == sorted(encoders)
    # the library and the CLI still load what they are given (the user names it, not a client)
    with pytest.raises(KeyError):
        Searcher(catalog, load).search("idx", ["w1"], k=3, query_model="elsewhere")


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
    # the user's own setting is named, not the corpus (it said: pass the corpus the index was built from)
    with pytest.raises(UserError, match="--sample-docs 3 is too few: an adapter needs at least 50"):
        fit_upgrade(catalog, "idx", "v2", corpus=str(path), sample_docs=3, v1_encoder=v1, v2_encoder=v2)
    with pytest.raises(UserError, match="--queries .*: is a folder"):  # was a traceback, after the encoding
        fit_upgrade(catalog, "idx", "v2", corpus=str(path), queries=str(tmp_path), v1_encoder=v1, v2_encoder=v2)
    with catalog.session() as s:
        assert s.query(AdapterRow).count() == 0


def test_new_documents_through_the_adapter(catalog, tmp_path):
    from embedkd.upgrade.adapted_encoder import adapted_encoder_for_index
    from indexer.build import add_documents
    from indexer.corpus import Doc, ListSource
    from indexer.errors import NotFound
    from indexer.search import Searcher

    path, v1 = _build(catalog, tmp_path)
    drift = np.linalg.qr(np.random.default_rng(3).normal(size=(48, 48)))[0][:32]
    v2 = HashEncoder(32, 1, drift=drift)
    name = re.escape(v2.record.source)  # the error names the model and the command to run with it
    with pytest.raises(NotFound, match=rf"query model '{name}' has no active adapter.*--index idx --model {name}`"):
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


def _labelled(tmp_path, path):
    """A BEIR folder whose queries are the first 20 documents' titles, each relevant to its document."""
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in path.read_text().splitlines()[:20]]
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": r["title"]}) + "\n"
                                                for i, r in enumerate(rows)))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\t{r['_id']}\t1\n" for i, r in enumerate(rows)))
    return beir


def test_labelled_eval_data_is_checked(catalog, tmp_path):
    path, v1 = _build(catalog, tmp_path)
    beir = _labelled(tmp_path, path)
    drift = np.linalg.qr(np.random.default_rng(3).normal(size=(48, 48)))[0][:32]
    v2 = HashEncoder(32, 1, drift=drift)
    res = fit_upgrade(catalog, "idx", "v2", "procrustes", corpus=str(path), sample_docs=80, eval_data=str(beir),
                      v1_encoder=v1, v2_encoder=v2)
    ndcg = res["labelled_ndcg@10"]
    assert ndcg["procrustes"] >= ndcg["v1"] - 0.005
    assert res["accepted"] and res["kind"] == "procrustes" and res["heldout"]["ndcg_adapted"] == ndcg["procrustes"]
    assert res["checked"].startswith("labelled queries")
    # blends were scored too, and none is clearly better than an exact map: the plain one needs no v1 query
    assert sorted(k for k in ndcg if k.startswith("procrustes+v1@")) == [f"procrustes+v1@0.{i}" for i in range(1, 10)]
    assert res["query_models"] == [v2.record.name]


class CountingEncoder(HashEncoder):
    """HashEncoder that counts the texts it encodes: bad labelled data must fail before any encoding."""

    encoded = 0

    def __call__(self, texts):
        CountingEncoder.encoded += len(texts)
        return super().__call__(texts)


def test_bad_labelled_data_fails_before_any_encoding(catalog, tmp_path):
    """Read at the end of the fit, a folder without queries.jsonl was a FileNotFoundError traceback after
    minutes of encoding; qrels naming none of the index's documents made every labelled figure a silent 0."""
    path, v1 = _build(catalog, tmp_path)
    beir = _labelled(tmp_path, path)
    v2 = CountingEncoder(32, 2)
    CountingEncoder.encoded = 0

    def fit(**kw):
        return fit_upgrade(catalog, "idx", "v2", "procrustes", corpus=str(path), sample_docs=80, eval_data=str(beir),
                           v1_encoder=v1, v2_encoder=v2, activate=False, **kw)

    (beir / "qrels" / "test.tsv").rename(beir / "qrels" / "dev.tsv")
    with pytest.raises(UserError, match=r"has no qrels for split 'test' \(has: dev\); pick one with --eval-split"):
        fit()
    text = (beir / "qrels" / "dev.tsv").read_text()
    (beir / "qrels" / "dev.tsv").write_text(re.sub(r"\td(\d+)\t", r"\tother-\1\t", text))
    with pytest.raises(UserError, match=r"none of the 20 documents judged relevant in .*dev.tsv is in index 'idx'"):
        fit(eval_split="dev")
    (beir / "queries.jsonl").unlink()
    with pytest.raises(UserError, match="has no queries.jsonl"):
        fit()
    assert CountingEncoder.encoded == 0
    (beir / "qrels" / "dev.tsv").write_text(text)
    _labelled(tmp_path, path)  # queries.jsonl back
    res = fit(eval_split="dev")
    assert res["checked"] == "labelled queries (nDCG@10 on the dev split of --eval-data)" and CountingEncoder.encoded > 0


def test_query_log_is_fitted_and_unchecked_use_is_flagged(catalog, tmp_path, caplog):
    path, v1 = _build(catalog, tmp_path)
    drift = np.linalg.qr(np.random.default_rng(3).normal(size=(48, 48)))[0][:32]
    v2 = HashEncoder(32, 1, drift=drift)
    log_file = tmp_path / "queries.txt"
    log_file.write_text("w1 w2 w3\n\nw4 w5 w6 w7\nw8 w9\n")  # blank lines are not queries
    base = fit_upgrade(catalog, "idx", "v2", "procrustes", corpus=str(path), sample_docs=60, v1_encoder=v1,
                       v2_encoder=v2, activate=False)
    caplog.set_level("WARNING", logger="embedkd.upgrade.run")
    res = fit_upgrade(catalog, "idx", "v2", "procrustes", corpus=str(path), sample_docs=60, v1_encoder=v1,
                      v2_encoder=v2, queries=str(log_file), activate=False)
    assert res["accepted"] and res["counts"]["fit_pairs"] == base["counts"]["fit_pairs"] + 3
    assert any("--eval-data" in r.getMessage() for r in caplog.records)
    caplog.clear()
    fit_upgrade(catalog, "idx", "v2", "procrustes", corpus=str(path), sample_docs=60, v1_encoder=v1, v2_encoder=v2,
                queries=str(log_file), eval_data=str(_labelled(tmp_path, path)), activate=False)
    assert not any("--eval-data" in r.getMessage() for r in caplog.records)


def test_labelled_refusal_tries_blends_and_registers_nothing(catalog, tmp_path):
    path, v1 = _build(catalog, tmp_path)
    other = HashEncoder(32, 99)  # unrelated space: every map is far below v1 on the labelled queries
    res = fit_upgrade(catalog, "idx", "other", "procrustes", corpus=str(path), sample_docs=80,
                      eval_data=str(_labelled(tmp_path, path)), v1_encoder=v1, v2_encoder=other)
    blends = [k for k in res["labelled_ndcg@10"] if k.startswith("procrustes+v1@")]
    assert len(blends) == 9 and not res["accepted"]  # tried at every weight, none clearly above v1
    assert not res["blend"]["accepted"] and "not clearly above v1" in res["blend"]["reason"]
    with catalog.session() as s:
        assert s.query(AdapterRow).count() == 0
    res = fit_upgrade(catalog, "idx", "other", "procrustes", corpus=str(path), sample_docs=80,
                      eval_data=str(_labelled(tmp_path, path)), v1_encoder=v1, v2_encoder=other, blend=False)
    assert not any("+v1@" in k for k in res["labelled_ndcg@10"])


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


def _unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def _two_views(own: float = 0.8, n: int = 300, d: int = 24, seed: int = 0):
    """Two unrelated models of the same topics: each document and its pieces share a topic, and a
    model-specific part (the model's own view of that document) that the other model lacks. A map from
    v2 cannot recover v1's part, so pieces mapped from v2 find their own documents among v1's vectors
    worse than v1's pieces do, while v2 still knows which documents share a topic."""
    from embedkd.upgrade.pairs import PairedVectors
    from embedkd.upgrade.sampling import Piece

    rng = np.random.default_rng(seed)
    topic, e1, e2 = rng.normal(size=(n, d)), rng.normal(size=(n, d)), rng.normal(size=(n, d))
    rot = np.linalg.qr(rng.normal(size=(d, d)))[0]
    owner = np.repeat(np.arange(n), 5)
    u = rng.normal(size=(len(owner), d))
    p1 = _unit(topic[owner] + own * e1[owner] + 0.8 * u + 0.3 * rng.normal(size=u.shape))
    p2 = _unit((topic[owner] + own * e2[owner] + 0.8 * u + 0.3 * rng.normal(size=u.shape)) @ rot)
    pieces = [Piece(f"p{i}", int(o), "span") for i, o in enumerate(owner)]
    return PairedVectors(_unit(topic + own * e1), _unit((topic + own * e2) @ rot), pieces, p1, p2)


def test_blends_are_chosen_and_gated_on_labelled_queries_only():
    from embedkd.upgrade.fit import BLENDS, blend_candidates, choose_by_labels, fit_from_pairs

    pairs = _two_views()
    out = fit_from_pairs(pairs, ("procrustes", "affine"))
    # the label-free gate refuses both maps and never offers a blend: its figures cannot tell a blend
    # that helps from one that hurts
    assert not out.decision.accepted and "own documents worse than v1" in out.decision.reason
    assert not any(c.adapter.needs_index_queries for c in out.candidates)
    blends = blend_candidates(out.candidates[0], out.check, *out.heldout_queries)
    assert [b.adapter.blend for b in blends] == list(BLENDS)
    assert all(b.adapter.needs_index_queries and b.kind.startswith("procrustes+v1@") for b in blends)
    good = "procrustes+v1@0.3"
    fig = next(b.figures for b in blends if b.kind == good)
    assert fig["agree_adapted"] - fig["agree_v1"] > 2 * fig["agree_gain_se"] > 0  # clearly nearer the reindex
    # labelled queries decide: a blend within two standard errors of v1 is refused, one clearly above is taken
    ndcg = {"v1": 0.50, **{b.kind: 0.51 for b in blends}}
    _, decision = choose_by_labels(blends, ndcg, gain_se={b.kind: 0.006 for b in blends})
    assert not decision.accepted and "not clearly above v1" in decision.reason
    chosen, decision = choose_by_labels(blends, {**ndcg, good: 0.53}, gain_se={b.kind: 0.006 for b in blends})
    assert decision.accepted and chosen.kind == good and chosen.adapter.blend == 0.3


def test_blended_adapter_routes_text_search_through_both_models(catalog, tmp_path):
    from embedkd.upgrade.register import register_adapter
    from indexer.adapters import Adapter
    from indexer.search import Searcher

    path, v1 = _build(catalog, tmp_path)
    rot = np.linalg.qr(np.random.default_rng(5).normal(size=(32, 32)))[0]
    v2 = HashEncoder(32, 1, drift=rot)  # v1 rotated: rot^T maps it back exactly
    # half the mapped v2 query, half v1's: both are v1's query here, so search must match v1's own
    adapter = Adapter(kind="procrustes", source_fingerprint=v2.record.fingerprint,
                      target_fingerprint=v1.record.fingerprint, source_dim=32, target_dim=32,
                      linear=rot.T).with_blend(0.5)
    register_adapter(catalog, "idx", adapter, v2.record, {})
    encoders = {v1.record.source: v1, v2.record.source: v2}
    searcher = Searcher(catalog, encoder_for=encoders.__getitem__)
    query = ["w1 w2 w3 w4 w5"]
    routed = searcher.search("idx", query, k=5, query_model=v2.record.source)[0]
    own = searcher.search("idx", query, k=5)[0]
    assert [h.id for h in routed] == [h.id for h in own]
    np.testing.assert_allclose([h.score for h in routed], [h.score for h in own], atol=1e-5)
    # vectors alone cannot be blended: a clear error, not a silent v2-only search
    with pytest.raises(UserError, match="both models"):
        searcher.search_vectors("idx", v2(query), k=5, source_fingerprint=v2.record.fingerprint)


def test_paired_vectors_subset_keeps_documents_and_renumbers_their_pieces() -> None:
    from embedkd.upgrade.pairs import PairedVectors
    from embedkd.upgrade.sampling import Piece

    docs = np.arange(4, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)  # document i's vectors are all i
    pieces = [Piece(f"p{d}{j}", d, "sentence") for d in range(4) for j in range(2)] + [Piece("q", -1, "query")]
    vectors = np.array([[10 * p.doc + j] for p, j in zip(pieces, [0, 1] * 4 + [0], strict=True)], np.float32)
    sub = PairedVectors(docs, 2 * docs, pieces, vectors, -vectors).subset(np.array([1, 3]))
    assert sub.doc_v1[:, 0].tolist() == [1, 3] and sub.doc_v2[:, 0].tolist() == [2, 6]
    # the pieces of documents 1 and 3 only (the logged query belongs to no document), renumbered 0 and 1
    assert [(p.text, p.doc) for p in sub.pieces] == [("p10", 0), ("p11", 0), ("p30", 1), ("p31", 1)]
    assert sub.piece_v1[:, 0].tolist() == [10, 11, 30, 31] and sub.piece_v2[:, 0].tolist() == [-10, -11, -30, -31]


def test_fit_samples_an_index_written_over_http(sqlite_catalog, tmp_path):
    """No file has its documents: `upgrade fit` samples the texts the server kept of them (`indexer.text_log`)."""
    from indexer import text_log
    from indexer.corpus import ListSource

    docs = list(read_corpus(_corpus(tmp_path, 80)))
    v1 = HashEncoder(32, 1)
    build_index(sqlite_catalog, "idx", v1, ListSource(docs[:1]), progress=False)  # built in memory: no path
    for start in range(1, 80, 10):  # as the HTTP route does: commit, then keep the texts
        add_documents(sqlite_catalog, "idx", v1, ListSource(docs[start:start + 10]), progress=False)
        text_log.append(sqlite_catalog, "idx", docs[start:start + 10], wait=True)
    drift = np.linalg.qr(np.random.default_rng(3).normal(size=(48, 48)))[0][:32]
    res = fit_upgrade(sqlite_catalog, "idx", "v2", "procrustes", sample_docs=60, v1_encoder=v1,
                      v2_encoder=HashEncoder(32, 1, drift=drift))
    assert res["accepted"], res["reason"]
    assert res["counts"]["distractors"] == 20  # 60 sampled of the 79 kept texts: the other 20 vectors (the seed too)


def test_writes_while_the_fit_reads_the_corpus_leave_it_to_fit_the_index_as_it_is(catalog, tmp_path, monkeypatch):
    """A live index is written while `upgrade fit` reads its corpus (minutes, for a large one): the generation the
    fit began with is gone, so it reads the index as it is then, leaving out sampled documents since rewritten
    or deleted. Before, it failed saying the index file was missing and the index should be rebuilt."""
    from embedkd.upgrade import run
    from indexer.build import delete_items

    path, v1 = _build(catalog, tmp_path)
    drift = np.linalg.qr(np.random.default_rng(3).normal(size=(48, 48)))[0][:32]
    v2 = HashEncoder(32, 1, drift=drift)
    real = run.reservoir_sample

    def sample_while_writing(corpus, size, seed):
        out = real(corpus, size, seed)
        add_documents(catalog, "idx", v1, ListSource([Doc("d3", "w1 w2 w3 rewritten")]), progress=False)
        delete_items(catalog, "idx", ["d5"])
        return out

    monkeypatch.setattr(run, "reservoir_sample", sample_while_writing)
    res = fit_upgrade(catalog, "idx", "v2", "procrustes", corpus=str(path), sample_docs=80, v1_encoder=v1, v2_encoder=v2)
    assert res["accepted"], res["reason"]
    assert res["counts"]["documents"] == 78  # of 80 sampled: d3 rewritten and d5 deleted meanwhile
