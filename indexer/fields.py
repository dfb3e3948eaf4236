"""One metadata field of every item of an index, as arrays: what filters are evaluated on.

The catalog is read once per field and index generation (one SQL scan: 5 s for a million items on SQLite),
then any condition on that field is a few numpy operations (10-160 ms for a million): a filter whose
values change with every request (a tenant, a date range, "not the query's camera") costs the scan once,
not once per distinct filter. SQL reads only each item's JSON type and value at the field's path; the
filter's meaning lives here, once, for SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from .models import Item

__all__ = ["RANGES", "FieldColumn", "load_column", "passes"]

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
    texts: np.ndarray  # the distinct texts, sorted

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.ids, self.kind, self.number, self.text_code)) + sum(map(len, self.texts))


def load_column(session: Session, index_id: int, field: str) -> FieldColumn:
    """Field `field` (a dotted path into `info`) of every item of index `index_id`."""
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
    rows = session.execute(sa.select(Item.faiss_id, kind_sql, value_sql).where(Item.index_id == index_id)
                           .order_by(Item.faiss_id)).all()
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
    return FieldColumn(np.array(fids, np.int64), kind, number, text_code, texts)


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
