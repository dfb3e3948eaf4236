"""`embedkd index verify` (`indexer/verify.py`): a healthy index after builds, adds and deletes passes; each
kind of damage (a lost item row, a corrupt shard, a missing manifest, a lowered next id) is named in one line
and the command exits 1."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from indexer import verify
from indexer.build import add_documents, build_index, delete_items
from indexer.catalog import get_index
from indexer.corpus import Doc, ListSource, read_corpus
from indexer.errors import Conflict
from indexer.models import Index, Item
from indexer.verify import verify_index


def _build(catalog, minilm, docs, name: str) -> None:
    build_index(catalog, name, minilm, ListSource(docs), shard_size=5, progress=False)


def test_healthy_indexes_pass_and_damage_is_named(catalog, minilm, beir_small):
    docs = list(read_corpus(beir_small))
    _build(catalog, minilm, docs[:12], "ok")
    add_documents(catalog, "ok", minilm, ListSource(docs[12:16]), progress=False)
    delete_items(catalog, "ok", [docs[3].id, docs[13].id])
    report = verify_index(catalog, "ok")
    assert report == {"index": "ok", "ok": True, "vectors": 14, "items": 14, "shards": 4, "problems": []}

    for name in ("row", "shard", "manifest", "next"):
        _build(catalog, minilm, docs[:12], name)
    with catalog.session() as s:
        row, nxt = get_index(s, "row"), get_index(s, "next")
        s.execute(sa.delete(Item).where(Item.index_id == row.id, Item.faiss_id == 7))
        s.execute(sa.update(Index).where(Index.id == nxt.id).values(next_id=11))
        files = {n: get_index(s, n).file for n in ("shard", "manifest")}
    folder = catalog.settings.index_dir
    shard_file = json.loads((folder / "shard" / files["shard"]).read_text())["shards"][1]["file"]
    with open(folder / "shard" / shard_file, "ab") as f:
        f.write(b"\0")
    (folder / "manifest" / files["manifest"]).unlink()
    problems = {n: verify_index(catalog, n)["problems"] for n in ("row", "shard", "manifest", "next")}
    assert problems["row"] == ["1 vectors without an item row (e.g. FAISS id 7)"]
    assert len(problems["shard"]) == 1 and problems["shard"][0].startswith("shard 1: index file")
    assert "does not match its catalog checksum" in problems["shard"][0]
    assert len(problems["manifest"]) == 1 and "is missing" in problems["manifest"][0]
    assert problems["next"] == ["FAISS id 11 is not below the catalog's next id 11: a new item would reuse it"]


def test_cli_verify_exits_1_with_one_line(tmp_path, monkeypatch, capsys, minilm, beir_small):
    from embedkd.cli.main import main
    from indexer.context import open_catalog
    from indexer.settings import load_settings

    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    catalog = open_catalog(load_settings())
    docs = list(read_corpus(beir_small))[:8]
    _build(catalog, minilm, docs, "a")
    _build(catalog, minilm, docs, "b")
    assert main(["index", "verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ok"] is True
    with catalog.session() as s:
        s.execute(sa.update(Index).where(Index.name == "b").values(count=9))
    assert main(["index", "verify", "--json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert [r["ok"] for r in report["indexes"]] == [True, False] and report["ok"] is False
    assert captured.err.strip() == ("embedkd: error: 1 of 2 indexes failed verification; b: FAISS holds 8 vectors "
                                    "but the catalog's count says 9")
    assert main(["index", "verify", "--index", "a"]) == 0
    assert main(["index", "verify", "--index", "nope"]) == 2


def test_deleted_ids_listed_in_the_manifest_are_checked(catalog, minilm, beir_small):
    """Deletes that leave their vectors in a shard's file (listed as deleted) pass; a listed id the shard does not
    hold is named."""
    from indexer.hashing import sha256_file

    docs = list(read_corpus(beir_small))
    build_index(catalog, "t", minilm, ListSource(docs[:20]), shard_size=20, progress=False)
    delete_items(catalog, "t", [docs[3].id, docs[9].id])
    with catalog.session() as s:
        file = get_index(s, "t").file
    path = catalog.settings.index_dir / "t" / file
    manifest = json.loads(path.read_text())
    assert manifest["shards"][0]["deleted"] == [3, 9] and manifest["shards"][0]["count"] == 20
    assert verify_index(catalog, "t") == {"index": "t", "ok": True, "vectors": 18, "items": 18, "shards": 1,
                                          "problems": []}
    manifest["shards"][0]["deleted"] = [3, 9, 57]
    path.write_text(json.dumps(manifest))
    with catalog.session() as s:
        get_index(s, "t").checksum = sha256_file(path)
    assert verify_index(catalog, "t")["problems"] == ["shard 0 lists 1 deleted ids it does not hold (e.g. 57)"]


def test_an_ivf_shard_misnumbered_by_an_old_delete_is_named(catalog, minilm, beir_small):
    """Before store.remove_ids closed up IVF list positions, IDMap2's removal left them pointing past the id map
    (every later vector answered with the next id). verify names a shard in that state."""
    import faiss
    import numpy as np

    from indexer import shards, store

    docs = list(read_corpus(beir_small))
    build_index(catalog, "v", minilm, ListSource(docs[:40]), factory="IVF4,Flat", progress=False)
    delete_items(catalog, "v", [docs[2].id], purge=True)
    assert verify_index(catalog, "v")["ok"]
    with catalog.session() as s:
        row = get_index(s, "v")
        path = catalog.settings.index_dir / "v" / row.file
        index = shards.load(path, row.checksum)
        old = index.shard(0)
        old.remove_ids(np.array([int(store.stored_ids(old)[5])]))  # IDMap2's own removal, as embedkd once did
        assert faiss.try_extract_index_ivf(store._inner(old)) is not None
        index.dirty.add(0)
        manifest, row.checksum = shards.write(index, path.parent, "v.g9")
        row.file, row.count = manifest.name, int(old.ntotal)
    problems = verify_index(catalog, "v")["problems"]
    assert any("its IVF lists do not match its id map" in p for p in problems), problems


def test_a_damaged_template_is_named(catalog, minilm, beir_small):
    docs = list(read_corpus(beir_small))
    build_index(catalog, "t", minilm, ListSource(docs[:10]), progress=False)
    with catalog.session() as s:
        file = get_index(s, "t").file
    folder = catalog.settings.index_dir / "t"
    template = folder / json.loads((folder / file).read_text())["template"]["file"]
    with open(template, "ab") as f:
        f.write(b"\0")
    problems = verify_index(catalog, "t")["problems"]
    assert len(problems) == 1 and problems[0].startswith("template: index file") and "checksum" in problems[0]


def test_an_index_being_written_is_checked_again_not_reported_broken(sqlite_catalog, minilm, beir_small, monkeypatch):
    """A write that commits while verify reads deletes files of the generation it reads (seen as missing): verify
    checks the new generation instead; written at every attempt, it says so (a Conflict), not that files are gone."""
    docs = list(read_corpus(beir_small))[:10]
    _build(sqlite_catalog, minilm, docs, "v")
    real, writes = verify._check, []

    def racing(catalog, name):
        out, generation = real(catalog, name)
        if len(writes) < budget:  # a write commits as this attempt reads
            writes.append(add_documents(catalog, name, minilm, ListSource([Doc(f"new{len(writes)}", "a new text")]),
                                        progress=False))
            out = {**out, "ok": False, "problems": ["index file ... is missing"]}
        return out, generation

    monkeypatch.setattr(verify, "_check", racing)
    budget = 1
    out = verify_index(sqlite_catalog, "v")
    assert out["ok"] and out["items"] == 11 and len(writes) == 1
    budget = 4
    with pytest.raises(Conflict, match="written 3 times while it was being verified"):
        verify_index(sqlite_catalog, "v")
