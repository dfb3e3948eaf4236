"""A build adds its vectors to FAISS chunk by chunk from the job's folder: the index is the one a
single-chunk build writes, for exact and for trained (IVF, PQ) factories."""

from __future__ import annotations

import numpy as np
import pytest

from indexer import store
from indexer.build import ChunkVectors, build_index
from indexer.catalog import get_index
from indexer.corpus import read_corpus


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


def _index(catalog, name):
    with catalog.session() as s:
        row = get_index(s, name)
        return store.read_index(catalog.settings.index_dir / name / row.file, row.checksum)


@pytest.mark.parametrize("factory", ["Flat", "IVF4,PQ8x4"])
def test_many_chunks_write_the_single_chunk_index(sqlite_catalog, minilm, beir_small, factory):
    build_index(sqlite_catalog, "one", minilm, read_corpus(beir_small), factory=factory, chunk_size=4096,
                progress=False)
    build_index(sqlite_catalog, "many", minilm, read_corpus(beir_small), factory=factory, chunk_size=7,
                progress=False)
    one, many = _index(sqlite_catalog, "one"), _index(sqlite_catalog, "many")
    queries = minilm(["statins and heart disease", "gene expression in mice"])
    d1, i1 = one.search(queries, 20)
    d2, i2 = many.search(queries, 20)
    assert many.ntotal == one.ntotal == 60
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d1, d2, atol=1e-6)
