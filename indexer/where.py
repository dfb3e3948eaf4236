"""Metadata filters: which items a search may return, by the fields the catalog keeps in each item's `info`.

A filter maps a field to a condition: `{"camid": [1, 2], "metadata.year": {"gte": 2019, "lt": 2021}}` keeps
items whose camid is 1 or 2 *and* whose metadata.year is in [2019, 2021) (dots reach into nested objects).
Conditions: a value or a list of values (any of them; the operator `in`), `not_in` (none of them; items
without the field pass), and `gt`, `gte`, `lt`, `lte` (numbers only; items whose field is not a number fail).
Values compare as JSON: 3 matches 3 (and 3.0) but not "3". Text corpora keep `title` and BEIR's `metadata`;
ReID galleries keep `pid`, `camid`, `file` and `path`. The catalog answers a filter with the FAISS ids it
allows, in SQL (SQLite's json_extract, PostgreSQL's jsonb), so no item's text or vector is read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from .errors import UserError
from .models import Item

__all__ = ["OPERATORS", "Where", "check_where", "matching_ids", "parse_where"]

Where = dict[str, dict[str, Any]]  # field path -> {operator: values (in, not_in) or a number (gt, gte, lt, lte)}

_FIELD = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")
_SCALARS = (str, int, float, bool)
_MAX_VALUES = 10_000  # a longer list of allowed values belongs in the data (a field to filter on), not the query
_RANGES = {"gt": "__gt__", "gte": "__ge__", "lt": "__lt__", "lte": "__le__"}
OPERATORS = ("in", "not_in", *_RANGES)
# the CLI's spelling of each operator; two-character ones first, so that `a>=1` is not read as `a>` `=1`
_CLI = (("!=", "not_in"), (">=", "gte"), ("<=", "lte"), ("=", "in"), (">", "gt"), ("<", "lt"))
_CLI_HINT = "e.g. --where camid=3, --where 'camid!=[1,2]', --where 'metadata.year>=2019'"


def parse_where(exprs: Sequence[str]) -> Where | None:
    """`FIELD=VALUE`, `FIELD!=VALUE`, `FIELD>=N` (and `>`, `<=`, `<`) strings, the CLI's and GET's form, as a
    filter. VALUE is read as JSON where it parses (`camid=3` is the number 3, `camid=[1,2]` either, `code="3"`
    the text 3), else as text (`title=Intro`)."""
    out: dict[str, dict[str, Any]] = {}
    for expr in exprs:
        found = [(expr.find(sym), -len(sym), sym, op) for sym, op in _CLI if sym in expr]
        if not found:
            raise UserError(f"filter {expr!r} has no =, !=, >=, >, <= or <; {_CLI_HINT}")
        at, _, sym, op = min(found)
        field, raw = expr[:at].strip(), expr[at + len(sym):]
        if not field:
            raise UserError(f"filter {expr!r} names no field before {sym!r}; {_CLI_HINT}")
        if op in out.setdefault(field, {}):
            raise UserError(f"filter {field}{sym}... is given twice; give the values as one list: {field}{sym}[a,b]")
        try:
            out[field][op] = json.loads(raw)
        except ValueError:
            out[field][op] = raw
    return check_where(out)


def check_where(where: Mapping[str, Any] | None) -> Where | None:
    """A filter validated and normalized to {field: {operator: operand}}; None or {} means no filter."""
    if not where:
        return None
    if not isinstance(where, Mapping):
        raise UserError(f"a filter is an object of FIELD: condition, got {type(where).__name__}")
    out: Where = {}
    for field, cond in where.items():
        if not isinstance(field, str) or not _FIELD.fullmatch(field):
            raise UserError(f"filter field {field!r} is not a field name (letters, digits, _ and -; dots for nesting)")
        cond = dict(cond) if isinstance(cond, Mapping) else {"in": cond}
        if not cond:
            raise UserError(f"filter field {field!r} has an empty condition; give a value or e.g. {{\"gte\": 1}}")
        out[field] = {op: _operand(field, op, value) for op, value in cond.items()}
    return out


def _operand(field: str, op: Any, value: Any) -> Any:
    if op in _RANGES:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise UserError(f"filter field {field!r}: {op} takes a number, got {value!r}")
        return value
    if op not in ("in", "not_in"):
        raise UserError(f"filter field {field!r}: unknown operator {op!r}; use one of {', '.join(OPERATORS)}")
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not values:
        raise UserError(f"filter field {field!r} has an empty list of values; give at least one")
    if len(values) > _MAX_VALUES:
        raise UserError(f"filter field {field!r} has {len(values)} values; at most {_MAX_VALUES}")
    for v in values:
        if not isinstance(v, _SCALARS) or (isinstance(v, float) and not math.isfinite(v)):
            raise UserError(f"filter field {field!r}: {v!r} is not a text, number or true/false value")
    return values


def _field_tests(session: Session, field: str, cond: dict[str, Any]) -> list[sa.ColumnElement[bool]]:
    parts = field.split(".")
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB

        # jsonb comparisons are typed: 3 = 3.0, 3 <> "3", true <> 1; a range is checked on numbers only
        value = sa.func.jsonb_extract_path(sa.cast(Item.info, JSONB), *parts)
        is_number = sa.func.jsonb_typeof(value) == "number"

        def jsonb(v: Any) -> sa.ColumnElement:
            return sa.cast(sa.literal(json.dumps(v), sa.Text), JSONB)

        def member(values: list[Any]) -> sa.ColumnElement[bool]:
            return value.in_([jsonb(v) for v in values])
    else:
        path = "$" + "".join(f'."{p}"' for p in parts)
        value, kind = sa.func.json_extract(Item.info, path), sa.func.json_type(Item.info, path)
        is_number = kind.in_(["integer", "real"])

        def jsonb(v: Any) -> Any:
            return v

        def member(values: list[Any]) -> sa.ColumnElement[bool]:
            # json_extract reads true/false as 1/0 and "3" as 3's text: json_type tells them apart. One IN per
            # type, not one test per value: 500 values cost 500 JSON parses a row (8 s for 200k items)
            numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
            texts = [v for v in values if isinstance(v, str)]
            flags = ["true" if v else "false" for v in values if isinstance(v, bool)]
            return sa.or_(*([sa.and_(is_number, value.in_(numbers))] if numbers else []),
                          *([sa.and_(kind == "text", value.in_(texts))] if texts else []),
                          *([kind.in_(flags)] if flags else []))

    tests = []
    for op, operand in cond.items():
        if op == "in":
            tests.append(member(operand))
        elif op == "not_in":  # an item without the field is not one of the values
            tests.append(sa.or_(value.is_(None), sa.not_(member(operand))))
        else:
            tests.append(sa.and_(is_number, getattr(value, _RANGES[op])(jsonb(operand))))
    return tests


def matching_ids(session: Session, index_id: int, where: Where) -> np.ndarray:
    """The FAISS ids of index `index_id`'s items that pass `where`, ascending."""
    tests = [t for field, cond in where.items() for t in _field_tests(session, field, cond)]
    stmt = sa.select(Item.faiss_id).where(Item.index_id == index_id, *tests)
    return np.sort(np.fromiter(session.scalars(stmt), dtype=np.int64))
