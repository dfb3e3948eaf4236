"""`index add --delete-missing` (a corpus snapshot made the index's whole content, in one generation) and
`index delete --ids-file`: the synced index equals the snapshot; a truncated snapshot is refused, nothing
changed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexer.build import add_documents, build_index
from indexer.catalog import get_index
from indexer.corpus import Doc, ListSource, read_corpus
from indexer.errors import UserError
from indexer.models import Item
from indexer.verify import verify_index

from .helpers import index_vectors, snapshot


def test_a_snapshot_becomes_the_index_in_one_generation(catalog, minilm, beir_small):
    docs = list(read_corpus(beir_small))
    build_index(catalog, "s", minilm, ListSource(docs[:20]), progress=False)
    snap = docs[2:22]  # docs 0-1 gone, 20-21 new
    snap[3] = Doc(snap[3].id, snap[3].content + " (revised)", snap[3].info)  # doc 5: new text
    snap[4] = Doc(snap[4].id, snap[4].content, {"metadata": {"team": "blue"}})  # doc 6: new metadata
    out = add_documents(catalog, "s", minilm, ListSource(snap), progress=False, delete_missing=True)
    assert (out["added"], out["updated"], out["metadata_updated"], out["deleted"], out["unchanged"]) == (2, 1, 1, 2, 16)
    assert out["count"] == 20 and out["generation"] == 2
    ids, vectors = index_vectors(catalog, "s")
    assert sorted(ids) == sorted(d.id for d in snap)
    want = minilm([d.content for d in sorted(snap, key=lambda d: d.id)])
    np.testing.assert_allclose(vectors[np.argsort(ids)], want, atol=1e-5)  # the revised text's vector too
    with catalog.session() as s:
        index = get_index(s, "s")
        assert s.query(Item).filter(Item.index_id == index.id, Item.external_id == docs[6].id).one().info == {
            "metadata": {"team": "blue"}}
    assert verify_index(catalog, "s")["ok"]
    # deletions alone: no document to encode, still one new generation
    out = add_documents(catalog, "s", minilm, ListSource(snap[:18]), progress=False, delete_missing=True)
    assert (out["added"], out["deleted"], out["count"], out["generation"]) == (0, 2, 18, 3)
    assert verify_index(catalog, "s")["ok"]


def test_a_truncated_snapshot_is_refused(sqlite_catalog, minilm, beir_small):
    docs = list(read_corpus(beir_small))
    build_index(sqlite_catalog, "s", minilm, ListSource(docs[:20]), progress=False)
    before = snapshot(sqlite_catalog)
    with pytest.raises(UserError, match=r"the corpus lacks 15 of index 's''s 20 items \(75%\); --delete-missing "
                                        r"deletes at most 10% \(--max-delete\)") as err:
        add_documents(sqlite_catalog, "s", minilm, ListSource(docs[:5] + docs[30:32]), progress=False,
                      delete_missing=True)
    assert "nothing was changed" in str(err.value) and snapshot(sqlite_catalog) == before
    out = add_documents(sqlite_catalog, "s", minilm, ListSource(docs[:5]), progress=False, delete_missing=True,
                        max_delete=0.8)
    assert (out["deleted"], out["count"]) == (15, 5)


def test_cli_sync_and_ids_file(tmp_path, monkeypatch, capsys, beir_small):
    from embedkd.cli.main import main

    from ..conftest import minilm_path

    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    docs = [json.loads(line) for line in (beir_small / "corpus.jsonl").read_text().splitlines()]
    first = tmp_path / "first.jsonl"
    first.write_text("".join(json.dumps(d) + "\n" for d in docs[:12]))
    assert main(["index", "build", "--index", "c", "--model", minilm_path(), "--corpus", str(first), "--json"]) == 0
    ids = tmp_path / "gone.txt"
    ids.write_text(f"{docs[0]['_id']}\n\n{docs[1]['_id']}\n")
    assert main(["index", "delete", "--index", "c", docs[2]["_id"], "--ids-file", str(ids), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["deleted"] == 3
    snap = tmp_path / "snap.jsonl"
    snap.write_text("".join(json.dumps(d) + "\n" for d in docs[4:13]))  # doc 3 gone, doc 12 new
    assert main(["index", "add", "--index", "c", "--corpus", str(snap), "--delete-missing", "--max-delete", "2"]) == 2
    assert "--max-delete is a share of the index between 0 and 1, got 2.0" in capsys.readouterr().err
    assert main(["index", "add", "--index", "c", "--corpus", str(snap), "--delete-missing", "--max-delete", "0.2",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["added"], out["deleted"], out["count"]) == (1, 1, 9)
    assert main(["index", "delete", "--index", "c", "--ids-file", str(tmp_path / "none.txt")]) == 2
    assert "--ids-file" in capsys.readouterr().err
