"""indexer.adapters: the numpy apply against a naive per-row reference, the file format, its checks."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.adapters import Adapter, file_sha256, load_adapter, save_adapter
from indexer.errors import Conflict, NotFound, UserError


def _full_adapter(ds: int = 5, dt: int = 3, seed: int = 0) -> Adapter:
    rng = np.random.default_rng(seed)
    return Adapter(
        kind="mlp", source_fingerprint="a" * 64, target_fingerprint="b" * 64, source_dim=ds, target_dim=dt,
        center=rng.normal(size=ds), linear=rng.normal(size=(ds, dt)), low_a=rng.normal(size=(ds, 2)),
        low_b=rng.normal(size=(2, dt)), w1=rng.normal(size=(ds, 4)), b1=rng.normal(size=4),
        w2=rng.normal(size=(4, dt)), b2=rng.normal(size=dt), bias=rng.normal(size=dt),
    )


def _naive(a: Adapter, x: np.ndarray) -> np.ndarray:
    out = []
    for row in x.astype(np.float64):
        z = row - a.center
        y = z @ a.linear + (z @ a.low_a) @ a.low_b
        h = [max(0.0, v) for v in (z @ a.w1 + a.b1)]
        y = y + np.array(h) @ a.w2 + a.b2 + a.bias
        out.append(y / np.linalg.norm(y))
    return np.array(out)


def test_apply_matches_naive_reference():
    a = _full_adapter()
    x = np.random.default_rng(1).normal(size=(7, 5)).astype(np.float32)
    np.testing.assert_allclose(a.apply(x), _naive(a, x), rtol=1e-4, atol=1e-5)
    assert a.apply(x).dtype == np.float32 and a.apply(x).shape == (7, 3)


def test_mean_shift_hand_values_and_identity():
    shift = Adapter(kind="mean-shift", source_fingerprint="s", target_fingerprint="t", source_dim=2,
                    target_dim=2, bias=np.array([0.5, -1.0]), normalize=False)
    np.testing.assert_allclose(shift.apply(np.array([[1.0, 2.0]])), [[1.5, 1.0]])
    ident = Adapter(kind="identity", source_fingerprint="s", target_fingerprint="t", source_dim=2, target_dim=2)
    np.testing.assert_allclose(ident.apply(np.array([[3.0, 4.0]])), [[0.6, 0.8]], rtol=1e-6)


def test_save_load_roundtrip_and_checksum(tmp_path):
    a = _full_adapter()
    path = tmp_path / "sub" / "a.npz"
    digest = save_adapter(a, path)
    assert digest == file_sha256(path)
    b = load_adapter(path, checksum=digest, source_fingerprint="a" * 64, target_fingerprint="b" * 64)
    x = np.random.default_rng(2).normal(size=(4, 5)).astype(np.float32)
    np.testing.assert_array_equal(a.apply(x), b.apply(x))
    assert (b.kind, b.source_dim, b.target_dim) == ("mlp", 5, 3)
    assert not list(path.parent.glob("*.tmp"))


def test_load_refuses_changed_file(tmp_path):
    path = tmp_path / "a.npz"
    digest = save_adapter(_full_adapter(), path)
    save_adapter(_full_adapter(seed=3), path)
    with pytest.raises(Conflict, match="checksum"):
        load_adapter(path, checksum=digest)


def test_load_refuses_wrong_fingerprints(tmp_path):
    path = tmp_path / "a.npz"
    save_adapter(_full_adapter(), path)
    with pytest.raises(Conflict, match="query model"):
        load_adapter(path, source_fingerprint="c" * 64)
    with pytest.raises(Conflict, match="index holds"):
        load_adapter(path, target_fingerprint="c" * 64)


def test_load_refuses_tampered_arrays(tmp_path):
    path = tmp_path / "a.npz"
    a = _full_adapter()
    save_adapter(a, path)
    with np.load(path) as npz:
        parts = {k: npz[k] for k in npz.files}
    parts["bias"] = parts["bias"] + 1
    np.savez(path, **parts)
    with pytest.raises(Conflict, match="internal checksum"):
        load_adapter(path)


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(NotFound):
        load_adapter(tmp_path / "none.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an adapter")
    with pytest.raises(Conflict):
        load_adapter(bad)


def test_shape_errors():
    a = _full_adapter()
    with pytest.raises(UserError, match="5-d query vectors"):
        a.apply(np.zeros((2, 4), np.float32))
    with pytest.raises(UserError, match="needs a linear part"):
        Adapter(kind="mean-shift", source_fingerprint="s", target_fingerprint="t", source_dim=3, target_dim=2)
    with pytest.raises(UserError, match="shape"):
        Adapter(kind="affine", source_fingerprint="s", target_fingerprint="t", source_dim=3, target_dim=2,
                linear=np.zeros((2, 3)))


def test_indexer_adapters_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, indexer.adapters; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_score_map_documents_take_the_inverse_map_and_survive_a_roundtrip(tmp_path):
    # 2-d by hand: v1 -> v2 content is d2 = d1 M + c with M = diag(2, 1), c = (1, 0); queries map by M^T
    m = np.array([[2.0, 0.0], [0.0, 1.0]])
    a = Adapter(kind="score-map", source_fingerprint="s", target_fingerprint="t", source_dim=2, target_dim=2,
                linear=m.T, doc_center=np.array([1.0, 0.0]))
    np.testing.assert_allclose(a.apply(np.array([[1.0, 0.0]])), [[1.0, 0.0]])  # doc_center unused on queries
    docs = a.for_documents()
    # s M = d2 - c: d2 = (3, 4) -> s = (1, 4), unnormalized
    np.testing.assert_allclose(docs.apply(np.array([[3.0, 4.0]])), [[1.0, 4.0]], rtol=1e-6)
    digest = save_adapter(a, tmp_path / "s.npz")
    b = load_adapter(tmp_path / "s.npz", checksum=digest)
    np.testing.assert_array_equal(b.doc_center, a.doc_center)
    with pytest.raises(UserError, match="purely linear"):
        Adapter(kind="score-map", source_fingerprint="s", target_fingerprint="t", source_dim=2, target_dim=2,
                linear=m, bias=np.ones(2), doc_center=np.zeros(2))


def test_blend_hand_values_roundtrip_and_errors(tmp_path):
    # map: identity on 2-d; blend 0.25 of the mapped v2 query with 0.75 of v1's (both unit first)
    a = Adapter(kind="procrustes", source_fingerprint="s", target_fingerprint="t", source_dim=2, target_dim=2,
                linear=np.eye(2)).with_blend(0.25)
    assert a.kind == "procrustes+v1@0.25"
    assert a.needs_index_queries
    mixed = 0.75 * np.array([0.0, 1.0]) + 0.25 * np.array([1.0, 0.0])  # v1 (0, 2) -> unit (0, 1)
    np.testing.assert_allclose(a.apply(np.array([[3.0, 0.0]]), np.array([[0.0, 2.0]])),
                               [mixed / np.linalg.norm(mixed)], rtol=1e-6)
    with pytest.raises(UserError, match="encode each query with both models"):
        a.apply(np.array([[3.0, 0.0]]))
    with pytest.raises(UserError, match="2-d query vectors from the index's model"):
        a.apply(np.array([[3.0, 0.0]]), np.ones((1, 3)))
    with pytest.raises(UserError, match="add new documents with the index's model"):
        a.for_documents()
    with pytest.raises(UserError, match="strictly between 0 and 1"):
        a.with_blend(1.0)
    assert a.with_blend(0.5).kind == "procrustes+v1@0.5"
    path = tmp_path / "blend.npz"
    b = load_adapter(path, checksum=save_adapter(a, path))
    assert b.blend == 0.25 and b.kind == a.kind
    x, v1 = np.array([[1.0, 2.0]]), np.array([[2.0, -1.0]])
    np.testing.assert_array_equal(a.apply(x, v1), b.apply(x, v1))
    plain = Adapter(kind="procrustes", source_fingerprint="s", target_fingerprint="t", source_dim=2, target_dim=2,
                    linear=np.eye(2))
    assert not plain.needs_index_queries
    np.testing.assert_array_equal(plain.apply(x, v1), plain.apply(x))  # index vectors only matter to a blend
