"""Each bad input fails with one clear line and leaves the catalog and the index files as they were."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexer.build import add_documents, build_index, delete_items
from indexer.catalog import get_index
from indexer.corpus import ListSource, read_corpus
from indexer.encoder import ModelRecord
from indexer.errors import UserError
from indexer.search import MAX_K, Searcher

from .helpers import snapshot

GOOD = {"_id": "d1", "title": "T", "text": "Aspirin lowers the risk of heart attack."}


def _write(tmp_path, lines: list[str]):
    p = tmp_path / "corpus.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.fixture
def built(sqlite_catalog, minilm, beir_small):
    docs = list(read_corpus(beir_small))[:20]
    build_index(sqlite_catalog, "base", minilm, ListSource(docs), progress=False)
    return sqlite_catalog


BAD_CORPORA = {
    "not json": ([json.dumps(GOOD), "{not json"], "line 2 is not valid JSON"),
    "no id": ([json.dumps({"text": "x"})], "line 1 has no id"),
    "only empty documents": ([json.dumps({"_id": "a", "text": "  "}), json.dumps({"_id": "b", "title": ""})],
                             "no documents \\(its 2 lines have neither title nor text\\)"),
    "repeated id": ([json.dumps(GOOD), json.dumps(GOOD)], "appears twice"),
    "empty": ([""], "no documents"),
}


@pytest.mark.parametrize("case", list(BAD_CORPORA))
def test_bad_corpus_changes_nothing(built, minilm, tmp_path, case):
    lines, message = BAD_CORPORA[case]
    before = snapshot(built)
    with pytest.raises(UserError, match=message):
        build_index(built, "new", minilm, read_corpus(_write(tmp_path, lines)), progress=False)
    with pytest.raises(UserError, match=message):
        add_documents(built, "base", minilm, read_corpus(_write(tmp_path, lines)), progress=False)
    assert snapshot(built) == before


def test_empty_documents_are_skipped_and_counted(built, minilm, tmp_path):
    """BEIR's FiQA has rows with neither title nor text: they are skipped and reported, the rest indexed."""
    lines = [json.dumps(GOOD), json.dumps({"_id": "e1", "title": "", "text": ""}),
             json.dumps({"_id": "d2", "title": "", "text": "Statins reduce LDL cholesterol."})]
    out = build_index(built, "withempty", minilm, read_corpus(_write(tmp_path, lines)), progress=False)
    assert (out["count"], out["skipped_empty"]) == (2, 1)
    with built.session() as s:
        assert get_index(s, "withempty").count == 2
    hits = Searcher(built, lambda _s: minilm).search("withempty", ["cholesterol"], k=5)[0]
    assert [h.id for h in hits] == ["d2", "d1"]
    added = add_documents(built, "base", minilm, read_corpus(_write(tmp_path, lines)), progress=False)
    assert (added["added"], added["skipped_empty"]) == (2, 1)


class _Projected:
    """A real encoder of another dimension: MiniLM followed by a fixed random projection to 128-d."""

    def __init__(self, base):
        self.base = base
        self.proj = np.random.default_rng(0).standard_normal((384, 128)).astype(np.float32)
        self.record = ModelRecord(name="minilm-128", source="minilm-128", dimension=128, fingerprint="f" * 64)

    def __call__(self, items):
        v = self.base(items) @ self.proj
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_model_of_another_dimension_is_refused(built, minilm, beir_small):
    before = snapshot(built)
    docs = list(read_corpus(beir_small))[20:25]
    with pytest.raises(UserError, match="makes 128-d vectors but index 'base' holds 384-d"):
        add_documents(built, "base", _Projected(minilm), ListSource(docs), progress=False)
    searcher = Searcher(built, lambda _s: minilm)
    with pytest.raises(UserError, match="dimension 128"):
        searcher.search_vectors("base", np.ones((1, 128), np.float32), k=3)
    assert snapshot(built) == before


def test_existing_name_unknown_index_and_unknown_ids(built, minilm, beir_small):
    before = snapshot(built)
    docs = list(read_corpus(beir_small))[:5]
    with pytest.raises(UserError, match="already exists"):
        build_index(built, "base", minilm, ListSource(docs), progress=False)
    with pytest.raises(UserError, match="no index named 'nope'"):
        Searcher(built, lambda _s: minilm).search("nope", ["x"], k=1)
    with pytest.raises(UserError, match="no item with id 'missing'"):
        delete_items(built, "base", [docs[0].id, "missing"])
    with pytest.raises(UserError, match="factory"):
        build_index(built, "bad-factory", minilm, ListSource(docs), factory="NotAFactory", progress=False)
    with pytest.raises(UserError, match="not allowed"):
        build_index(built, "../escape", minilm, ListSource(docs), progress=False)
    assert snapshot(built) == before


@pytest.mark.parametrize("k,message", [(0, "positive"), (-3, "positive"), (MAX_K + 1, "too large")])
def test_bad_k(built, minilm, k, message):
    with pytest.raises(UserError, match=message):
        Searcher(built, lambda _s: minilm).search("base", ["heart"], k=k)


def test_empty_query(built, minilm):
    with pytest.raises(UserError, match="empty"):
        Searcher(built, lambda _s: minilm).search("base", ["   "], k=3)


def test_corrupt_index_file_is_detected_and_left_alone(built, minilm):
    with built.session() as s:
        path = built.settings.index_dir / "base" / get_index(s, "base").file
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    before = snapshot(built)
    with pytest.raises(UserError, match="does not match its catalog checksum"):
        Searcher(built, lambda _s: minilm).search("base", ["heart"], k=3)
    with pytest.raises(UserError, match="does not match its catalog checksum"):
        delete_items(built, "base", [next(iter(snapshot(built)["items"]))[1]])
    assert snapshot(built) == before


def test_failure_at_commit_leaves_no_file_and_no_rows(built, minilm, beir_small, monkeypatch):
    """A crash between writing the new generation and the catalog commit rolls both back."""
    import indexer.build as build_mod

    before = snapshot(built)

    def boom(*_a, **_k):
        raise RuntimeError("database went away")

    monkeypatch.setattr(build_mod, "insert_items", boom)
    docs = list(read_corpus(beir_small))[20:24]
    with pytest.raises(RuntimeError):
        add_documents(built, "base", minilm, ListSource(docs), progress=False)
    assert snapshot(built) == before


@pytest.mark.parametrize("url, message", [
    ("mysql://user:secret@host/db", "runs on SQLite or PostgreSQL, not mysql"),
    ("not a url secret", "EMBEDKD_DATABASE_URL is not a database URL"),
])
def test_a_catalog_url_it_cannot_run_on(tmp_path, url, message):
    from indexer.context import open_catalog
    from indexer.settings import load_settings

    with pytest.raises(UserError, match=message) as err:
        open_catalog(load_settings(home=tmp_path, database_url=url))
    assert "secret" not in str(err.value)  # a URL can hold a password: never echoed


def test_a_home_that_is_a_file(tmp_path):
    from indexer.context import open_catalog
    from indexer.settings import load_settings

    home = tmp_path / "home"
    home.write_text("x")
    with pytest.raises(UserError, match="EMBEDKD_HOME .* is a file; point it at a folder"):
        open_catalog(load_settings(home=home))
    assert home.read_text() == "x"


def test_corpus_in_another_encoding_changes_nothing(built, minilm, tmp_path):
    """Latin-1 bytes on line 2: a one-line error naming the line (it was a UnicodeDecodeError traceback)."""
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"_id": "d2", "text": "caf\xe9 au lait"}\n')
    before = snapshot(built)
    for run in (lambda: build_index(built, "new", minilm, read_corpus(path), progress=False),
                lambda: add_documents(built, "base", minilm, read_corpus(path), progress=False)):
        with pytest.raises(UserError, match="line 2 is not UTF-8 text"):
            run()
    assert snapshot(built) == before
    # the same file with a byte-order mark and UTF-8 text indexes, ids intact
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    build_index(built, "bom", minilm, read_corpus(path), progress=False)
    assert [d.id for d in read_corpus(path)] == ["d1"]
