"""Metadata filters: which items a search may return, by the fields the catalog keeps in each item's `info`.

A filter maps a field to a condition: `{"camid": [1, 2], "metadata.year": {"gte": 2019, "lt": 2021}}` keeps
items whose camid is 1 or 2 *and* whose metadata.year is in [2019, 2021) (dots reach into nested objects).
Conditions: a value or a list of values (any of them; the operator `in`), `not_in` (none of them; items
without the field pass), and `gt`, `gte`, `lt`, `lte` (numbers only; items whose field is not a number fail).
Values compare as JSON: 3 matches 3 (and 3.0) but not "3". Text corpora keep `title` and BEIR's `metadata`;
ReID galleries keep `pid`, `camid`, `file` and `path`. A filter is evaluated on its fields' values, read
from the catalog (`indexer.fields`): no item's text or vector is read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from .errors import UserError
from .fields import RANGES, FieldColumn, load_column, passes

__all__ = ["OPERATORS", "Where", "check_field", "check_where", "matching_ids", "parse_where", "select_ids"]

Where = dict[str, dict[str, Any]]  # field path -> {operator: values (in, not_in) or a number (gt, gte, lt, lte)}

_FIELD = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")
_SCALARS = (str, int, float, bool)
_MAX_VALUES = 10_000  # a longer list of allowed values belongs in the data (a field to filter on), not the query
OPERATORS = ("in", "not_in", *RANGES)
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


def check_field(field: Any) -> str:
    """`field` if filters can name it (a dotted path into an item's info), else a one-line error."""
    if not isinstance(field, str) or not _FIELD.fullmatch(field):
        raise UserError(f"filter field {field!r} is not a field name (letters, digits, _ and -; dots for nesting)")
    return field


def check_where(where: Mapping[str, Any] | None) -> Where | None:
    """A filter validated and normalized to {field: {operator: operand}}; None or {} means no filter."""
    if not where:
        return None
    if not isinstance(where, Mapping):
        raise UserError(f"a filter is an object of FIELD: condition, got {type(where).__name__}")
    out: Where = {}
    for field, cond in where.items():
        check_field(field)
        cond = dict(cond) if isinstance(cond, Mapping) else {"in": cond}
        if not cond:
            raise UserError(f"filter field {field!r} has an empty condition; give a value or e.g. {{\"gte\": 1}}")
        out[field] = {op: _operand(field, op, value) for op, value in cond.items()}
    return out


def _operand(field: str, op: Any, value: Any) -> Any:
    if op in RANGES:
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


def matching_ids(session: Session, index_id: int, where: Where) -> np.ndarray:
    """The FAISS ids of index `index_id`'s items that pass `where`, ascending."""
    return select_ids({f: load_column(session, index_id, f) for f in where}, where)


def select_ids(columns: Mapping[str, FieldColumn], where: Where) -> np.ndarray:
    """The ids that pass `where`, from its fields' columns (`indexer.fields`), ascending."""
    cols = [columns[f] for f in where]
    if all(np.array_equal(c.ids, cols[0].ids) for c in cols[1:]):
        mask = np.ones(len(cols[0].ids), bool)
        for col, cond in zip(cols, where.values()):
            mask &= passes(col, cond)
        return cols[0].ids[mask]
    # columns read on either side of a write: an id must pass in every column that has it, and be in all
    ids = cols[0].ids[passes(cols[0], where[next(iter(where))])]
    for col, cond in list(zip(cols, where.values()))[1:]:
        ids = np.intersect1d(ids, col.ids[passes(col, cond)], assume_unique=True)
    return ids
