"""Compatibility report: the matrix, the recovered share, the JSON and PNG files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedkd.upgrade.report import compat_matrix, compatibility_report, recovered_share
from indexer.build import build_index
from indexer.context import open_catalog
from indexer.corpus import read_corpus
from indexer.settings import load_settings

from .test_upgrade_fit import HashEncoder, _corpus


def test_recovered_share_hand_values():
    assert recovered_share(0.55, 0.5, 0.6) == pytest.approx(0.5)
    assert recovered_share(0.45, 0.5, 0.6) == pytest.approx(-0.5)
    assert recovered_share(0.5, 0.5, 0.49) is None


def test_compat_matrix_rows():
    docs = np.eye(4, dtype=np.float32)
    q = docs[:2]
    qrels = {"a": {"d0": 1}, "b": {"d1": 1}}

    class Swap:  # flips the query: its document scores -1, every other 0, so it comes last (rank 4)
        def apply(self, x):
            return -x

    out = compat_matrix(docs, docs, q, q, {"swap": Swap()}, ["d0", "d1", "d2", "d3"], ["a", "b"], qrels, k=4)
    m = out["matrix"]
    assert m["v1/v1"]["ndcg@10"] == 1.0 and m["v2 raw/v1"]["ndcg@10"] == 1.0
    assert m["v2+swap/v1"]["mrr@10"] == pytest.approx(0.25)  # right document at rank 4
    assert out["recovered"]["v2+swap/v1"] is None  # v2 no better than v1: no share to recover


def test_compatibility_report_writes_json_and_png(tmp_path):
    catalog = open_catalog(load_settings(home=tmp_path / "home"))
    path = _corpus(tmp_path, 60)
    v1 = HashEncoder(32, 1)
    build_index(catalog, "idx", v1, read_corpus(path), progress=False)
    rows = [json.loads(line) for line in path.read_text().splitlines()[:15]]
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": r["title"]}) + "\n"
                                                for i, r in enumerate(rows)))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\t{r['_id']}\t1\n" for i, r in enumerate(rows)))
    v2 = HashEncoder(32, 1, drift=np.linalg.qr(np.random.default_rng(0).normal(size=(40, 40)))[0][:32])
    encoders = {v1.record.source: v1, "v2": v2}
    out = compatibility_report(catalog, "idx", "v2", str(beir), corpus=str(path), out_dir=tmp_path / "docs",
                               sample_docs=60, encoder_for=encoders.__getitem__)
    catalog.close()
    assert {"v1/v1", "v2/v2", "v2+procrustes/v1"} <= set(out["matrix"])
    assert "v2 raw/v1" not in out["matrix"]  # 40-d queries cannot search 32-d vectors raw
    assert (tmp_path / "docs" / "upgrade_compat_idx.json").is_file()
    assert (tmp_path / "docs" / "upgrade_compat_idx.png").read_bytes()[:4] == b"\x89PNG"
    assert out["matrix"]["v2+procrustes/v1"]["ndcg@10"] >= out["matrix"]["v1/v1"]["ndcg@10"] - 0.01
