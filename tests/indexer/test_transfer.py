"""`embedkd index export|import` (`indexer/transfer.py`): an index moved from the SQLite catalog to a PostgreSQL
one answers as before (plain, filtered, through its adapter), verifies, and takes writes; a damaged export
or a taken name is refused with nothing imported."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexer.adapters import Adapter
from indexer.build import add_documents, build_index, delete_items
from indexer.context import open_catalog
from indexer.corpus import Doc, ListSource, read_corpus
from indexer.encoder import ModelRecord
from indexer.errors import Conflict, UserError
from indexer.search import Searcher
from indexer.settings import load_settings
from indexer.transfer import export_index, import_index
from indexer.verify import verify_index

from .helpers import snapshot

V2 = ModelRecord(name="v2", source="v2", dimension=384, fingerprint="f" * 64)


def _tagged(beir_small) -> list[Doc]:
    return [Doc(d.id, d.content, {"metadata": {"group": f"g{i % 3}"}}) for i, d in enumerate(read_corpus(beir_small))]


def _answers(catalog, minilm) -> list:
    searcher, q = Searcher(catalog), minilm(["statins and heart disease", "gene expression"])
    out = []
    for kw in ({}, {"where": {"metadata.group": "g1"}}, {"source_fingerprint": V2.fingerprint}):
        out.append([[(h.id, round(h.score, 5)) for h in row] for row in searcher.search_vectors("t", q, k=5, **kw)])
    return out


def test_an_index_moves_from_sqlite_to_postgres(sqlite_catalog, pg_url, tmp_path, minilm, beir_small):
    from embedkd.upgrade.register import register_adapter

    docs = _tagged(beir_small)
    build_index(sqlite_catalog, "t", minilm, ListSource(docs[:20]), shard_size=8, progress=False)
    add_documents(sqlite_catalog, "t", minilm, ListSource(docs[20:25]), progress=False)
    shift = Adapter(kind="mean-shift", source_fingerprint=V2.fingerprint, target_fingerprint="", source_dim=384,
                    target_dim=384, center=np.full(384, 0.01, np.float32))
    register_adapter(sqlite_catalog, "t", shift, V2, metrics={"agreement": 0.9})
    want = _answers(sqlite_catalog, minilm)

    out = export_index(sqlite_catalog, "t", tmp_path / "export")
    assert (out["count"], out["files"], out["adapters"]) == (25, 6, 1)  # 4 shards, their template and manifest
    pg = open_catalog(load_settings(home=tmp_path / "pg-home", database_url=pg_url), migrate=True)
    got = import_index(pg, tmp_path / "export")
    assert (got["index"], got["count"], got["generation"], got["adapters"]) == ("t", 25, 2, 1)
    assert verify_index(pg, "t")["ok"] and _answers(pg, minilm) == want
    out = add_documents(pg, "t", minilm, ListSource(docs[25:28]), progress=False)  # it takes writes there
    assert (out["added"], out["generation"]) == (3, 3) and verify_index(pg, "t")["ok"]
    with pytest.raises(Conflict, match="already exists; import under another name"):
        import_index(pg, tmp_path / "export")
    assert import_index(pg, tmp_path / "export", name="t-copy")["index"] == "t-copy"
    assert verify_index(pg, "t-copy")["ok"]
    pg.close()


def test_a_damaged_export_is_refused_before_anything_is_written(sqlite_catalog, tmp_path, minilm, beir_small):
    build_index(sqlite_catalog, "t", minilm, ListSource(_tagged(beir_small)[:10]), progress=False)
    export_index(sqlite_catalog, "t", tmp_path / "export")
    with pytest.raises(UserError, match="exists; export into a new folder"):
        export_index(sqlite_catalog, "t", tmp_path / "export")
    shard = next((sqlite_catalog.settings.index_dir / "t").glob("*.faiss"))
    shard.rename(shard.with_suffix(".moved"))
    with pytest.raises(UserError, match="cannot copy .*No such file or directory; check the index with"):
        export_index(sqlite_catalog, "t", tmp_path / "export2")
    assert not (tmp_path / "export2").exists() and not (tmp_path / "export2.tmp").exists()
    other = open_catalog(load_settings(home=tmp_path / "other"))
    before = snapshot(other)
    items = tmp_path / "export" / "items.jsonl"
    items.write_text(items.read_text().replace('"faiss_id": 3', '"faiss_id": 4'))
    with pytest.raises(UserError, match="items.jsonl is missing or does not match the export's checksum"):
        import_index(other, tmp_path / "export", name="u")
    manifest = tmp_path / "export" / "embedkd-index.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format": "other/9"}))
    with pytest.raises(UserError, match="is not an embedkd-index-export/1 export"):
        import_index(other, tmp_path / "export")
    with pytest.raises(UserError, match="is not an index export"):
        import_index(other, tmp_path)
    assert snapshot(other) == before and not (other.settings.index_dir / "u").exists()


def test_cli_export_import(tmp_path, monkeypatch, capsys, minilm, beir_small):
    from embedkd.cli.main import main

    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "a"))
    build_index(open_catalog(load_settings()), "t", minilm, read_corpus(beir_small), progress=False)
    assert main(["index", "export", "--index", "t", "--out", str(tmp_path / "x"), "--with-corpora", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["count"], out["corpora"]) == (60, 1)  # the corpus file it was built from, carried
    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "b"))
    assert main(["index", "import", "--from", str(tmp_path / "x"), "--index", "moved", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["index"], out["corpora"]) == ("moved", 1)
    assert (tmp_path / "b" / "corpora" / "moved" / "0-corpus.jsonl").read_bytes() == (beir_small / "corpus.jsonl").read_bytes()
    assert main(["index", "verify", "--index", "moved"]) == 0
    assert main(["index", "import", "--from", str(tmp_path / "x"), "--index", "bad name"]) == 2
    assert "is not allowed" in capsys.readouterr().err


def test_deleted_ids_listed_in_a_shard_travel_with_the_export(sqlite_catalog, tmp_path, minilm, beir_small):
    docs = _tagged(beir_small)
    build_index(sqlite_catalog, "t", minilm, ListSource(docs[:30]), progress=False)
    delete_items(sqlite_catalog, "t", [docs[1].id, docs[2].id])  # 2 of 30: listed, the shard kept
    q = minilm([docs[1].content, docs[2].content])

    def answers(catalog) -> list:
        return [[(h.id, round(h.score, 5)) for h in row] for row in Searcher(catalog).search_vectors("t", q, k=28)]

    want = answers(sqlite_catalog)
    assert not {docs[1].id, docs[2].id} & {i for row in want for i, _ in row} and len(want[0]) == 28
    export_index(sqlite_catalog, "t", tmp_path / "export")
    other = open_catalog(load_settings(home=tmp_path / "other"), migrate=True)
    assert import_index(other, tmp_path / "export")["count"] == 28
    assert verify_index(other, "t")["ok"] and answers(other) == want
    other.close()


def test_an_export_copies_the_files_after_releasing_the_index(catalog, tmp_path, minilm, beir_small, monkeypatch):
    """Held for the rows and hard links to the generation's files, not for copying gigabytes: writes go on
    meanwhile and are not in the export, which is one generation. It is a copy (a backup must not share the live
    files' bytes), and no pinned files stay behind."""
    import os

    from indexer import locks, transfer

    docs = _tagged(beir_small)
    build_index(catalog, "t", minilm, ListSource(docs[:10]), progress=False)
    copy, held = transfer._copy, []

    def watched(src, dst, *args):
        held.append((src.name, locks.writer(catalog, "t")))
        if len(held) == 1:  # writes while the export copies and streams the items
            delete_items(catalog, "t", [docs[0].id], purge=True)
            add_documents(catalog, "t", minilm, ListSource(docs[10:12]), progress=False)
        return copy(src, dst, *args)

    monkeypatch.setattr(transfer, "_copy", watched)
    out = export_index(catalog, "t", tmp_path / "export")
    assert out["files"] == len(held) >= 2 and all(writer is None for _, writer in held)  # the index was free
    for name, _ in held:
        exported = tmp_path / "export" / "files" / name
        assert os.stat(exported).st_nlink == 1  # a copy: the live file (or its pinned link) is another inode
    assert not list(catalog.settings.job_dir.glob("export-*"))
    exported_ids = [json.loads(line)["id"] for line in (tmp_path / "export" / "items.jsonl").read_text().splitlines()]
    assert sorted(exported_ids) == sorted(d.id for d in docs[:10])  # the generation it took, not the writes after
    other = open_catalog(load_settings(home=tmp_path / "other"))
    import_index(other, tmp_path / "export")
    assert verify_index(other, "t")["ok"] and verify_index(catalog, "t")["ok"]
