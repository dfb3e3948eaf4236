"""A gallery built on Ray workers (`reid gallery build --ray local`, a real local Ray cluster) holds the
vectors an in-process build writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexer.context import open_catalog
from indexer.settings import load_settings
from reid.gallery import build_gallery

from ..indexer.helpers import index_vectors

pytest.importorskip("ray")


def test_gallery_built_on_ray_equals_local(trained_model, market_slice, tmp_path, monkeypatch, capsys):
    from embedkd.cli.main import main

    home = tmp_path / "home"
    monkeypatch.setenv("EMBEDKD_HOME", str(home))
    gallery = market_slice / "bounding_box_test"
    code = main(["reid", "gallery", "build", "--gallery", "on-ray", "--model", str(trained_model), "--images",
                 str(gallery), "--ray", "local", "--workers", "2", "--json"])
    assert code == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["count"] == len(list(gallery.iterdir()))
    catalog = open_catalog(load_settings(home=home))
    build_gallery(catalog, "local", trained_model, [gallery])
    ids_ray, v_ray = index_vectors(catalog, "on-ray")
    ids_local, v_local = index_vectors(catalog, "local")
    catalog.close()
    assert ids_ray == ids_local
    np.testing.assert_allclose(v_ray, v_local, atol=1e-5)
