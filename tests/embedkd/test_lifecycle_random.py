"""Random lifecycles of an index, end to end, against a plain model of what the writes say: HTTP writes over a real
socket (their texts kept), adds from files, deletes and purges, compactions (some failing midway), gc, a move to
another name by export and import (the files carried, the originals gone), and backfills to another model and back
(some killed midway and resumed after more writes); then the same kinds of writes from concurrent clients while
another thread verifies, fits an adapter, compacts, collects garbage, moves and backfills. After every step: the
index holds exactly the documents the writes left, each as the current model embeds its latest text; its files
verify; a backfill could find every document; a document's text is its own top hit over HTTP, among all and among
its metadata group; and no purged text is left in any file of EMBEDKD_HOME. `LIFE_SEEDS=40` runs more lives."""

from __future__ import annotations

import gzip
import json
import os
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from embedkd.upgrade.backfill import backfill, backfill_corpora, coverage
from embedkd.upgrade.run import fit_upgrade
from indexer import store, text_log
from indexer.build import add_documents, build_index, drop_index
from indexer.cleanup import collect_garbage
from indexer.compaction import compact_index
from indexer.corpus import Doc, read_corpus
from indexer.errors import Conflict
from indexer.search import Searcher
from indexer.service import create_app
from indexer.transfer import export_index, import_index
from indexer.verify import verify_index
from tests.indexer.helpers import index_vectors, run_concurrently, serving

from .test_upgrade_backfill import Flaky
from .test_upgrade_fit import WORDS, HashEncoder


class Life:
    """One index's life: the writes made to it, and what they say it holds (`truth`: id -> latest text; `group`:
    id -> its latest metadata field `group`, which filtered searches select by)."""

    def __init__(self, catalog, tmp_path: Path, rng: np.random.Generator, url: str, models: tuple) -> None:
        self.catalog, self.tmp, self.rng, self.url, self.models = catalog, tmp_path, rng, url, models
        self.name, self.model, self.generation = "k0", models[0], 0
        self.truth: dict[str, str] = {}
        self.group: dict[str, int] = {}
        self.purged: set[str] = set()  # the unique token of every text of a purged document
        self.texts_of: dict[str, list[str]] = {}  # every text each document had, for the purge check
        self.serial = 0
        self.files = 0

    def _text(self, doc_id: str) -> str:
        self.serial += 1
        text = f"{' '.join(self.rng.choice(WORDS, 6))} tok{self.serial:05d}x"  # the token: unique, no prefix of another
        self.texts_of.setdefault(doc_id, []).append(text)
        return text

    def _doc(self, doc_id: str) -> Doc:
        return Doc(doc_id, self._text(doc_id), {"metadata": {"group": int(self.rng.integers(3))}})

    def _written(self, docs: list[Doc]) -> None:
        self.truth.update({d.id: d.content for d in docs})
        self.group.update({d.id: d.info["metadata"]["group"] for d in docs})

    def _new_ids(self, n: int) -> list[str]:
        return [f"d{self.serial + i}" for i in range(n)]

    def _some(self, n: int) -> list[str]:
        present = sorted(self.truth)
        return [str(i) for i in self.rng.choice(present, min(n, len(present)), replace=False)] if present else []

    def build(self, n: int) -> None:
        docs = [self._doc(i) for i in self._new_ids(n)]
        build_index(self.catalog, self.name, self.model, read_corpus(self._user_file(docs)), shard_size=8,
                    progress=False)
        self._written(docs)

    def _user_file(self, docs: list[Doc]) -> Path:
        self.files += 1
        return user_file(self.tmp / "user" / f"corpus{self.files}.jsonl", docs)

    # the steps ------------------------------------------------------------------------------------------
    def http_write(self) -> None:
        """New documents and new texts of present ones, in one request."""
        docs = [self._doc(i) for i in self._new_ids(int(self.rng.integers(1, 5)))]
        docs += [self._doc(i) for i in self._some(int(self.rng.integers(0, 3)))]
        r = _sent(httpx.post, f"{self.url}/indexes/{self.name}/documents", json={"documents": [_record(d) for d in docs]})
        assert r.status_code == 200, r.text
        self._written(docs)

    def http_delete(self) -> None:
        for doc_id in self._some(1):
            purge = bool(self.rng.integers(2))
            r = _sent(httpx.delete, f"{self.url}/indexes/{self.name}/items/{doc_id}", params={"purge": purge})
            assert r.status_code == 200, r.text
            del self.truth[doc_id], self.group[doc_id]
            if purge:
                self.purged.update(t.split()[-1] for t in self.texts_of[doc_id])

    def file_add(self) -> None:
        """`index add` from a new file of the user's: new documents and new texts of present ones."""
        docs = [self._doc(i) for i in self._new_ids(int(self.rng.integers(2, 7)))]
        docs += [self._doc(i) for i in self._some(int(self.rng.integers(0, 3)))]
        add_documents(self.catalog, self.name, self.model, read_corpus(self._user_file(docs)), progress=False)
        self._written(docs)

    def compact(self, monkeypatch) -> None:
        if self.rng.integers(3) == 0:  # fails as it stages its second shard: the next one resumes
            real = store.write_index

            def failing(index, path):
                if ".compacting-" in path.name and list(path.parent.glob(f"{self.name}.compacting-*.faiss")):
                    raise OSError("no space left on device (simulated)")
                return real(index, path)

            monkeypatch.setattr(store, "write_index", failing)
            try:
                compact_index(self.catalog, self.name)
            except OSError:
                pass
            finally:
                monkeypatch.setattr(store, "write_index", real)
        else:
            compact_index(self.catalog, self.name)

    def gc(self) -> None:
        collect_garbage(self.catalog)

    def move(self) -> None:
        """Export with the corpora, import under a new name, drop the old one; the user's files are then gone (the
        index lives on another machine now), so a backfill must read the carried copies."""
        self.generation += 1
        out = self.tmp / f"export{self.generation}"
        old, self.name = self.name, f"k{self.generation}"
        export_index(self.catalog, old, out, with_corpora=True)
        import_index(self.catalog, out, name=self.name)
        drop_index(self.catalog, old)
        gone = self.tmp / f"gone{self.generation}"
        if (self.tmp / "user").exists():
            (self.tmp / "user").rename(gone)

    def backfill(self, killed: bool) -> bool:
        """Re-embed with the other model; `killed`: the encoder fails on its second call. Whether it switched."""
        other = self.models[1] if self.model is self.models[0] else self.models[0]
        try:
            with backfill_corpora(self.catalog, self.name) as docs:
                backfill(self.catalog, self.name, Flaky(other, 2) if killed else other, docs, chunk_size=4)
        except RuntimeError:
            return False
        self.model = other
        return True

    # the checks -----------------------------------------------------------------------------------------
    def check(self, step: str) -> None:
        assert text_log.idle(), "a background merge of kept texts did not finish"
        ids, stored = index_vectors(self.catalog, self.name)
        assert ids == sorted(self.truth), step
        np.testing.assert_allclose(stored, self.model([self.truth[i] for i in ids]), atol=1e-5, err_msg=step)
        assert verify_index(self.catalog, self.name)["ok"], step
        with backfill_corpora(self.catalog, self.name) as docs:
            found = coverage(self.catalog, self.name, docs)
        assert found["missing_ids"] == [], step
        for doc_id in self._some(2):
            r = httpx.get(f"{self.url}/search", params={"index": self.name, "q": self.truth[doc_id], "k": 1}, timeout=60)
            assert r.status_code == 200 and r.json()["results"][0]["id"] == doc_id, (step, r.text)
            group = self.group[doc_id]  # and among the documents of its group alone, as they are now
            r = httpx.post(f"{self.url}/search", timeout=60, json={"index": self.name, "query": self.truth[doc_id],
                                                                   "k": 5, "where": {"metadata.group": [group]}})
            hits = [h["id"] for h in r.json()["results"]]
            assert hits[0] == doc_id and {self.group[h] for h in hits} == {group}, (step, hits)
            assert len(hits) == min(5, sum(g == group for g in self.group.values())), (step, hits)
        kept = _tokens_in(self.catalog.settings.home)
        assert not kept.keys() & self.purged, f"{step}: purged texts kept: {[(t, kept[t]) for t in self.purged if t in kept]}"


def _sent(method, url: str, **kwargs) -> httpx.Response:
    """A write request as a client sends it: again after a 409 (the index held by a long job), as the answer says."""
    for _ in range(10):
        r = method(url, timeout=60, **kwargs)
        if r.status_code != 409:
            return r
        time.sleep(0.5)
    return r


def _record(doc: Doc) -> dict:
    return {"_id": doc.id, "text": doc.content, **doc.info}


def user_file(path: Path, docs: list[Doc]) -> Path:
    """A corpus file of the user's holding `docs`."""
    path.parent.mkdir(exist_ok=True)
    path.write_text("".join(json.dumps(_record(d)) + "\n" for d in docs))
    return path


def _tokens_in(home: Path) -> dict[str, str]:
    """Each text token (tokNNNNNx) in the files of EMBEDKD_HOME (gzipped ones read), index files aside: a file of it."""
    found: dict[str, str] = {}
    for path in home.rglob("*"):
        if not path.is_file() or path.suffix == ".faiss":
            continue
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        found.update((t.decode(), str(path.relative_to(home))) for t in _TOKEN.findall(raw))
    return found


_TOKEN = re.compile(rb"tok\d{5}x")
STEPS = ("http_write", "http_write", "http_delete", "file_add", "compact", "gc", "move", "backfill", "killed_backfill")


@pytest.mark.parametrize("seed", range(int(os.environ.get("LIFE_SEEDS", "4"))))  # more: LIFE_SEEDS=40
def test_a_random_life_of_an_index(catalog, tmp_path, monkeypatch, seed):
    rng = np.random.default_rng(seed)
    v1, v2 = HashEncoder(32, 1), HashEncoder(32, 5, drift=np.eye(32, 48))
    by_source = {m.record.source: m for m in (v1, v2)}
    searcher = Searcher(catalog, lambda source: by_source[source])
    with serving(create_app(searcher)) as url:
        life = Life(catalog, tmp_path, rng, url, (v1, v2))
        life.build(20)
        life.check("build")
        done: list[str] = []
        for _ in range(24):
            step = str(rng.choice(STEPS))
            if step == "backfill" or step == "killed_backfill":
                life.backfill(killed=step == "killed_backfill")
            elif step == "compact":
                life.compact(monkeypatch)
            else:
                getattr(life, step)()
            done.append(step)
            life.check(" > ".join(done))
        switched = life.backfill(killed=False)  # whatever the life left, a backfill ends it on the other model
        life.compact(monkeypatch)
        life.gc()
        life.check(" > ".join(done + ["backfill", "compact", "gc"]))
    assert switched



@pytest.mark.parametrize("seed", range(int(os.environ.get("LIFE_SEEDS", "2"))))
def test_writes_over_http_go_on_through_compaction_gc_a_move_and_a_backfill(catalog, tmp_path, seed):
    """Three clients write their own documents over HTTP (adds, new texts, deletes, purges) while another thread
    verifies, fits an adapter to another model, compacts, collects garbage, exports the index with its corpora and
    imports the copy, and backfills the index to that model. At the end every acknowledged write is in the index,
    embedded by the model it switched to; its files verify; a backfill could find every document; no purged text is
    left in EMBEDKD_HOME."""
    rotation = np.linalg.qr(np.random.default_rng(3).normal(size=(48, 48)))[0][:32]
    v1, v2 = HashEncoder(32, 1), HashEncoder(32, 1, drift=rotation)  # v2: v1's space rotated, so an adapter fits
    by_source = {m.record.source: m for m in (v1, v2)}
    base = Life(catalog, tmp_path, np.random.default_rng(seed), "", (v1, v2))
    base.build(60)  # enough for an adapter's sample
    upkept = threading.Event()

    def client(t: int) -> Life:
        life = Life(catalog, tmp_path, np.random.default_rng([seed, t]), url, (v1, v2))
        life.serial = 10_000 * (t + 1)  # ids and text tokens of its own
        writes = 0
        while writes < 40 and (writes < 8 or not upkept.is_set()):
            if life.rng.integers(4) == 0 and life.truth:
                life.http_delete()
            else:
                life.http_write()
            writes += 1
        return life

    def upkeep() -> list[str]:
        done = []
        try:
            for step in ("verify", "fit", "compact", "gc", "move", "verify", "backfill", "compact", "gc", "verify"):
                if step == "compact":
                    try:
                        compact_index(catalog, "k0")
                    except Conflict:  # held by writes for longer than it waits: not this test's point
                        step = "compact (busy)"
                elif step == "gc":
                    collect_garbage(catalog)
                elif step == "fit":  # an adapter v2 -> v1, fitted from the index's own documents as they change
                    fitted = fit_upgrade(catalog, "k0", v2.record.source, "procrustes", v1_encoder=v1, v2_encoder=v2)
                    assert fitted["accepted"], fitted
                elif step == "verify":  # while the clients write
                    try:
                        assert verify_index(catalog, "k0")["problems"] == []
                    except Conflict:  # written at every one of its attempts: says so, reports no false problem
                        step = "verify (busy)"
                elif step == "move":
                    export_index(catalog, "k0", tmp_path / "export", with_corpora=True)
                    import_index(catalog, tmp_path / "export", name="copy")
                    assert verify_index(catalog, "copy")["ok"]
                    drop_index(catalog, "copy")
                else:
                    with backfill_corpora(catalog, "k0") as docs:
                        assert backfill(catalog, "k0", v2, docs, chunk_size=8)["switched"]
                done.append(step)
        finally:
            upkept.set()
        return done

    with serving(create_app(Searcher(catalog, lambda source: by_source[source]))) as url:
        *clients, steps = run_concurrently(lambda i: upkeep() if i == 3 else client(i), [0, 1, 2, 3])
        for got in (*clients, steps):
            if isinstance(got, BaseException):
                raise got
        assert "backfill" in steps
        base.model, base.url = v2, url
        for life in clients:  # the documents are the clients' own: what each acknowledged is what the index holds
            base.truth.update(life.truth)
            base.group.update(life.group)
            base.purged |= life.purged
        base.check(" > ".join(steps))
