"""Field columns brought up to date after writes (`indexer.fields.refresh_column`): after every kind of write
the refreshed column equals one read afresh, on SQLite and PostgreSQL, reading only what the write changed;
removals too old to be kept, and catalogs made before the item history, mean reading everything again."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from indexer import catalog as catalog_mod
from indexer import db, fields
from indexer.build import add_documents, build_index, delete_items
from indexer.catalog import get_index
from indexer.corpus import Doc, ListSource, read_corpus
from indexer.errors import UserError
from indexer.fields import load_column, refresh_column
from indexer.models import item_removals
from indexer.search import Searcher

FIELDS = ["metadata.year", "metadata.group", "metadata.code", "metadata.flag"]


def _docs(beir_small) -> list[Doc]:
    docs = []
    for i, d in enumerate(read_corpus(beir_small)):
        meta = {"year": 2018 + i % 3, "group": f"g{i % 4}", "flag": i % 5 == 0, "code": i % 3}
        docs.append(Doc(d.id, d.content, {"metadata": meta}))
    return docs


def _values(column: fields.FieldColumn) -> list[tuple]:
    """Each item's (id, kind, number, text): what a filter sees, whatever the text codes are."""
    texts = [column.texts[c] if c >= 0 else None for c in column.text_code]
    numbers = [None if np.isnan(n) else float(n) for n in column.number]
    return list(zip(column.ids.tolist(), column.kind.tolist(), numbers, texts))


@pytest.fixture
def reads(monkeypatch) -> list:
    """The `since` of every field read: None reads every item, a generation only the rows written after it."""
    seen, real = [], fields._read

    def recording(session, index_id, field, generation, since):
        seen.append(since)
        return real(session, index_id, field, generation, since)

    monkeypatch.setattr(fields, "_read", recording)
    return seen


def test_refresh_after_each_kind_of_write_equals_a_fresh_read(catalog, minilm, beir_small, reads):
    docs = _docs(beir_small)
    build_index(catalog, "t", minilm, ListSource(docs[:30]), progress=False)
    with catalog.session() as s:
        index_id = get_index(s, "t").id
        columns = {f: load_column(s, index_id, f) for f in FIELDS}
    retag = {"metadata": {"year": 2031, "group": "moved", "code": "1", "flag": None}}  # code turns text, flag null
    writes = [
        ("add", lambda: add_documents(catalog, "t", minilm, ListSource(docs[30:36]), progress=False)),
        ("metadata only", lambda: add_documents(catalog, "t", minilm, ListSource([Doc(docs[2].id, docs[2].content, retag)]),
                                                progress=False)),
        ("changed content", lambda: add_documents(catalog, "t", minilm, ListSource(
            [Doc(docs[3].id, docs[3].content + " revised", {"metadata": {"group": "revised"}})]), progress=False)),
        ("delete", lambda: delete_items(catalog, "t", [docs[2].id, docs[7].id, docs[31].id])),  # "moved" goes
        ("no metadata", lambda: add_documents(catalog, "t", minilm, ListSource([Doc("bare", "a document")]),
                                              progress=False)),
    ]
    for what, write in writes:
        write()
        reads.clear()
        with catalog.session() as s:
            fresh = {f: load_column(s, index_id, f) for f in FIELDS}
            assert reads == [None] * len(FIELDS)
            reads.clear()
            columns = {f: refresh_column(s, index_id, f, columns[f]) for f in FIELDS}
            generation = get_index(s, "t").generation
        assert all(since is not None for since in reads), what  # only the write's rows were read
        for f in FIELDS:
            assert _values(columns[f]) == _values(fresh[f]), (what, f)
            assert columns[f].generation == generation
            assert sorted(columns[f].texts.tolist()) == sorted(fresh[f].texts.tolist()), (what, f)  # none left over
    assert "moved" not in columns["metadata.group"].texts and "revised" in columns["metadata.group"].texts


def test_searcher_refreshes_its_columns_after_writes(sqlite_catalog, minilm, beir_small, reads):
    docs = _docs(beir_small)
    build_index(sqlite_catalog, "t", minilm, ListSource(docs[:30]), progress=False)
    searcher = Searcher(sqlite_catalog)
    where = {"metadata.group": "g1", "metadata.year": {"gte": 2019}}

    def found() -> set[str]:
        return {h.id for h in searcher.search_vectors("t", minilm(["a query"]), k=100, where=where)[0]}

    def want(present: list[Doc]) -> set[str]:
        return {d.id for d in present if d.info["metadata"]["group"] == "g1" and d.info["metadata"]["year"] >= 2019}

    assert found() == want(docs[:30]) and reads == [None, None]
    add_documents(sqlite_catalog, "t", minilm, ListSource(docs[30:40]), progress=False)
    deleted = sorted(want(docs[:30]))[:2]
    delete_items(sqlite_catalog, "t", deleted)
    reads.clear()
    assert found() == want([d for d in docs[:40] if d.id not in deleted])
    assert reads == [1, 1]  # both fields: the rows written after generation 1 (the add's), and the removals
    assert searcher.held()["field_reads"] == {"whole": 2, "changes": 2}


def test_columns_further_behind_than_the_kept_removals_are_read_afresh(sqlite_catalog, minilm, beir_small, reads,
                                                                       monkeypatch):
    monkeypatch.setattr(catalog_mod, "REMOVALS_KEPT", 1)
    docs = _docs(beir_small)
    build_index(sqlite_catalog, "t", minilm, ListSource(docs[:20]), progress=False)
    with sqlite_catalog.session() as s:
        index_id = get_index(s, "t").id
        old = load_column(s, index_id, "metadata.group")
    delete_items(sqlite_catalog, "t", [docs[0].id])
    delete_items(sqlite_catalog, "t", [docs[1].id])
    with sqlite_catalog.session() as s:
        index = get_index(s, "t")
        kept = s.execute(sa.select(item_removals.c.faiss_id, item_removals.c.generation)
                         .where(item_removals.c.index_id == index_id)).all()
        assert (index.generation, index.history_from, [tuple(r) for r in kept]) == (3, 2, [(1, 3)])
        reads.clear()
        column = refresh_column(s, index_id, "metadata.group", old)
    assert reads == [None]  # generation 1 is before the history: everything is read again
    assert column.ids.tolist() == list(range(2, 20)) and column.generation == 3


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_starts_the_history_at_each_index_generation(backend, request, tmp_path, reads):
    """A catalog made before migration 0002: its rows get generation 0 and its indexes a history from their
    current generation, so a column read then is refreshed by what later writes change."""
    from indexer.context import open_catalog
    from indexer.settings import load_settings

    url = f"sqlite:///{tmp_path / 'h' / 'catalog.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    settings = load_settings(home=tmp_path / "h", database_url=url)
    engine = db.make_engine(url)
    db.upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO models (id, name, source, kind, dimension, normalized, fingerprint, info, "
                             "created_at) VALUES (1, 'm', 'm', 'text', 4, true, 'fp', '{}', CURRENT_TIMESTAMP)"))
        conn.execute(sa.text("INSERT INTO indexes (id, name, model_id, factory, metric, dimension, count, generation, "
                             "next_id, state, created_at, updated_at) VALUES (1, 'old', 1, 'Flat', 'ip', 4, 2, 5, 2, "
                             "'ready', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        for fid, group in ((0, "a"), (1, "b")):
            conn.execute(sa.text("INSERT INTO items (index_id, external_id, faiss_id, content_hash, info) VALUES "
                                 f"(1, 'd{fid}', {fid}, 'h', '{{\"group\": \"{group}\"}}')"))
    db.upgrade(engine)
    engine.dispose()
    cat = open_catalog(settings, migrate=False)
    with cat.session() as s:
        index = get_index(s, "old")
        assert (index.generation, index.history_from) == (5, 5)
        column = load_column(s, index.id, "group")
        catalog_mod.update_item_infos(s, index.id, {1: {"group": "c"}}, generation=6)
        catalog_mod.delete_items_by_faiss_ids(s, index.id, [0], generation=6)
        s.execute(sa.update(type(index)).where(type(index).id == index.id).values(generation=6, count=1))
    with cat.session() as s:
        reads.clear()
        column = refresh_column(s, index.id, "group", column)
    assert reads == [5] and _values(column) == [(1, fields.TEXT, None, "c")]
    cat.engine.dispose()


def _column(values: dict[int, float | str | None], generation: int) -> fields.FieldColumn:
    """A column holding `values` by id (None: the field missing), built directly."""
    ids = np.array(sorted(values), np.int64)
    vals = [values[i] for i in ids.tolist()]
    kind = np.array([fields.MISSING if v is None else fields.TEXT if isinstance(v, str) else fields.NUMBER for v in vals],
                    np.uint8)
    number = np.array([v if isinstance(v, float) else np.nan for v in vals])
    texts = np.array(sorted({v for v in vals if isinstance(v, str)}), dtype=str)
    code = np.array([int(np.searchsorted(texts, v)) if isinstance(v, str) else -1 for v in vals], np.int64)
    return fields.FieldColumn(ids, kind, number, code, texts, generation)


@pytest.mark.parametrize("seed", range(20))
def test_merge_equals_the_column_of_the_values_after_the_changes(seed):
    rng = np.random.default_rng(seed)

    def value():
        return [None, float(rng.integers(0, 5)), f"t{rng.integers(0, 6)}"][rng.integers(0, 3)]

    n = int(rng.integers(0, 40))
    before = {int(i): value() for i in rng.choice(60, n, replace=False)}
    live = list(before)
    removed = [int(i) for i in rng.choice(live, int(rng.integers(0, len(live) + 1)), replace=False)] if live else []
    kept = [i for i in live if i not in removed]
    retagged = [int(i) for i in rng.choice(kept, int(rng.integers(0, len(kept) + 1)), replace=False)] if kept else []
    added = list(range(60, 60 + int(rng.integers(0, 8))))
    changes = {i: value() for i in retagged + added}
    after = {**{i: before[i] for i in kept}, **changes}
    merged = fields._merge(_column(before, 1), _column(changes, 2), np.array(removed, np.int64))
    want = _column(after, 2)
    assert _values(merged) == _values(want) and merged.texts.tolist() == want.texts.tolist()


@pytest.mark.parametrize("seed", [0, 1])
def test_random_writes_keep_a_held_column_equal_to_a_fresh_read(sqlite_catalog, seed, reads):
    """Forty random writes (adds, changed texts, metadata-only updates, deletes, snapshot syncs, in any mix), a
    searcher's column refreshed after each: always what reading the field afresh gives."""
    from ..embedkd.test_upgrade_fit import HashEncoder

    rng = np.random.default_rng(seed)
    encoder = HashEncoder(16, 0)

    def doc(i: int, version: int) -> Doc:
        meta = [{}, {"g": f"v{rng.integers(0, 4)}"}, {"g": float(rng.integers(0, 3))}][rng.integers(0, 3)]
        return Doc(f"d{i}", f"word{i} w{version}", meta or None)

    live = {i: doc(i, 0) for i in range(12)}
    build_index(sqlite_catalog, "r", encoder, ListSource(list(live.values())), shard_size=8, progress=False)
    with sqlite_catalog.session() as s:
        index_id = get_index(s, "r").id
        column = load_column(s, index_id, "g")
    next_doc = 12
    for _ in range(40):
        kind = rng.choice(["add", "text", "meta", "delete", "sync"])
        ids = [int(i) for i in rng.choice(sorted(live), min(len(live), int(rng.integers(1, 4))), replace=False)]
        if kind == "add":
            new = {next_doc + j: doc(next_doc + j, 0) for j in range(int(rng.integers(1, 4)))}
            next_doc += len(new)
            live.update(new)
            add_documents(sqlite_catalog, "r", encoder, ListSource(list(new.values())), progress=False)
        elif kind in ("text", "meta"):
            changed = {i: doc(i, int(rng.integers(1, 9))) if kind == "text" else Doc(live[i].id, live[i].content,
                                                                                      doc(i, 0).info) for i in ids}
            live.update(changed)
            add_documents(sqlite_catalog, "r", encoder, ListSource(list(changed.values())), progress=False)
        elif kind == "delete" and len(live) > 4:
            delete_items(sqlite_catalog, "r", [live.pop(i).id for i in ids])
        elif kind == "sync" and len(live) > 4:
            live.pop(ids[0])
            add_documents(sqlite_catalog, "r", encoder, ListSource(list(live.values())), progress=False,
                          delete_missing=True, max_delete=1.0)
        with sqlite_catalog.session() as s:
            reads.clear()
            column = refresh_column(s, index_id, "g", column)
            assert None not in reads, kind  # the write's rows only, never everything again
            assert _values(column) == _values(load_column(s, index_id, "g")), kind
    assert len(column.ids) == len(live)


def test_fields_loaded_at_start_serve_the_first_filtered_query(sqlite_catalog, minilm, beir_small, reads):
    docs = _docs(beir_small)
    build_index(sqlite_catalog, "t", minilm, ListSource(docs[:20]), progress=False)
    searcher = Searcher(sqlite_catalog)
    searcher.load_fields("t", ["metadata.group"])
    assert reads == [None] and searcher.held()["filter_fields"] == 1
    hits = searcher.search_vectors("t", minilm(["a query"]), k=20, where={"metadata.group": "g2"})[0]
    assert {h.id for h in hits} == {d.id for d in docs[:20] if d.info["metadata"]["group"] == "g2"}
    assert reads == [None]  # nothing read again
    with pytest.raises(UserError, match="is not a field name"):
        searcher.load_fields("t", ["bad field"])
