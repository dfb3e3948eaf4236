"""Background gc in the server (`indexer/auto_gc.py`, `embedkd serve --gc-every`): what killed processes left is
deleted on the next round, what can still be used is kept, and /metrics says what went."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from indexer import pins
from indexer.auto_gc import AutoCollector
from indexer.build import build_index
from indexer.corpus import ListSource, read_corpus
from indexer.errors import UserError
from indexer.search import Searcher
from indexer.service import create_app

from .helpers import serving


def test_the_server_deletes_what_killed_processes_left(sqlite_catalog, minilm, beir_small):
    """A file the index's generation does not name (a write killed after its commit) and the pins of an export
    whose process is gone go in the next round; the index, a pin of a live process and a job that can resume stay."""
    docs = list(read_corpus(beir_small))[:10]
    build_index(sqlite_catalog, "web", minilm, ListSource(docs), progress=False)
    folder = sqlite_catalog.settings.index_dir / "web"
    orphan = folder / "web.g0.s0.faiss"  # as an older generation's file a killed write did not delete
    orphan.write_bytes(b"x" * 5000)
    jobs = sqlite_catalog.settings.job_dir
    dead = jobs / f"{pins.prefix('export', pid=2**22 + 4321)}abcd1234"
    live = jobs / f"{pins.prefix('export', pid=os.getpid())}abcd1234"
    for pinned in (dead, live):
        pinned.mkdir(parents=True)
        (pinned / "items.jsonl").write_text("{}\n")
    collector = AutoCollector(sqlite_catalog, every_s=0.3)
    with serving(create_app(Searcher(sqlite_catalog, lambda _s: minilm), collector=collector)) as url:
        with httpx.Client(base_url=url, timeout=30) as c:
            deadline = time.time() + 60
            while (orphan.exists() or dead.exists()) and time.time() < deadline:
                time.sleep(0.1)
            assert not orphan.exists() and not dead.exists() and live.exists()
            hits = c.post("/search", json={"index": "web", "query": docs[3].content, "k": 1}).json()["results"]
            assert hits[0]["id"] == docs[3].id
            metrics = c.get("/metrics").text
            assert collector.counts["done"] >= 1 and collector.counts["removed_files"] == 2
            assert f"embedkd_gc_removed_bytes_total {float(collector.counts['removed_bytes'])}" in metrics
            assert collector.counts["removed_bytes"] >= 5000 and 'embedkd_gc_rounds_total{outcome="failed"} 0.0' in metrics


def test_bad_gc_intervals_are_refused():
    with pytest.raises(UserError, match="positive number of seconds"):
        AutoCollector(None, every_s=0)
