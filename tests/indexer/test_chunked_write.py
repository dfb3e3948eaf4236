"""A build reads its documents' contents again chunk by chunk while encoding (a corpus that changed
meanwhile is an error that writes nothing) and adds the vectors to FAISS chunk by chunk from the job's
folder: the index is the one a single-chunk build writes, for exact and trained (IVF, PQ) factories."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.build import ChunkVectors, build_index
from indexer.corpus import Doc, read_corpus
from indexer.errors import UserError

from .helpers import index_vectors, load_index, snapshot


def test_chunk_vectors_read_rows_and_all(tmp_path):
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((n, 4)).astype(np.float32) for n in (3, 5, 1)]
    paths = []
    for k, part in enumerate(parts):
        paths.append(tmp_path / f"part-{k}.npy")
        np.save(paths[-1], part)
    vectors, whole = ChunkVectors(paths, 4), np.concatenate(parts)
    assert len(vectors) == 9
    np.testing.assert_array_equal(vectors[np.array([0, 2, 3, 7, 8])], whole[[0, 2, 3, 7, 8]])
    np.testing.assert_array_equal(np.asarray(vectors), whole)
    assert [(start, len(v)) for start, v in vectors.chunks()] == [(0, 3), (3, 5), (8, 1)]
    assert np.asarray(ChunkVectors([], 4)).shape == (0, 4)


@pytest.mark.parametrize("factory", ["Flat", "IVF4,PQ8x4"])
def test_many_chunks_write_the_single_chunk_index(sqlite_catalog, minilm, beir_small, factory):
    build_index(sqlite_catalog, "one", minilm, read_corpus(beir_small), factory=factory, chunk_size=4096,
                progress=False)
    build_index(sqlite_catalog, "many", minilm, read_corpus(beir_small), factory=factory, chunk_size=7,
                progress=False)
    one, many = load_index(sqlite_catalog, "one"), load_index(sqlite_catalog, "many")
    queries = minilm(["statins and heart disease", "gene expression in mice"])
    d1, i1 = one.search(queries, 20)
    d2, i2 = many.search(queries, 20)
    assert many.ntotal == one.ntotal == 60
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d1, d2, atol=1e-6)


class _ChangesAfterScan:
    """A corpus whose document `at` differs (or is gone) from the second reading on, as when the file is
    rewritten while a build runs."""

    def __init__(self, docs, at: int, drop: bool = False) -> None:
        self.docs, self.at, self.drop, self.reads = docs, at, drop, 0
        self.fingerprint = "changing"

    def __iter__(self):
        self.reads += 1
        for pos, d in enumerate(self.docs):
            if self.reads > 1 and pos == self.at:
                if self.drop:
                    return
                d = Doc(id=d.id, content=d.content + " (edited)", info=d.info)
            yield d


@pytest.mark.parametrize("drop", [False, True])
def test_corpus_changed_while_encoding_is_one_line_and_writes_nothing(sqlite_catalog, minilm, beir_small, drop):
    docs = list(read_corpus(beir_small))
    before = snapshot(sqlite_catalog)
    with pytest.raises(UserError, match="the corpus changed while this job read it") as err:
        build_index(sqlite_catalog, "c", minilm, _ChangesAfterScan(docs, at=30, drop=drop), chunk_size=16,
                    progress=False)
    assert "document 31" in str(err.value) and "\n" not in str(err.value)
    assert snapshot(sqlite_catalog) == before


class _OneShot:
    """A source that can be read once, like a generator."""

    def __init__(self, docs) -> None:
        self.it, self.fingerprint = iter(docs), "one-shot"

    def __iter__(self):
        return self.it


def test_a_source_read_only_once_is_kept_in_memory(sqlite_catalog, minilm, beir_small):
    out = build_index(sqlite_catalog, "g", minilm, _OneShot(list(read_corpus(beir_small))), chunk_size=16,
                      progress=False)
    build_index(sqlite_catalog, "file", minilm, read_corpus(beir_small), chunk_size=16, progress=False)
    assert out["count"] == 60
    np.testing.assert_allclose(index_vectors(sqlite_catalog, "g")[1], index_vectors(sqlite_catalog, "file")[1],
                               atol=1e-6)
