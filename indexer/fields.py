"""One metadata field of every item of an index, as arrays: what filters are evaluated on.

The catalog is read once per field (one SQL scan: 5 s for a million items on SQLite), then any condition on
that field is a few numpy operations (10-160 ms for a million): a filter whose values change with every
request (a tenant, a date range, "not the query's camera") costs the scan once, not once per distinct
filter. After a write, `refresh_column` reads only the rows that generations since changed and the ids they
removed (the catalog's item history, migration 0002), so a service taking writes does not rescan. SQL reads
only each item's JSON type and value at the field's path; the filter's meaning lives here, once, for SQLite
and PostgreSQL alike.
"""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from .models import Index, Item, item_removals

__all__ = ["RANGES", "FieldColumn", "load_column", "refresh_column", "passes"]

MISSING, NUMBER, TEXT, TRUE, FALSE, OTHER, BOOLEAN = range(7)  # OTHER: JSON null, an object or an array
_SQLITE_KINDS = {"integer": NUMBER, "real": NUMBER, "text": TEXT, "true": TRUE, "false": FALSE}
_PG_KINDS = {"number": NUMBER, "string": TEXT, "boolean": BOOLEAN}  # BOOLEAN: TRUE or FALSE by its text
RANGES = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}  # numbers only


@dataclass(frozen=True)
class FieldColumn:
    ids: np.ndarray  # FAISS ids, ascending
    kind: np.ndarray  # uint8: MISSING, NUMBER, TEXT, TRUE, FALSE or OTHER per item
    number: np.ndarray  # float64, NaN where the value is not a number
    text_code: np.ndarray  # int64 position in `texts`, -1 where the value is not a text
    texts: np.ndarray  # distinct texts, sorted (after a refresh, possibly some no item holds any more)
    generation: int  # every write up to this index generation is in it (later ones may be too)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.ids, self.kind, self.number, self.text_code)) + sum(map(len, self.texts))


def load_column(session: Session, index_id: int, field: str) -> FieldColumn:
    """Field `field` (a dotted path into `info`) of every item of index `index_id`."""
    return refresh_column(session, index_id, field, None)


def refresh_column(session: Session, index_id: int, field: str, column: FieldColumn | None,
                   reads: Counter | None = None) -> FieldColumn:
    """`column` (None: nothing read yet) brought up to the index's current generation: the rows written since
    its generation replace theirs and removed ids leave; everything is read when the history does not reach
    back to it (a backfill replaced every item, or it is more than `catalog.REMOVALS_KEPT` writes behind).
    `reads` counts what was read: "whole" fields and "changes"."""
    reads = Counter() if reads is None else reads
    # the generation first: rows a later statement sees include every write up to it (they commit together)
    generation, count, history_from = session.execute(
        sa.select(Index.generation, Index.count, Index.history_from).where(Index.id == index_id)).one()
    if column is not None and column.generation >= generation:
        return column
    if column is None or column.generation < history_from:
        reads["whole"] += 1
        return _read(session, index_id, field, generation, None)
    reads["changes"] += 1
    changed = _read(session, index_id, field, generation, column.generation)
    removed = session.scalars(sa.select(item_removals.c.faiss_id).where(
        item_removals.c.index_id == index_id, item_removals.c.generation > column.generation)).all()
    merged = _merge(column, changed, np.array(removed, np.int64))
    if len(merged.ids) != count:  # a write the history missed, or one that committed between the statements
        reads["whole"] += 1
        return _read(session, index_id, field, generation, None)
    return merged


def _read(session: Session, index_id: int, field: str, generation: int, since: int | None) -> FieldColumn:
    """The field of index `index_id`'s items (those written after generation `since`, when given)."""
    parts = field.split(".")
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB

        info = sa.cast(Item.info, JSONB)
        kind_sql = sa.func.jsonb_typeof(sa.func.jsonb_extract_path(info, *parts))
        value_sql = sa.func.jsonb_extract_path_text(info, *parts)
        kinds = _PG_KINDS
    else:
        path = "$" + "".join(f'."{p}"' for p in parts)
        kind_sql, value_sql = sa.func.json_type(Item.info, path), sa.func.json_extract(Item.info, path)
        kinds = _SQLITE_KINDS
    query = sa.select(Item.faiss_id, kind_sql, value_sql).where(Item.index_id == index_id)
    if since is not None:
        query = query.where(Item.generation > since)
    rows = session.execute(query.order_by(Item.faiss_id)).all()
    fids, sql_kinds, values = (list(c) for c in zip(*rows)) if rows else ([], [], [])
    # whole columns at once: a loop over the rows took 5.8 s for a million items
    kind = np.array([MISSING if k is None else kinds.get(k, OTHER) for k in sql_kinds], np.uint8)
    vals = np.array(values, dtype=object)
    flags = np.flatnonzero(kind == BOOLEAN)  # PostgreSQL's booleans: true or false from their text
    kind[flags] = np.where(vals[flags] == "true", TRUE, FALSE)
    number = np.full(len(kind), np.nan)
    is_number, is_text = kind == NUMBER, kind == TEXT
    number[is_number] = vals[is_number].astype(float)  # exact up to 2^53, as JSON numbers are for most readers
    text_code = np.full(len(kind), -1, np.int64)
    texts = np.array([], str)
    if is_text.any():
        texts, text_code[is_text] = np.unique(vals[is_text].astype(str), return_inverse=True)
    return FieldColumn(np.array(fids, np.int64), kind, number, text_code, texts, generation)


def _merge(column: FieldColumn, changed: FieldColumn, removed: np.ndarray) -> FieldColumn:
    """`column` with `changed`'s rows in place of its own for those ids, and without `removed`: copies and
    lookups by id, no sort (new items get the highest ids), so a million items take milliseconds."""
    texts = np.union1d(column.texts, changed.texts).astype(str)
    ids, kind, number = column.ids, column.kind.copy(), column.number.copy()
    codes = _recode(column.text_code, column.texts, texts)
    new_codes = _recode(changed.text_code, changed.texts, texts)
    held = _positions(ids, changed.ids)  # changed rows of items the column has: replaced in place
    at = held >= 0
    kind[held[at]], number[held[at]], codes[held[at]] = changed.kind[at], changed.number[at], new_codes[at]
    gone = _positions(ids, removed)
    if (gone >= 0).any():
        keep = np.ones(len(ids), bool)
        keep[gone[gone >= 0]] = False
        ids, kind, number, codes = ids[keep], kind[keep], number[keep], codes[keep]
    if not at.all():  # new items
        last = ids[-1] if len(ids) else -1
        ids = np.concatenate([ids, changed.ids[~at]])
        kind, number = np.concatenate([kind, changed.kind[~at]]), np.concatenate([number, changed.number[~at]])
        codes = np.concatenate([codes, new_codes[~at]])
        if changed.ids[~at][0] < last:  # ids are handed out in ascending order, but keep the column right anyway
            order = np.argsort(ids, kind="stable")
            ids, kind, number, codes = ids[order], kind[order], number[order], codes[order]
    used = np.bincount(codes[codes >= 0], minlength=len(texts)) > 0
    if not used.all():  # texts no item holds any more: drop them, so churn does not grow the column
        codes = np.where(codes >= 0, np.cumsum(used)[codes] - 1, -1)
        texts = texts[used]
    return FieldColumn(ids, kind, number, codes, texts, changed.generation)


def _positions(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Where each of `wanted` is in the ascending `ids`, -1 where it is not."""
    if not len(ids):
        return np.full(len(wanted), -1, np.int64)
    pos = np.minimum(np.searchsorted(ids, wanted), len(ids) - 1)
    return np.where(ids[pos] == wanted, pos, -1)


def _recode(codes: np.ndarray, old: np.ndarray, texts: np.ndarray) -> np.ndarray:
    """Codes into `old` as codes into `texts` (which holds every text of `old`), as a new array."""
    if len(old) in (0, len(texts)):  # no texts (all -1), or the same texts: the same codes
        return codes.copy()
    return np.where(codes >= 0, np.searchsorted(texts, old)[codes], -1)


def passes(column: FieldColumn, cond: dict[str, Any]) -> np.ndarray:
    """Which items' values pass every operator of `cond` (a normalized `indexer.where` condition)."""
    mask = np.ones(len(column.ids), bool)
    for op, operand in cond.items():
        if op == "in":
            mask &= _member(column, operand)
        elif op == "not_in":  # missing, null or another value: not one of these
            mask &= ~_member(column, operand)
        else:  # ranges hold for numbers only (NaN compares false)
            mask &= RANGES[op](column.number, operand)
    return mask


def _member(column: FieldColumn, values: list[Any]) -> np.ndarray:
    """JSON equality: 3 == 3.0, 3 != "3", true != 1."""
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    texts = np.array([v for v in values if isinstance(v, str)], dtype=str)
    flags = [TRUE if v else FALSE for v in values if isinstance(v, bool)]
    hit = np.isin(column.number, numbers) if numbers else np.zeros(len(column.ids), bool)
    if len(texts) and len(column.texts):
        pos = np.minimum(np.searchsorted(column.texts, texts), len(column.texts) - 1)
        codes = pos[column.texts[pos] == texts]
        hit |= np.isin(column.text_code, codes) & (column.text_code >= 0)
    if flags:
        hit |= np.isin(column.kind, flags)
    return hit
