from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from indexer.context import open_catalog
from indexer.search import Searcher
from indexer.service import create_app
from indexer.settings import load_settings
from reid.gallery import build_gallery, query_gallery
from reid.http import MAX_SHOTS, gallery_router, upload_dir


@pytest.fixture
def served(trained_model, market_slice, tmp_path):
    """A catalog with gallery "people" (the slice's gallery crops) and a client of the app serving it."""
    catalog = open_catalog(load_settings(home=tmp_path / "home"))
    try:
        build_gallery(catalog, "people", trained_model, [market_slice / "bounding_box_test"])
        app = create_app(Searcher(catalog))
        app.include_router(gallery_router(catalog))
        yield catalog, TestClient(app)
    finally:
        catalog.close()


def test_gallery_routes_query_upload_remove(served, trained_model, market_slice, tmp_path):
    catalog, client = served
    crop = sorted((market_slice / "bounding_box_test").iterdir())[2]
    r = client.post("/reid/galleries/people/query?k=2", files={"image": (crop.name, crop.read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["id"] == crop.stem and len(r.json()["results"]) == 2
    # another person's crops only (a field the gallery keeps per crop)
    other = next(int(p.name[:4]) for p in sorted((market_slice / "bounding_box_test").iterdir())
                 if int(p.name[:4]) != int(crop.name[:4]))
    r = client.post("/reid/galleries/people/query", params=[("k", "3"), ("where", f"pid={other}")],
                    files={"image": (crop.name, crop.read_bytes(), "image/jpeg")})
    assert r.status_code == 200 and r.json()["results"] and all(h["pid"] == other for h in r.json()["results"])
    # the gallery's own model by its folder is fine; a folder with no adapter is refused before it loads
    r = client.post("/reid/galleries/people/query", params={"k": 1, "model": str(trained_model)},
                    files={"image": (crop.name, crop.read_bytes(), "image/jpeg")})
    assert r.status_code == 200 and r.json()["results"][0]["id"] == crop.stem
    r = client.post("/reid/galleries/people/query", params={"model": str(tmp_path)},
                    files={"image": (crop.name, crop.read_bytes(), "image/jpeg")})
    assert r.status_code == 404 and "run `embedkd reid gallery upgrade --gallery people" in r.json()["detail"]

    q = sorted((market_slice / "query").iterdir())[0]
    r = client.post("/reid/galleries/people/crops", files=[("images", (q.name, q.read_bytes(), "image/jpeg"))])
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 1
    assert (upload_dir(catalog, "people") / q.name).is_file()

    r = client.post("/reid/galleries/people/crops", files=[("images", ("0001_c1s1_1_01.jpg", b"junk", "image/jpeg"))])
    assert r.status_code == 400 and "cannot read image" in r.json()["detail"]
    assert not (upload_dir(catalog, "people") / "0001_c1s1_1_01.jpg").exists()

    # A batch refused for one bad crop restores a crop it would have replaced.
    other = sorted((market_slice / "query").iterdir())[1]
    r = client.post("/reid/galleries/people/crops", files=[("images", (q.name, other.read_bytes(), "image/jpeg")),
                                                            ("images", ("0002_c1s1_1_01.jpg", b"junk", "image/jpeg"))])
    assert r.status_code == 400 and "cannot read image" in r.json()["detail"]
    assert (upload_dir(catalog, "people") / q.name).read_bytes() == q.read_bytes()

    r = client.post("/reid/galleries/people/query", files={"image": ("x.jpg", b"junk", "image/jpeg")})
    assert r.status_code == 400
    # several crops of one person (a tracklet): one search, by the mean of their embeddings
    shots = sorted((market_slice / "query").iterdir())[:3]
    r = client.post("/reid/galleries/people/query?k=4",
                    files=[("image", (p.name, p.read_bytes(), "image/jpeg")) for p in shots])
    assert r.status_code == 200 and r.json()["shots"] == 3
    assert r.json()["results"] == query_gallery(catalog, "people", shots, k=4, fuse=True)[0]
    r = client.post("/reid/galleries/people/query",
                    files=[("image", (crop.name, crop.read_bytes(), "image/jpeg"))] * (MAX_SHOTS + 1))
    assert r.status_code == 400 and f"at most {MAX_SHOTS} crops of one person" in r.json()["detail"]
    assert client.post("/reid/galleries/nobody/query", files={"image": (crop.name, crop.read_bytes())}).status_code == 404
    r = client.post("/reid/galleries/nobody/crops", files=[("images", (q.name, q.read_bytes(), "image/jpeg"))])
    assert r.status_code == 404 and "no gallery named 'nobody' (known galleries: people)" in r.json()["detail"]
    assert not upload_dir(catalog, "nobody").exists()  # refused before anything was written

    assert client.delete(f"/reid/galleries/people/crops/{q.stem}").json()["deleted"] == 1
    assert not (upload_dir(catalog, "people") / q.name).exists()  # the uploaded image goes with it
    assert client.delete("/reid/galleries/people/crops/nobody").status_code == 400

    # Dropping the gallery removes its index and every crop uploaded to it.
    r = client.post("/reid/galleries/people/crops", files=[("images", (q.name, q.read_bytes(), "image/jpeg"))])
    assert r.status_code == 200 and (upload_dir(catalog, "people") / q.name).is_file()
    assert client.delete("/reid/galleries/people").json() == {"gallery": "people", "dropped": True, "uploads_removed": 1}
    assert not upload_dir(catalog, "people").exists()
    assert client.post("/reid/galleries/people/query", files={"image": (crop.name, crop.read_bytes())}).status_code == 404
    assert client.delete("/reid/galleries/people").status_code == 404


def test_concurrent_uploads_of_one_crop_name_leave_file_and_index_agreeing(served, market_slice):
    from ..indexer.helpers import run_concurrently

    catalog, client = served
    crops = sorted((market_slice / "query").iterdir())[:4]
    name = "0001_c1s1_000001_01.jpg"

    def upload(crop):
        return client.post("/reid/galleries/people/crops", files=[("images", (name, crop.read_bytes(), "image/jpeg"))])

    out = run_concurrently(upload, crops)
    assert [r.status_code for r in out] == [200] * 4, [r.text for r in out]
    stored = (upload_dir(catalog, "people") / name).read_bytes()
    assert stored in [c.read_bytes() for c in crops]
    # the index holds the vector of the bytes on disk: the stored file finds itself at cosine 1
    top = query_gallery(catalog, "people", [stored], k=1)[0][0]
    assert top["id"] == "0001_c1s1_000001_01" and abs(top["score"] - 1.0) < 1e-4


def test_a_gallery_moves_with_its_uploaded_crops(served, market_slice, tmp_path, monkeypatch, capsys):
    """`index export` takes the crops uploaded over HTTP (they live in EMBEDKD_HOME, not in the user's folders);
    `index import` places them in the new catalog's folder for the gallery, its items point there, and removing
    a crop there removes its file. Crops indexed from the user's folders keep their paths."""
    import json

    from embedkd.cli.main import main
    from indexer.catalog import get_item

    catalog, client = served
    ups = sorted((market_slice / "query").iterdir())[:2]
    r = client.post("/reid/galleries/people/crops", files=[("images", (q.name, q.read_bytes(), "image/jpeg")) for q in ups])
    assert r.status_code == 200 and r.json()["added"] == 2
    monkeypatch.setenv("EMBEDKD_HOME", str(catalog.settings.home))
    assert main(["index", "export", "--index", "people", "--out", str(tmp_path / "moved"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["attached_files"] == 2

    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home2"))
    assert main(["index", "import", "--from", str(tmp_path / "moved"), "--index", "crowd", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["attached_files"] == 2
    other = open_catalog(load_settings(home=tmp_path / "home2"))
    try:
        target = upload_dir(other, "crowd")
        assert sorted(p.name for p in target.iterdir()) == [q.name for q in ups]
        with other.session() as s:
            assert get_item(s, "crowd", ups[0].stem).info["path"] == str(target / ups[0].name)
            kept = sorted((market_slice / "bounding_box_test").iterdir())[0]
            assert get_item(s, "crowd", kept.stem).info["path"] == str(kept)  # the user's own folder
        assert query_gallery(other, "crowd", [ups[1]], k=1)[0][0]["id"] == ups[1].stem
        assert main(["reid", "gallery", "remove", "--gallery", "crowd", ups[0].stem]) == 0
        assert not (target / ups[0].name).exists() and (upload_dir(catalog, "people") / ups[0].name).is_file()

        # a file of other bytes where a crop would go: refused, nothing imported
        (upload_dir(other, "again")).mkdir(parents=True)
        (upload_dir(other, "again") / ups[1].name).write_bytes(b"someone else")
        assert main(["index", "import", "--from", str(tmp_path / "moved"), "--index", "again"]) != 0
        assert "exists with other content" in capsys.readouterr().err
        with other.session() as s, pytest.raises(Exception, match="again"):
            get_item(s, "again", ups[1].stem)
    finally:
        other.close()


def test_a_crop_removal_that_fails_after_its_commit_deletes_the_image_when_rerun(served, market_slice, monkeypatch):
    """A removed crop's uploaded image (a person's) goes with the purge, owed until done: a removal that fails
    after the index let the crop go (a full disk as the kept texts are rewritten, a killed process) leaves a purge
    job, and the rerun, or `index gc`, deletes the image. Before, the rerun answered "no item" and the image stayed."""
    from indexer import text_log
    from indexer.cleanup import collect_garbage

    catalog, client = served
    q = sorted((market_slice / "query").iterdir())[0]
    assert client.post("/reid/galleries/people/crops", files=[("images", (q.name, q.read_bytes(), "image/jpeg"))]
                       ).status_code == 200
    real = text_log.purge

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(text_log, "purge", full)
    r = client.delete(f"/reid/galleries/people/crops/{q.stem}")
    assert r.status_code == 507 and "free disk space" in r.json()["detail"]
    assert (upload_dir(catalog, "people") / q.name).is_file()  # owed: the purge job holds it
    monkeypatch.setattr(text_log, "purge", real)
    jobs = client.get("/jobs").json()["jobs"]
    assert [(j["kind"], j["state"]) for j in jobs if j["kind"] == "purge"] == [("purge", "failed")]
    assert client.delete(f"/reid/galleries/people/crops/{q.stem}").json()["deleted"] == 0  # the rerun finishes it
    assert not (upload_dir(catalog, "people") / q.name).exists()
    assert client.get(f"/items/{q.stem}", params={"index": "people"}).status_code == 404
    assert collect_garbage(catalog)["removed"] == []


def test_gc_deletes_uploaded_crops_no_item_points_to(served, market_slice, tmp_path):
    """An upload killed after writing its crops and before indexing them leaves images of people that no item
    points to: `index gc` deletes them (past an age, so an upload in flight keeps its files), never an indexed one."""
    import os
    import subprocess
    import sys

    from indexer.cleanup import collect_garbage
    from reid.uploads import collect_uploads

    catalog, client = served
    q = sorted((market_slice / "query").iterdir())[0]
    assert client.post("/reid/galleries/people/crops", files=[("images", (q.name, q.read_bytes(), "image/jpeg"))]
                       ).status_code == 200
    folder = upload_dir(catalog, "people")
    stray = folder / "0099_c1s1_000001_00.jpg"  # written by an upload that was killed before its commit
    stray.write_bytes(q.read_bytes())
    assert collect_garbage(catalog, also=[collect_uploads])["removed"] == []  # too young: an upload may be in flight
    old = os.path.getmtime(stray) - 7200
    os.utime(stray, (old, old))
    os.utime(folder / q.name, (old, old))
    env = {**os.environ, "EMBEDKD_HOME": str(catalog.settings.home)}
    out = subprocess.run([sys.executable, "-m", "embedkd.cli.main", "index", "gc", "--json"], env=env, capture_output=True,
                         text=True, check=True)
    removed = json.loads(out.stdout.strip().splitlines()[-1])["removed"]
    assert [r["path"] for r in removed] == [str(stray)]
    assert not stray.exists() and (folder / q.name).is_file()  # the indexed crop stays
