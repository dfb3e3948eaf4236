"""Teachers behind one scoring interface, with the on-disk score cache."""

from __future__ import annotations

import numpy as np
import pytest

from embedkd.distill.data import load_beir
from embedkd.distill.teachers import BiEncoderTeacher, CrossEncoderTeacher, detect_kind, load_teacher
from indexer.errors import UserError
from tests.conftest import minilm_path


@pytest.fixture(scope="module")
def bi_teacher(tmp_path_factory):
    return load_teacher(minilm_path(), device="cpu", cache_dir=tmp_path_factory.mktemp("cache"))


def test_bi_encoder_teacher_scores_are_cosines_from_remembered_embeddings(bi_teacher, monkeypatch):
    assert isinstance(bi_teacher, BiEncoderTeacher) and bi_teacher.kind == "bi-encoder"
    q = "Vitamin D deficiency is linked to bone loss."
    docs = ["Low vitamin D levels reduce bone mineral density.", "The stock market fell on Tuesday."]
    scores = bi_teacher.score(q, docs)
    emb = bi_teacher.model.encode([q] + docs, normalize_embeddings=True)
    np.testing.assert_allclose(scores, emb[1:] @ emb[0], atol=1e-5)
    assert scores[0] > scores[1]

    def boom(*_args):
        raise AssertionError("a known text was encoded again")

    monkeypatch.setattr(bi_teacher, "_run", boom)
    np.testing.assert_allclose(bi_teacher.score(q, docs), scores)  # embeddings served from memory


def test_embeddings_cache_on_disk(tmp_path):
    texts = ["one text", "another text"]
    first = load_teacher(minilm_path(), device="cpu", cache_dir=tmp_path)
    first.disk_cache_min = 1
    vectors = first.encode(texts)
    assert list(tmp_path.glob("emb-*.npy"))
    again = load_teacher(minilm_path(), device="cpu", cache_dir=tmp_path)
    again._run = None  # a second teacher reads the file instead of encoding
    again.disk_cache_min = 1
    np.testing.assert_array_equal(again.encode(texts), vectors)


def test_prompted_teacher_scores_queries_and_documents_with_their_own_prompts(tmp_path):
    from tests.conftest import prompted_copy

    path = prompted_copy(minilm_path(), tmp_path / "e5", {"query": "query: ", "passage": "passage: "})
    teacher = load_teacher(path, device="cpu", cache_dir=tmp_path / "cache")
    teacher.disk_cache_min = 1
    q, docs = "Vitamin D and bone loss", ["Low vitamin D reduces bone density.", "Stocks fell on Tuesday."]
    emb_q = teacher.model.encode(["query: " + q], normalize_embeddings=True)[0]
    emb_d = teacher.model.encode(["passage: " + d for d in docs], normalize_embeddings=True)
    np.testing.assert_allclose(teacher.score(q, docs), emb_d @ emb_q, atol=1e-5)
    # one cache file per role, none under the prompt-less name (whose vectors would differ)
    plain = load_teacher(minilm_path(), device="cpu", cache_dir=tmp_path / "plain")
    plain.disk_cache_min = 1
    plain.encode(docs)
    plain_name = next((tmp_path / "plain").glob("emb-*.npy")).name
    names = {f.name for f in (tmp_path / "cache").glob("emb-*.npy")}
    assert len(names) == 2 and plain_name not in names


def test_truncated_documents_are_encoded_from_their_first_tokens_and_cached_apart(tmp_path):
    """`truncate_documents(n)`: documents as the model reads their first n tokens, queries untouched,
    the model's own limit restored, and a cache file that a full-length teacher never reads."""
    doc = ("Vitamin D deficiency is common in older adults. " * 3 + "The stock market fell on Tuesday. " * 8).strip()
    query = "Vitamin D deficiency in older adults and its effects on bone mineral density " * 2
    full = load_teacher(minilm_path(), device="cpu", cache_dir=tmp_path)
    full.disk_cache_min = 1
    full_doc, full_query = full.encode([doc])[0], full.encode_queries([query])[0]

    cut = load_teacher(minilm_path(), device="cpu", cache_dir=tmp_path)
    cut.disk_cache_min = 1
    own_limit = cut.model.max_seq_length
    cut.truncate_documents(16)
    assert cut.document_tokens == 16
    cut_doc = cut.encode([doc])[0]
    assert cut.model.max_seq_length == own_limit
    cut.model.max_seq_length = 16
    expected = cut.model.encode([doc], normalize_embeddings=True)[0]
    cut.model.max_seq_length = own_limit
    np.testing.assert_allclose(cut_doc, expected, atol=1e-5)
    assert float(cut_doc @ full_doc) < 0.99  # the cut changed what the teacher saw
    np.testing.assert_allclose(cut.encode_queries([query])[0], full_query, atol=1e-6)
    assert len(list(tmp_path.glob("emb-*.npy"))) == 3  # full docs, queries, 16-token docs

    again = load_teacher(minilm_path(), device="cpu", cache_dir=tmp_path)
    again.disk_cache_min = 1
    again._run = None  # everything must come from the files, each from its own
    np.testing.assert_array_equal(again.encode([doc])[0], full_doc)
    again.truncate_documents(16)
    np.testing.assert_array_equal(again.encode([doc])[0], cut_doc)
    again.truncate_documents(10_000)  # never beyond the model's own limit
    assert again.document_tokens == own_limit


def test_cross_encoder_teacher_one_logit(tmp_path):
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(minilm_path(), num_labels=1, max_length=64, device="cpu")
    ce.save(str(tmp_path / "ce"))
    assert detect_kind(str(tmp_path / "ce")) == "cross-encoder"
    teacher = load_teacher(str(tmp_path / "ce"), device="cpu", cache_dir=tmp_path / "cache")
    assert isinstance(teacher, CrossEncoderTeacher)
    scores = teacher.score("a query", ["doc one", "doc two", "doc one"])
    assert scores.shape == (3,) and np.isfinite(scores).all() and scores[0] == pytest.approx(scores[2])

    def boom(_pairs):
        raise AssertionError("a cached pair was scored again")

    teacher._compute = boom
    np.testing.assert_allclose(teacher.score("a query", ["doc two", "doc one"]), scores[[1, 0]])  # SQLite cache


def test_teacher_that_cannot_score_is_a_clear_error(tmp_path):
    from sentence_transformers import CrossEncoder

    CrossEncoder(minilm_path(), num_labels=3, max_length=32, device="cpu").save(str(tmp_path / "nli"))
    with pytest.raises(UserError, match="3 outputs per pair"):
        load_teacher(str(tmp_path / "nli"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="without a model"):
        load_teacher(str(tmp_path / "empty"), device="cpu")
    with pytest.raises(UserError, match="unknown"):
        load_teacher(minilm_path(), kind="ranker")


def test_train_qrels_of_another_folder_are_an_error_not_missing_qrels(tmp_path, caplog):
    """Rows naming no known document used to vanish, and distillation then said the folder had no
    qrels/train.tsv while the file was there."""
    import logging

    from tests.conftest import make_beir_slice

    root = make_beir_slice(tmp_path / "b", 20, split="train")
    tsv = root / "qrels" / "train.tsv"
    header, *rows = [r.split("\t") for r in tsv.read_text().splitlines() if r.strip()]
    tsv.write_text("\n".join(["\t".join(header)] + [f"{q}\tnot-{d}\t{g}" for q, d, g in rows]) + "\n")
    with pytest.raises(UserError, match=rf"none of the {len(rows)} rows of .*train.tsv names a query .* belong"):
        load_beir(root)
    q, d, g = rows[0]
    tsv.write_text("\n".join(["\t".join(header), f"{q}\t{d}\t{g}", f"{q}\tnot-{d}\t{g}"]) + "\n")
    with caplog.at_level(logging.WARNING):
        assert load_beir(root).qrels["train"] == {q: {d: int(g)}}
    assert "1 of 2 rows" in caplog.text


def test_beir_without_train_qrels_is_a_clear_error(tmp_path):
    from tests.conftest import make_beir_slice

    beir = load_beir(make_beir_slice(tmp_path / "b", 20, split="test"))
    with pytest.raises(UserError, match="no qrels/train.tsv.*; distillation needs BEIR train qrels") as err:
        beir.require("train")
    assert "--queries" not in str(err.value)  # only a command that takes --queries may suggest it
    with pytest.raises(UserError, match="training a cross-encoder needs BEIR train qrels"):
        from embedkd.distill.cross_encoder import train_cross_encoder

        train_cross_encoder(minilm_path(), str(beir.path), str(tmp_path / "ce"))
    with pytest.raises(UserError, match="not a BEIR folder"):
        load_beir(tmp_path / "nothing")
