"""Encoding on Ray workers (a real local Ray cluster, the real MiniLM): the same index as a local build,
failures as one line that change nothing, and a failed distributed build resumes from its checkpoint."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from indexer.build import build_index
from indexer.corpus import read_corpus
from indexer.distributed import RayEncoder, check_resources, check_same_model
from indexer.encoder import ModelRecord
from indexer.errors import UserError

from ..conftest import minilm_path
from .helpers import index_vectors, snapshot

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance for the module; RayEncoder joins it instead of starting its own."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _text_factory():
    from embedkd.text_encoder import worker_text_encoder

    return functools.partial(worker_text_encoder, minilm_path(), precision="fp32", batch_size=8)


def test_ray_build_equals_local_build(ray_cluster, sqlite_catalog, beir_small, minilm):
    docs = read_corpus(beir_small)
    with RayEncoder(_text_factory(), workers=2, batch_items=8) as encoder:
        assert encoder.record.fingerprint == minilm.record.fingerprint
        out = build_index(sqlite_catalog, "on-ray", encoder, docs, chunk_size=16, progress=False)
    build_index(sqlite_catalog, "local", minilm, read_corpus(beir_small), chunk_size=16, progress=False)
    ids_ray, v_ray = index_vectors(sqlite_catalog, "on-ray")
    ids_local, v_local = index_vectors(sqlite_catalog, "local")
    assert out["count"] == len(ids_ray) == 60
    assert ids_ray == ids_local
    np.testing.assert_allclose(v_ray, v_local, atol=1e-5)


def test_failed_ray_build_changes_nothing_and_resumes(ray_cluster, sqlite_catalog, beir_small, tmp_path):
    from cloudpickle import register_pickle_by_value

    from . import ray_encoders

    register_pickle_by_value(ray_encoders)
    docs = list(read_corpus(beir_small))
    marker, flag = docs[40].content[:60], tmp_path / "fail"
    flag.touch()
    factory = functools.partial(ray_encoders.failing_text_encoder, minilm_path(), marker, str(flag))
    before = snapshot(sqlite_catalog)
    with RayEncoder(factory, workers=2, batch_items=8) as encoder:
        with pytest.raises(UserError, match="worker lost its disk") as err:
            build_index(sqlite_catalog, "r", encoder, read_corpus(beir_small), chunk_size=16, progress=False)
        assert "\n" not in str(err.value)
        assert snapshot(sqlite_catalog) == before  # no index, no items, no files
        flag.unlink()
        out = build_index(sqlite_catalog, "r", encoder, read_corpus(beir_small), chunk_size=16, progress=False)
    assert out["resumed_from"] == 32  # chunks 0 and 1 were kept; the chunk holding document 40 failed
    with RayEncoder(_text_factory(), workers=1) as plain:
        build_index(sqlite_catalog, "fresh", plain, read_corpus(beir_small), chunk_size=16, progress=False)
    np.testing.assert_allclose(index_vectors(sqlite_catalog, "r")[1], index_vectors(sqlite_catalog, "fresh")[1], atol=1e-5)


def test_worker_that_cannot_load_the_model_is_one_line(ray_cluster):
    from embedkd.text_encoder import worker_text_encoder

    with pytest.raises(UserError, match="model path '/nonexistent/model' does not exist"):
        RayEncoder(functools.partial(worker_text_encoder, "/nonexistent/model"), workers=1)


def test_cli_refuses_what_the_cluster_cannot_place(ray_cluster, tmp_path, monkeypatch, capsys, beir_small):
    from embedkd.cli.main import main

    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    code = main(["index", "build", "--index", "g", "--model", minilm_path(), "--corpus", str(beir_small),
                 "--ray", "local", "--workers", "2", "--worker-gpus", "1", "--json"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert "2 workers x 1 GPUs need 2 GPUs but the Ray cluster has 0" in err[-1]


def _record(fp: str) -> ModelRecord:
    return ModelRecord(name="m", source="m", dimension=4, fingerprint=fp)


def test_workers_with_different_weights_are_refused():
    assert check_same_model([_record("a" * 64), _record("a" * 64)]).fingerprint == "a" * 64
    with pytest.raises(UserError, match="2 different models .* aaaaaaaaaaaa, bbbbbbbbbbbb"):
        check_same_model([_record("a" * 64), _record("b" * 64), _record("a" * 64)])


def test_resources_checked_before_placing_workers():
    check_resources({"CPU": 4.0, "GPU": 2.0}, workers=2, cpus=2, gpus=1)
    with pytest.raises(UserError, match="3 workers x 2 CPUs need 6 CPUs but the Ray cluster has 4"):
        check_resources({"CPU": 4.0}, workers=3, cpus=2, gpus=0)


def test_worker_options_without_ray_are_refused(tmp_path, monkeypatch, capsys, beir_small):
    from embedkd.cli.main import main

    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    code = main(["index", "build", "--index", "w", "--model", minilm_path(), "--corpus", str(beir_small),
                 "--workers", "4"])
    assert code == 2
    assert "add --ray local" in capsys.readouterr().err
    assert not (tmp_path / "home" / "indexes" / "w").exists()


def test_local_model_paths_reach_workers_absolute(tmp_path, monkeypatch):
    from embedkd.text_encoder import model_source

    (tmp_path / "v2").mkdir()
    monkeypatch.chdir(tmp_path)
    assert model_source("./v2") == str(tmp_path / "v2")  # Ray workers may run in another directory
    assert model_source("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
