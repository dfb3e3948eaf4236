from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from indexer.context import open_catalog
from indexer.errors import Conflict, NotFound, UserError
from indexer.search import Searcher
from indexer.settings import load_settings
from reid.encoder import load_image_encoder
from reid.gallery import add_to_gallery, build_gallery, query_gallery, remove_from_gallery, upgrade_gallery
from reid.model import ModelSpec, build_model, load_model, save_model

from ..indexer.helpers import snapshot
from .reid_testdata import make_slice


@pytest.fixture
def catalog(tmp_path):
    cat = open_catalog(load_settings(home=tmp_path / "home"))
    yield cat
    cat.close()


def test_encoder_record_and_inputs(trained_model, market_slice):
    enc = load_image_encoder(trained_model)
    assert enc.record.kind == "image" and enc.record.dimension == 1280 and enc.record.normalized
    path = sorted((market_slice / "query").iterdir())[0]
    img = Image.open(path)
    by_path, by_pil, by_bytes = enc([str(path)]), enc([img]), enc([path.read_bytes()])
    assert by_path.dtype == np.float32 and by_path.shape == (1, 1280)
    np.testing.assert_allclose(by_path, by_pil, atol=1e-5)
    np.testing.assert_allclose(by_path, by_bytes, atol=1e-5)
    with pytest.raises(UserError, match="not a readable image"):
        enc([b"garbage"])


def test_gallery_build_query_add_remove(trained_model, market_slice, catalog, tmp_path):
    gallery = market_slice / "bounding_box_test"
    out = build_gallery(catalog, "people", trained_model, [gallery])
    n = len(list(gallery.iterdir()))
    assert out["count"] == n and out["dimension"] == 1280
    crop = sorted(gallery.iterdir())[3]
    hits = query_gallery(catalog, "people", [str(crop)], k=3)[0]
    assert hits[0]["id"] == crop.stem and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[0]["pid"] == int(crop.name[:4]) and len(hits) == 3

    query = sorted((market_slice / "query").iterdir())[0]
    added = add_to_gallery(catalog, "people", [query])
    assert added["added"] == 1 and added["count"] == n + 1
    assert add_to_gallery(catalog, "people", [query])["unchanged"] == 1
    assert query_gallery(catalog, "people", [query.read_bytes()], k=1)[0][0]["id"] == query.stem

    before = snapshot(catalog)
    tiny = tmp_path / "0955_c1s1_000001_01.jpg"
    Image.new("RGB", (10, 12)).save(tiny)
    with pytest.raises(UserError, match="at least 16 px"):
        add_to_gallery(catalog, "people", [query, tiny])
    with pytest.raises(UserError, match="no item with id"):
        remove_from_gallery(catalog, "people", [query.stem, "nobody"])
    assert snapshot(catalog) == before

    assert remove_from_gallery(catalog, "people", [query.stem])["count"] == n


def test_a_tracklet_is_one_query_by_the_mean_of_its_embeddings(trained_model, market_slice, catalog):
    build_gallery(catalog, "people", trained_model, [market_slice / "bounding_box_test"])
    shots = [str(p) for p in sorted((market_slice / "query").iterdir())[:3]]
    fused = query_gallery(catalog, "people", shots, k=5, fuse=True)
    assert len(fused) == 1 and len(fused[0]) == 5
    # the same search by hand: each crop's unit embedding, their mean, made unit length
    vectors = load_image_encoder(trained_model)(shots)
    mean = vectors.mean(axis=0, keepdims=True)
    by_hand = Searcher(catalog).search_vectors("people", mean / np.linalg.norm(mean), k=5)[0]
    assert [h["id"] for h in fused[0]] == [h.id for h in by_hand]
    np.testing.assert_allclose([h["score"] for h in fused[0]], [h.score for h in by_hand], atol=1e-5)
    singles = query_gallery(catalog, "people", shots, k=5)  # without fuse: a list per crop
    assert len(singles) == 3 and all(row != fused[0] for row in singles)
    one = query_gallery(catalog, "people", shots[:1], k=5, fuse=True)[0]
    assert [h["id"] for h in one] == [h["id"] for h in singles[0]]
    np.testing.assert_allclose([h["score"] for h in one], [h["score"] for h in singles[0]], atol=1e-5)


def test_query_with_a_model_of_another_dimension(trained_model, market_slice, catalog, tmp_path):
    build_gallery(catalog, "people", trained_model, [market_slice / "bounding_box_test"])
    other, _ = build_model(ModelSpec(backbone="resnet18", height=64, width=32), pretrained=False)
    save_model(other.eval(), tmp_path / "r18")
    before = snapshot(catalog)
    with pytest.raises(Conflict, match="512-d vectors but gallery 'people' holds 1280-d"):
        query_gallery(catalog, "people", [sorted((market_slice / "query").iterdir())[0]], model_dir=tmp_path / "r18")
    assert snapshot(catalog) == before


def test_upgrade_registers_an_adapter_and_queries_go_through_it(trained_model, catalog, tmp_path):
    root = make_slice(tmp_path / "m10", train_ids=(), test_ids=("0955", "0957", "0958", "0961", "0962", "0963",
                                                                "0967", "0969", "0970", "0971"))
    n = build_gallery(catalog, "people", trained_model, [root / "bounding_box_test"])["count"]
    # v2: same embedding directions at twice the scale (a new fingerprint, a known relation)
    model, _ = load_model(trained_model)
    with torch.no_grad():
        model.neck.weight.mul_(2.0)
    save_model(model, tmp_path / "v2")
    # a sample smaller than the gallery: the gate's queries also search the crops left out of it
    out = upgrade_gallery(catalog, "people", tmp_path / "v2", sample=n - 7)
    assert out["distractors"] == 7 and out["pairs"] + out["heldout"] == n - 7
    assert out["active"] and out["rank1_adapted"] >= out["rank1_v1"]
    assert out["heldout_cosine"] > 0.99
    q = [str(p) for p in sorted((root / "query").iterdir())[:3]]
    old = query_gallery(catalog, "people", q, k=3)
    new = query_gallery(catalog, "people", q, k=3, model_dir=tmp_path / "v2")
    assert [[h["id"] for h in row] for row in old] == [[h["id"] for h in row] for row in new]
    with pytest.raises(Conflict, match="already uses this model"):
        upgrade_gallery(catalog, "people", trained_model)


def test_bad_gallery_input(trained_model, catalog, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_gallery(catalog, "g", trained_model, [tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .jpg"):
        build_gallery(catalog, "g", trained_model, [tmp_path / "empty"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"nope")
    with pytest.raises(UserError, match="cannot read image"):
        build_gallery(catalog, "g", trained_model, [bad])
    assert snapshot(catalog)["indexes"] == []


def test_gallery_commands_never_touch_a_text_index(catalog, minilm, beir_small, market_slice):
    from indexer.build import build_index
    from indexer.corpus import ListSource, read_corpus
    from reid.gallery import drop_gallery

    docs = list(read_corpus(beir_small))[:5]
    build_index(catalog, "papers", minilm, ListSource(docs), progress=False)
    crop = sorted((market_slice / "query").glob("*.jpg"))[0]
    before = snapshot(catalog)
    with pytest.raises(UserError, match="'papers' holds text embeddings, not image; use the `embedkd index` commands"):
        remove_from_gallery(catalog, "papers", [docs[0].id])
    with pytest.raises(UserError, match="'papers' holds text embeddings, not image; use the `embedkd index` commands"):
        drop_gallery(catalog, "papers")
    # not an error about the text model's folder, which the user never passed
    with pytest.raises(UserError, match="'papers' holds text embeddings, not image; use the `embedkd index` commands"):
        add_to_gallery(catalog, "papers", [crop])
    with pytest.raises(UserError, match="'papers' holds text embeddings, not image; use the `embedkd index` commands"):
        query_gallery(catalog, "papers", [crop])
    with pytest.raises(NotFound, match="no gallery named 'nope' \\(the catalog has no gallery yet\\)"):
        query_gallery(catalog, "nope", [crop])
    # a searcher that says what its models take refuses an index of the other kind before loading one
    with pytest.raises(UserError, match="'papers' holds text embeddings, not image; use the `embedkd index` commands"):
        Searcher(catalog, kind="image").search("papers", [crop])
    assert snapshot(catalog) == before
