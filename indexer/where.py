"""Metadata filters: which items a search may return, by the fields the catalog keeps in each item's `info`.

A filter maps a field to the values it may take: `{"camid": [1, 2], "metadata.year": 2020}` keeps items
whose camid is 1 or 2 *and* whose metadata.year is 2020 (dots reach into nested objects). Values compare
as JSON: 3 matches 3 (and 3.0) but not "3". Text corpora keep `title` and BEIR's `metadata`; ReID
galleries keep `pid`, `camid`, `file` and `path`. The catalog answers a filter with the FAISS ids it
allows, in SQL (SQLite's json_extract, PostgreSQL's jsonb), so no item's text or vector is read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from .errors import UserError
from .models import Item

__all__ = ["Where", "check_where", "matching_ids", "parse_where"]

Where = dict[str, list[Any]]  # field path -> the values it may take (any of them)

_FIELD = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")
_SCALARS = (str, int, float, bool)
_MAX_VALUES = 10_000  # a longer list of allowed values belongs in the data (a field to filter on), not the query


def parse_where(exprs: Sequence[str]) -> Where:
    """`FIELD=VALUE` strings (the CLI's and GET's form) as a filter. VALUE is read as JSON where it parses
    (`camid=3` is the number 3, `camid=[1,2]` either, `name="3"` the text 3), else as text (`title=Intro`)."""
    out: dict[str, Any] = {}
    for expr in exprs:
        field, sep, raw = expr.partition("=")
        field = field.strip()
        if not sep or not field:
            raise UserError(f"filter {expr!r} is not FIELD=VALUE; e.g. --where camid=3 or --where metadata.year=2020")
        if field in out:
            raise UserError(f"filter field {field!r} is given twice; give its values as one list: {field}=[a,b]")
        try:
            out[field] = json.loads(raw)
        except ValueError:
            out[field] = raw
    return check_where(out)


def check_where(where: Mapping[str, Any] | None) -> Where | None:
    """A filter validated and normalized (every field's values a list); None or {} means no filter."""
    if not where:
        return None
    if not isinstance(where, Mapping):
        raise UserError(f"a filter is an object of FIELD: VALUE(S), got {type(where).__name__}")
    out: Where = {}
    for field, value in where.items():
        if not isinstance(field, str) or not _FIELD.fullmatch(field):
            raise UserError(f"filter field {field!r} is not a field name (letters, digits, _ and -; dots for nesting)")
        values = list(value) if isinstance(value, list | tuple) else [value]
        if not values:
            raise UserError(f"filter field {field!r} has an empty list of values; give at least one")
        if len(values) > _MAX_VALUES:
            raise UserError(f"filter field {field!r} has {len(values)} values; at most {_MAX_VALUES}")
        for v in values:
            if not isinstance(v, _SCALARS) or (isinstance(v, float) and not np.isfinite(v)):
                raise UserError(f"filter field {field!r}: {v!r} is not a text, number or true/false value")
        out[field] = values
    return out


def _field_test(session: Session, field: str, values: list[Any]) -> sa.ColumnElement[bool]:
    parts = field.split(".")
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB

        # jsonb equality is typed: 3 = 3.0, 3 <> "3", true <> 1
        value = sa.func.jsonb_extract_path(sa.cast(Item.info, JSONB), *parts)
        return value.in_([sa.cast(sa.literal(json.dumps(v), sa.Text), JSONB) for v in values])
    path = "$" + "".join(f'."{p}"' for p in parts)
    value, kind = sa.func.json_extract(Item.info, path), sa.func.json_type(Item.info, path)
    # SQLite's json_extract reads true/false as 1/0 and "3" as 3's text: json_type tells them apart. One IN
    # per type, not one test per value: 500 values cost 500 JSON parses a row (8 s for 200k items)
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    texts = [v for v in values if isinstance(v, str)]
    flags = ["true" if v else "false" for v in values if isinstance(v, bool)]
    tests = ([sa.and_(kind.in_(["integer", "real"]), value.in_(numbers))] if numbers else []) + (
        [sa.and_(kind == "text", value.in_(texts))] if texts else []) + ([kind.in_(flags)] if flags else [])
    return sa.or_(*tests)


def matching_ids(session: Session, index_id: int, where: Where) -> np.ndarray:
    """The FAISS ids of index `index_id`'s items that pass `where`, ascending."""
    stmt = sa.select(Item.faiss_id).where(Item.index_id == index_id, *(_field_test(session, f, v) for f, v in where.items()))
    return np.sort(np.fromiter(session.scalars(stmt), dtype=np.int64))
