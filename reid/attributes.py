"""Coarse person attributes from the Market-1501 attribute annotations (Lin et al. 2019).

The CSVs hold one row per identity with 27 labels in 1/2 coding (age 1..4). RLQ's coarse attribute
prediction keeps what survives low image quality, so the 27 labels are grouped into 12 coarse tasks:
9 binary ones (gender, hair, sleeve, lower length, lower type, hat, backpack, bag, handbag), age (4
classes), upper-body colour (8) and lower-body colour (9), each colour group a single class.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from indexer.errors import UserError
from indexer.textfile import text_lines

__all__ = ["ATTRIBUTE_TASKS", "IGNORE", "load_attributes", "attribute_targets"]

_BINARY = ("gender", "hair", "up", "down", "clothes", "hat", "backpack", "bag", "handbag")
_UP = ("upblack", "upwhite", "upred", "uppurple", "upyellow", "upgray", "upblue", "upgreen")
_DOWN = (
    "downblack", "downwhite", "downpink", "downpurple", "downyellow", "downgray", "downblue", "downgreen",
    "downbrown",
)
ATTRIBUTE_TASKS: tuple[tuple[str, int], ...] = (
    *((name, 2) for name in _BINARY),
    ("age", 4),
    ("upcolor", len(_UP)),
    ("downcolor", len(_DOWN)),
)
IGNORE = -100  # cross-entropy's ignore_index: unknown identity or unlabelled colour


def _row_targets(row: dict[str, str]) -> list[int]:
    out = [int(row[name]) - 1 for name in _BINARY]
    out.append(int(row["age"]) - 1)
    for group in (_UP, _DOWN):
        yes = [i for i, name in enumerate(group) if row[name] == "2"]
        out.append(yes[0] if len(yes) == 1 else IGNORE)
    return out


def load_attributes(folder: str | Path) -> dict[int, list[int]]:
    """Person id -> coarse targets (one int per task in ATTRIBUTE_TASKS) from every
    `market_attribute_*.csv` in `folder`."""
    folder = Path(folder)
    files = sorted(folder.glob("market_attribute_*.csv"))
    if not files:
        raise UserError(f"{folder} has no market_attribute_*.csv files; pass the Market-1501 attribute folder")
    table: dict[int, list[int]] = {}
    for path in files:
        for row in csv.DictReader(line for _, line in text_lines(path)):
            try:
                table[int(row["person_id"])] = _row_targets(row)
            except (KeyError, ValueError) as err:
                raise UserError(f"{path} has a malformed row ({err}); expected the 27 Market attributes") from None
    return table


def attribute_targets(pids: list[int], table: dict[int, list[int]]) -> np.ndarray:
    """(n, tasks) int64 array for the given person ids; IGNORE for ids without annotations."""
    missing = [IGNORE] * len(ATTRIBUTE_TASKS)
    return np.asarray([table.get(pid, missing) for pid in pids], dtype=np.int64)
