"""Every write an operation makes can fail: a full disk, a lost database connection, a killed process. For each
operation an operator runs (build, add from a file, an HTTP write that keeps its texts, delete, purge, compaction,
backfill, gc, export, import, drop, adapter fit, a merge of kept texts; an add, HTTP write and purge while a backfill
is stopped midway), the n-th file write, rename, link, fsync, FAISS write or catalog commit of that operation fails
(raises ENOSPC), or its process is killed there (a forked child exits at it), for every n the operation reaches.
Then the index must be as it was before or as the operation leaves it (ids, stored vectors, metadata, model,
adapters) and verify; running the operation again, or gc where the index is already done, must finish it; and the
whole of what it promises must hold: no purged text left in any file, every document's text findable by a backfill
(whose rerun ends as without the fault), no job left failed or running. `FAULTS_EVERY=1` tries every n; by default
a seeded sample of them."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import signal
import threading
from pathlib import Path

import faiss
import numpy as np
import pytest
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from embedkd.upgrade.backfill import backfill, backfill_corpora, coverage
from embedkd.upgrade.run import fit_upgrade
from indexer import carried, jobs, text_log
from indexer.build import add_documents, build_index, delete_items, drop_index
from indexer.catalog import get_index
from indexer.cleanup import collect_garbage
from indexer.compaction import compact_index
from indexer.context import open_catalog
from indexer.corpus import Doc, read_corpus
from indexer.errors import NotFound
from indexer.models import Adapter, Base, Item, Job
from indexer.search import Searcher
from indexer.settings import load_settings
from indexer.transfer import export_index, import_index
from indexer.verify import verify_index
from tests.indexer.helpers import index_vectors

from .test_lifecycle_random import _tokens_in, user_file
from .test_upgrade_backfill import Flaky
from .test_upgrade_fit import WORDS, HashEncoder

V1, V2 = HashEncoder(16, 1), HashEncoder(16, 1, drift=np.linalg.qr(np.random.default_rng(3).normal(size=(24, 24)))[0][:16])
BY_SOURCE = {m.record.source: m for m in (V1, V2)}


class Injected(OSError):
    pass


KILLED = 137


class Faults:
    """Makes the n-th write of the arming thread fail, as a full disk would, or (`kill`) ends its process there:
    file opens for writing, renames, links, fsyncs and FAISS writes under `roots`, and catalog commits."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = [str(r) for r in roots]
        self.n: int | None = None
        self.count, self.thread, self.hit, self.kill = 0, 0, "", False

    def arm(self, n: int | None) -> None:
        self.n, self.count, self.thread, self.hit = n, 0, threading.get_ident(), ""

    def tick(self, what: str, path=None) -> None:
        if self.n is None or threading.get_ident() != self.thread:
            return
        if path is not None and not any(os.fspath(path).startswith(r) for r in self.roots):
            return
        self.count += 1
        if self.count == self.n:
            self.hit = f"{what} {path if path is not None else ''}"
            if self.kill:  # the process dies here: no handler and no `finally` runs
                os._exit(KILLED)
            raise Injected(errno.ENOSPC, f"no space left on device (injected at write {self.n}: {self.hit})")

    def install(self, monkeypatch) -> None:
        def wrap(module, attr, what, path_arg=0, only=None):
            real = getattr(module, attr)

            def fake(*args, **kwargs):
                if only is None or only(args, kwargs):
                    self.tick(what, args[path_arg] if isinstance(path_arg, int) and len(args) > path_arg else None)
                return real(*args, **kwargs)

            monkeypatch.setattr(module, attr, fake)

        def writing(args, kwargs) -> bool:
            mode = args[1] if len(args) > 1 else kwargs.get("mode", "r")
            return isinstance(args[0], (str, os.PathLike)) and any(c in mode for c in "wax+")

        wrap(builtins, "open", "open", only=writing)
        wrap(io, "open", "open", only=writing)
        for attr in ("replace", "rename", "link"):
            wrap(os, attr, attr, path_arg=1)
        wrap(os, "mkdir", "mkdir")
        wrap(os, "fsync", "fsync", path_arg=None)
        wrap(faiss, "write_index", "faiss.write_index", path_arg=1)

        def commit(_session) -> None:
            self.tick("commit")

        event.listen(Session, "before_commit", commit)
        self._listener = commit

    def uninstall(self) -> None:
        event.remove(Session, "before_commit", self._listener)


# a world: a catalog with index "k" built, written over HTTP-style (texts kept), with a deleted item ----------------
class World:
    def __init__(self, root: Path, database_url: str | None = None, seed: int = 0) -> None:
        self.root = root
        self.catalog = open_catalog(load_settings(home=root / "home", database_url=database_url), migrate=True)
        if database_url:  # the test's PostgreSQL database, emptied: each world starts from a new catalog
            with self.catalog.engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {', '.join(Base.metadata.tables)} RESTART IDENTITY CASCADE"))
        self.rng = np.random.default_rng(seed)
        self.serial = 0
        self.truth: dict[str, str] = {}
        self.texts_of: dict[str, list[str]] = {}
        self.model = V1
        self.files = 0

    def text(self, doc_id: str) -> str:
        self.serial += 1
        text = f"{' '.join(self.rng.choice(WORDS, 6))} tok{self.serial:05d}x"
        self.texts_of.setdefault(doc_id, []).append(text)
        return text

    def docs(self, new: int, changed: int = 0) -> list[Doc]:
        out = [Doc(f"d{self.serial + i}", "", {}) for i in range(new)]
        out = [Doc(d.id, self.text(d.id), {"metadata": {"group": int(self.rng.integers(3))}}) for d in out]
        present = sorted(self.truth)
        for i in self.rng.choice(present, min(changed, len(present)), replace=False) if present else []:
            out.append(Doc(str(i), self.text(str(i)), {"metadata": {"group": 0}}))
        return out

    def user_file(self, docs: list[Doc]) -> Path:
        self.files += 1
        return user_file(self.root / "user" / f"corpus{self.files}.jsonl", docs)

    def written(self, docs: list[Doc]) -> None:
        self.truth.update({d.id: d.content for d in docs})

    def http_write(self, name: str, docs: list[Doc]) -> dict:
        """What the service does for a POST of documents (`indexer.service._add_keeping_texts`)."""
        from indexer.service import _add_keeping_texts

        out = _add_keeping_texts(Searcher(self.catalog, lambda s: BY_SOURCE[s]), name, docs, keep_texts=True)
        self.written(docs)
        return out

    def setup(self) -> None:
        docs = self.docs(56)
        build_index(self.catalog, "k", V1, read_corpus(self.user_file(docs)), shard_size=16, progress=False)
        self.written(docs)
        http = self.docs(3, 2)
        self.http_write("k", http)
        self.gone = [http[0].id, http[-1].id, "d2"]  # what deletes and purges remove: texts kept of HTTP writes, too
        delete_items(self.catalog, "k", ["d1"])
        del self.truth["d1"]
        assert text_log.idle()

    def close(self) -> None:
        self.catalog.close()


def state(world: World, name: str = "k"):
    """The index as searches see it: its model, ids and stored vectors; None when there is no such index."""
    try:
        ids, vectors = index_vectors(world.catalog, name)
    except NotFound:
        return None
    with world.catalog.session() as s:
        index = get_index(s, name)
        model = index.model.source
        adapters = sorted((a.active,) for a in s.scalars(select(Adapter)))
        infos = sorted((i.external_id, json.dumps(i.info, sort_keys=True))
                       for i in s.scalars(select(Item).where(Item.index_id == index.id)))
    return model, ids, np.round(vectors, 5).tobytes(), adapters, infos


# the operations: each (world) -> what the index should then hold, checked by `promise` ----------------------------
def op_build(w: World, ctx: dict) -> None:
    docs = ctx.setdefault("docs", w.docs(6))
    build_index(w.catalog, "n", V1, read_corpus(ctx.setdefault("file", w.user_file(docs))), shard_size=4,
                progress=False)


def op_add(w: World, ctx: dict) -> None:
    docs = ctx.setdefault("docs", w.docs(3, 2))
    add_documents(w.catalog, "k", V1, read_corpus(ctx.setdefault("file", w.user_file(docs))), progress=False)


def op_write(w: World, ctx: dict) -> None:
    w.http_write("k", ctx.setdefault("docs", w.docs(3, 2)))


def op_delete(w: World, ctx: dict) -> None:
    delete_items(w.catalog, "k", w.gone)


def op_purge(w: World, ctx: dict) -> None:
    delete_items(w.catalog, "k", w.gone, purge=True)


def op_compact(w: World, ctx: dict) -> None:
    compact_index(w.catalog, "k")


def op_backfill(w: World, ctx: dict) -> None:
    with backfill_corpora(w.catalog, "k") as docs:
        backfill(w.catalog, "k", V2, docs, chunk_size=4)


def op_gc(w: World, ctx: dict) -> None:
    collect_garbage(w.catalog)


def op_export(w: World, ctx: dict) -> None:
    export_index(w.catalog, "k", w.root / "export", with_corpora=True)


def op_import(w: World, ctx: dict) -> None:
    import_index(w.catalog, w.root / "export", name="copy")


def op_drop(w: World, ctx: dict) -> None:
    drop_index(w.catalog, "k")


def op_fit(w: World, ctx: dict) -> None:
    fitted = fit_upgrade(w.catalog, "k", V2.record.source, "procrustes", v1_encoder=V1, v2_encoder=V2, sample_docs=50)
    assert fitted["accepted"], fitted


def op_merge(w: World, ctx: dict) -> None:
    """A write's texts kept as the level's last file: the level merged (the texts the index still holds)."""
    text_log.append(w.catalog, "k", [Doc("d3", w.truth["d3"])], wait=True)


def finish_backfill(w: World) -> None:
    with backfill_corpora(w.catalog, "k") as docs:
        backfill(w.catalog, "k", V2, docs, chunk_size=4)


OPS = {"build": (op_build, "n"), "add": (op_add, "k"), "write": (op_write, "k"), "delete": (op_delete, "k"),
       "purge": (op_purge, "k"), "compact": (op_compact, "k"), "backfill": (op_backfill, "k"), "gc": (op_gc, "k"),
       "export": (op_export, "k"), "import": (op_import, "copy"), "drop": (op_drop, "k"), "fit": (op_fit, "k"),
       "merge": (op_merge, "k"),
       # while a backfill is stopped midway: what they write is kept for its catch-up, which must then find it
       "add_mid_backfill": (op_add, "k"), "write_mid_backfill": (op_write, "k"), "purge_mid_backfill": (op_purge, "k")}
UNCHANGED = ("gc", "export", "fit", "compact", "merge")  # the index's vectors stay as they were


def _prepare(root: Path, op: str, faults: Faults, database_url: str | None) -> tuple[World, dict]:
    w = World(root, database_url)
    w.setup()
    if op == "import":
        op_export(w, {})
    elif op == "merge":
        for _ in range(text_log.FANOUT - 2):  # a level one file short of full
            w.http_write("k", w.docs(1, 1))
        assert text_log.idle() and len(text_log.files(w.catalog, "k")) == text_log.FANOUT - 1
    elif op.endswith("_mid_backfill"):
        with pytest.raises(RuntimeError, match="killed"), backfill_corpora(w.catalog, "k") as docs:
            backfill(w.catalog, "k", Flaky(V2, 2), docs, chunk_size=4)
    faults.roots = [str(root)]
    return w, {}


def _injected(err: BaseException) -> bool:
    while err is not None:
        if isinstance(err, Injected) or "injected at write" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def _promised(w: World, name: str, op: str, purged: set[str]) -> None:
    """What the operation promises beyond the index's vectors."""
    assert text_log.idle()
    if state(w, name) is not None:
        assert verify_index(w.catalog, name)["ok"]
        with backfill_corpora(w.catalog, name) as docs:
            assert coverage(w.catalog, name, docs)["missing_ids"] == [], "a document's text is nowhere to be found"
    kept = _tokens_in(w.catalog.settings.home)
    assert not kept.keys() & purged, f"purged texts kept: {[(t, kept[t]) for t in purged if t in kept]}"
    with w.catalog.session() as s:  # each job ended: none shows as failed or interrupted for ever after
        left = [(j.kind, j.target, j.state) for j in s.scalars(select(Job).where(Job.state.in_(jobs.UNFINISHED)))]
    assert left == [] or op.endswith("_mid_backfill"), f"unfinished jobs left: {left}"


def _trials(count: int, op: str, kill: bool) -> list[int]:
    if os.environ.get("FAULTS_EVERY"):
        return list(range(1, count + 1))
    rng = np.random.default_rng([sorted(OPS).index(op), kill])
    return sorted({1, count, *rng.choice(np.arange(1, count + 1), min(4, count), replace=False).tolist()})


def _fails_at(n: int, w: World, ctx: dict, run, faults: Faults, kill: bool) -> BaseException | str | None:
    """Run the operation with its n-th write failing (`kill`: its process killed there, in a forked child); what
    it raised, "killed", or None when it finished."""
    if not kill:
        faults.arm(n)
        try:
            run(w, ctx)
            return None
        except Exception as err:  # noqa: BLE001 - judged by the caller
            return err
        finally:
            faults.n = None
    pid = os.fork()
    if pid == 0:  # the child: its own database connections; the parent's stay the parent's
        code = 1
        try:
            signal.alarm(120)  # a child stuck on a lock some thread of the parent held at the fork dies, not hangs
            w.catalog.engine.dispose(close=False)
            faults.kill = True
            faults.arm(n)
            run(w, ctx)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return {0: None, KILLED: "killed"}.get(code, RuntimeError(f"the operation failed with exit code {code}"))


def _every_point(op: str, tmp_path: Path, monkeypatch, kill: bool, database_url: str | None) -> None:
    run, name = OPS[op]
    faults = Faults([tmp_path])
    faults.install(monkeypatch)
    try:
        w, ctx = _prepare(tmp_path / "ref", op, faults, database_url)  # the operation without faults: what it leaves
        before = state(w, name)
        faults.arm(10**9)
        run(w, ctx)
        count = faults.count
        faults.arm(None)
        after = state(w, name)
        assert after != before or op in UNCHANGED, "the operation changes nothing to check"
        purged = {t.split()[-1] for i in w.gone for t in w.texts_of[i]} if op == "purge" else set()
        _promised(w, name, op, purged)
        if op.endswith("_mid_backfill"):
            finish_backfill(w)
            final = state(w, name)
            assert final[0] == V2.record.source
        w.close()
        failures = []
        for n in _trials(count, op, kill):
            w, ctx = _prepare(tmp_path / f"n{n}", op, faults, database_url)
            failed = _fails_at(n, w, ctx, run, faults, kill)
            where = f"{op}, write {n} of {count} {'killing it' if kill else 'failing'} ({faults.hit or 'in a child'})"
            try:
                if isinstance(failed, BaseException) and not _injected(failed):
                    raise AssertionError(f"{where}: failed with something else: {failed!r}")
                now = state(w, name)
                assert now in (before, after), f"{where}: the index is neither as it was nor as the operation leaves it"
                if now is not None:
                    assert verify_index(w.catalog, name)["ok"], f"{where}: does not verify"
                if failed is not None and (now != after or n % 2 == 0 or op in UNCHANGED):
                    try:
                        run(w, ctx)  # the user runs it again
                    except Exception as err:  # noqa: BLE001
                        if now != after:
                            raise AssertionError(f"{where}: the rerun failed: {err!r}") from err
                assert state(w, name) == after, f"{where}: after the rerun the index is not as the operation leaves it"
                collect_garbage(w.catalog)  # without a rerun, where the index is done: gc finishes what is owed
                assert state(w, name) == after, f"{where}: gc changed the index"
                _promised(w, name, op, purged)
                if op.endswith("_mid_backfill"):  # its catch-up finds what the operation wrote, as it left it
                    finish_backfill(w)
                    assert state(w, name) == final, f"{where}: the backfill then ends with other vectors"
                    _promised(w, name, op, purged)
            except AssertionError as err:
                message = str(err).splitlines()[0]
                failures.append(message if message.startswith(op) else f"{where}: {message}")
            w.close()
        assert not failures, "\n".join(failures)
    finally:
        faults.uninstall()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str | None:
    return request.getfixturevalue("pg_url") if request.param == "postgresql" else None


@pytest.mark.parametrize("op", sorted(OPS))
def test_a_write_failing_at_any_point_leaves_the_index_as_it_was_or_done(op, tmp_path, monkeypatch, database_url):
    _every_point(op, tmp_path, monkeypatch, False, database_url)


@pytest.mark.parametrize("op", sorted(OPS))
def test_a_process_killed_at_any_write_leaves_the_index_as_it_was_or_done(op, tmp_path, monkeypatch, database_url):
    _every_point(op, tmp_path, monkeypatch, True, database_url)


def test_an_export_after_a_purge_failed_midway_carries_none_of_its_texts(tmp_path, monkeypatch):
    """A purge whose file rewrites failed is owed (`indexer.purges`); an export made before anyone reran it or
    ran gc finishes it first, so the purged texts do not travel to another catalog."""
    w = World(tmp_path)
    w.setup()
    real = text_log.purge

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(text_log, "purge", full)
    with pytest.raises(OSError, match="No space"):
        op_purge(w, {})
    monkeypatch.setattr(text_log, "purge", real)
    purged = {t.split()[-1] for i in w.gone for t in w.texts_of[i]}
    assert _tokens_in(w.catalog.settings.home).keys() & purged  # left by the failed purge
    op_export(w, {})
    assert not _tokens_in(tmp_path / "export").keys() & purged
    assert not _tokens_in(w.catalog.settings.home).keys() & purged
    w.close()


def test_compact_texts_takes_out_the_texts_of_documents_deleted_without_purge(tmp_path):
    """A plain delete leaves the document's text in the kept texts (until its level's next merge) and in the
    corpus copies an import carried (for ever); `index compact --texts` takes out every text the index no longer
    holds, and no other: a backfill still finds every document."""
    import subprocess
    import sys

    w = World(tmp_path)
    w.setup()
    op_export(w, {})
    import_index(w.catalog, tmp_path / "export", name="c2")
    changed = w.docs(0, 1)  # a new text of a file document: its old line in the carried copy is superseded
    w.http_write("c2", changed)
    gone = [w.gone[0], "d5"]  # one written over HTTP (its text kept), one from the file (its line carried)
    delete_items(w.catalog, "c2", gone)
    old_tokens = {t.split()[-1] for i in gone for t in w.texts_of[i]} | {w.texts_of[changed[0].id][-2].split()[-1]}
    carried_and_kept = {k: v for k, v in _tokens_in(w.catalog.settings.home).items() if "/c2/" in v}
    assert old_tokens <= carried_and_kept.keys()
    carried_lines = sum(len(p.read_text().splitlines()) for p in carried.folder(w.catalog, "c2").iterdir())
    assert changed[0].id.startswith("d") and int(changed[0].id[1:]) < 56  # a document of the file
    env = {**os.environ, "EMBEDKD_HOME": str(w.catalog.settings.home)}
    out = subprocess.run([sys.executable, "-m", "embedkd.cli.main", "index", "compact", "--index", "c2", "--texts",
                          "--json"], env=env, capture_output=True, text=True, check=True)
    texts = json.loads(out.stdout.strip().splitlines()[-1])["texts"]
    # the deleted file document's line and the changed one's old line go from the carried copy
    assert texts["kept_texts_removed"] >= 1 and texts["carried_lines_kept"] == carried_lines - 2
    left = {k: v for k, v in _tokens_in(w.catalog.settings.home).items() if "/c2/" in v}
    assert not left.keys() & old_tokens, [(t, left[t]) for t in old_tokens if t in left]
    with backfill_corpora(w.catalog, "c2") as docs:
        assert coverage(w.catalog, "c2", docs)["missing_ids"] == []
    w.close()
