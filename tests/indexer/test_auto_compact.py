"""Background compaction in the server (`indexer/auto_compact.py`, `embedkd serve --compact-every`): the indexes
that need it are compacted, the others left as they are, a busy one skipped until the next round."""

from __future__ import annotations

import time

import faiss
import httpx
import numpy as np
import pytest

from indexer import locks, shards
from indexer.auto_compact import AutoCompactor
from indexer.build import build_index, delete_items
from indexer.catalog import get_index
from indexer.compaction import compaction_need
from indexer.corpus import ListSource, read_corpus
from indexer.errors import UserError
from indexer.search import Searcher
from indexer.service import create_app

from .helpers import load_index, serving


def _sharded(counts: list[int], deleted: list[list[int]], size: int = 100) -> shards.ShardedIndex:
    """An index whose shards hold `counts` vectors (ids in order), `deleted` listed with each."""
    template = faiss.index_factory(4, "IDMap2,Flat", faiss.METRIC_INNER_PRODUCT)
    out, first = [], 0
    for n, gone in zip(counts, deleted):
        index = faiss.clone_index(template)
        index.add_with_ids(np.ones((n, 4), np.float32), np.arange(first, first + n))
        out.append(shards.Shard(first, index, f"s{first}", "c", n, np.array(gone, np.int64)))
        first += n
    return shards.ShardedIndex(out, size)


def test_compaction_need():
    assert compaction_need(_sharded([100, 50], [[], []])) is None
    assert compaction_need(_sharded([100, 50], [[], list(range(100, 108))])) == "8 of its 150 stored vectors are deleted"
    assert compaction_need(_sharded([100, 50], [[], list(range(100, 107))])) is None  # 4.7% < 5%
    assert compaction_need(_sharded([100, 50], [[1], []]), deleted_share=0.005) is not None
    small = _sharded([80] + [2] * 13, [[]] * 14)  # into two: 80 + 10 x 2 (the shard size), 3 x 2: 12 merged away
    assert compaction_need(small) == "12 of its 14 shards would be merged away"
    assert compaction_need(small, folds=13) is None


def _two_indexes(catalog, encoder, docs) -> None:
    build_index(catalog, "a", encoder, ListSource(docs[:20]), progress=False)
    build_index(catalog, "b", encoder, ListSource(docs[20:60]), progress=False)
    delete_items(catalog, "b", [docs[20].id])  # 2.5% of b: under the 5% that needs a compaction


def _generation(catalog, name: str) -> int:
    with catalog.session() as s:
        return get_index(s, name).generation


def test_a_round_compacts_what_needs_it_and_skips_a_busy_index(catalog, minilm, beir_small):
    docs = list(read_corpus(beir_small))
    _two_indexes(catalog, minilm, docs)
    compactor = AutoCompactor(catalog, every_s=60)
    assert compactor.round() == [] and _generation(catalog, "b") == 2  # nothing needs it: nothing written

    delete_items(catalog, "a", [docs[0].id, docs[1].id])  # 10% of a
    with locks.compaction_lock(catalog, "a"):  # another process compacts it
        assert compactor.round() == []
    assert compactor.counts == {"busy": 1} and _generation(catalog, "a") == 2

    (done,) = compactor.round()
    assert (done["index"], done["why"], done["deleted_before"]) == ("a", "2 of its 20 stored vectors are deleted", 2)
    assert compactor.counts == {"busy": 1, "done": 1}
    assert _generation(catalog, "a") == 3 and _generation(catalog, "b") == 2
    assert compactor.round() == []  # done: nothing needs it now


def test_bad_settings():
    with pytest.raises(UserError, match="positive number of seconds"):
        AutoCompactor(None, every_s=0)
    with pytest.raises(UserError, match="--compact-deleted"):
        AutoCompactor(None, every_s=1, deleted_share=1.5)


def test_the_server_compacts_in_the_background(sqlite_catalog, minilm, beir_small):
    """Deletes over HTTP leave their vectors listed; the server's next round compacts the index, and searches
    answered throughout."""
    docs = list(read_corpus(beir_small))[:20]
    build_index(sqlite_catalog, "web", minilm, ListSource(docs), progress=False)
    searcher = Searcher(sqlite_catalog, lambda _s: minilm)
    compactor = AutoCompactor(sqlite_catalog, every_s=0.3)
    with serving(create_app(searcher, compactor=compactor)) as url:
        with httpx.Client(base_url=url, timeout=30) as c:
            for doc in docs[:2]:
                assert c.delete(f"/indexes/web/items/{doc.id}").status_code == 200
            deadline = time.time() + 60
            while compactor.counts["done"] < 1 and time.time() < deadline:
                hits = c.post("/search", json={"index": "web", "query": docs[5].content, "k": 3}).json()["results"]
                assert hits[0]["id"] == docs[5].id
                time.sleep(0.1)
            assert compactor.counts["done"] == 1
            hits = c.post("/search", json={"index": "web", "query": docs[0].content, "k": 20}).json()["results"]
            assert len(hits) == 18 and docs[0].id not in {h["id"] for h in hits}
            assert 'embedkd_auto_compactions_total{outcome="done"} 1.0' in c.get("/metrics").text
            ran = [j for j in c.get("/jobs", params={"index": "web"}).json()["jobs"] if j["kind"] == "compact"]
            assert [(j["state"], j["progress"], j["total"]) for j in ran] == [("done", 20, 20)]  # shown as a job
    index = load_index(sqlite_catalog, "web")
    assert [len(s.deleted) for s in index.shards] == [0] and index.ntotal == 18



def test_index_list_shows_what_the_files_hold_and_whether_to_compact(sqlite_catalog, minilm, beir_small, monkeypatch,
                                                                      capsys):
    import json

    from embedkd.cli.main import main

    docs = list(read_corpus(beir_small))
    _two_indexes(sqlite_catalog, minilm, docs)
    delete_items(sqlite_catalog, "a", [docs[0].id, docs[1].id])
    monkeypatch.setenv("EMBEDKD_HOME", str(sqlite_catalog.settings.home))

    def listed() -> dict:
        assert main(["index", "list", "--json"]) == 0
        return {r["name"]: r for r in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["indexes"]}

    rows = listed()
    assert (rows["a"]["shards"], rows["a"]["deleted_listed"], rows["a"]["compacting"]) == (1, 2, None)
    assert rows["a"]["compaction_need"] == "2 of its 20 stored vectors are deleted"
    assert (rows["b"]["deleted_listed"], rows["b"]["compaction_need"]) == (1, None)
    with locks.compaction_lock(sqlite_catalog, "a"):
        assert listed()["a"]["compacting"].startswith("embedkd ")
    assert main(["index", "list"]) == 0
    assert "1 shards, 2 deleted in files, compact: 2 of its 20" in capsys.readouterr().out


def test_compact_all_from_the_command_line(sqlite_catalog, minilm, beir_small, monkeypatch, capsys):
    """`index compact --all` (for cron, beside a server run with --compact-every 0) compacts what needs it only."""
    import json

    from embedkd.cli.main import main

    docs = list(read_corpus(beir_small))
    _two_indexes(sqlite_catalog, minilm, docs)
    delete_items(sqlite_catalog, "a", [docs[0].id, docs[1].id])
    monkeypatch.setenv("EMBEDKD_HOME", str(sqlite_catalog.settings.home))
    assert main(["index", "compact", "--all", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [c["index"] for c in out["compacted"]] == ["a"] and (out["busy"], out["failed"]) == ([], {})
    assert _generation(sqlite_catalog, "b") == 2
    assert main(["index", "compact", "--all", "--deleted", "0.02", "--json"]) == 0  # b's 2.5% now counts
    assert [c["index"] for c in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["compacted"]] == ["b"]
    assert main(["index", "compact", "--all", "--deleted", "2"]) != 0
    assert "--deleted is a share" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # neither --index nor --all: argparse's one-line error, exit 2
        main(["index", "compact"])
