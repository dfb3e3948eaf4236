"""Market-1501 layout reader: plain `(path, person id, camera id)` lists, as torchreid keeps them.

A Market-1501 folder holds `bounding_box_train/`, `query/` and `bounding_box_test/`, with file names
like `0002_c1s1_000451_03.jpg` (person 0002, camera 1). Person id -1 marks junk crops, which are
skipped everywhere; id 0 marks distractors, kept in the gallery only (as Market-1501 evaluates).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from indexer.errors import UserError

__all__ = [
    "Sample",
    "MarketData",
    "parse_market_name",
    "read_market_split",
    "read_market",
    "relabel",
    "IMAGE_SUFFIXES",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_NAME = re.compile(r"^(-?\d+)_c(\d+)")

TRAIN_DIR = "bounding_box_train"
QUERY_DIR = "query"
GALLERY_DIR = "bounding_box_test"


class Sample(NamedTuple):
    path: str
    pid: int
    camid: int


@dataclass(frozen=True)
class MarketData:
    """The three splits of a Market-1501 folder. Any split may be empty when its folder is absent."""

    root: Path
    train: list[Sample]
    query: list[Sample]
    gallery: list[Sample]


def parse_market_name(name: str) -> tuple[int, int] | None:
    """`0002_c1s1_000451_03.jpg` -> (2, 1); None when the name is not in Market-1501 form."""
    match = _NAME.match(name)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def read_market_split(folder: str | Path, *, keep_distractors: bool) -> list[Sample]:
    """All images of one split folder, sorted by file name. Junk (-1) is skipped; distractors (0)
    are kept only when `keep_distractors`. Raises UserError when a file name is not Market-style."""
    folder = Path(folder)
    samples: list[Sample] = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        parsed = parse_market_name(path.name)
        if parsed is None:
            raise UserError(
                f"{path} is not named like a Market-1501 crop (PID_cCAM..., e.g. 0002_c1s1_000451_03.jpg); "
                "rename it or remove it from the folder"
            )
        pid, camid = parsed
        if pid == -1 or (pid == 0 and not keep_distractors):
            continue
        samples.append(Sample(str(path), pid, camid))
    return samples


def read_market(root: str | Path, *, need_train: bool = False, need_test: bool = False) -> MarketData:
    """Read a Market-1501 folder. `need_train`/`need_test` make a missing or empty split an error."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; pass a Market-1501 folder (with {TRAIN_DIR}/, {QUERY_DIR}/)")
    splits: dict[str, list[Sample]] = {}
    for key, sub, keep in (("train", TRAIN_DIR, False), ("query", QUERY_DIR, False), ("gallery", GALLERY_DIR, True)):
        folder = root / sub
        splits[key] = read_market_split(folder, keep_distractors=keep) if folder.is_dir() else []
    if need_train and not splits["train"]:
        raise UserError(
            f"{root} has no training crops in {TRAIN_DIR}/; pass a folder in Market-1501 layout"
        )
    if need_test and (not splits["query"] or not splits["gallery"]):
        raise UserError(
            f"{root} needs crops in both {QUERY_DIR}/ and {GALLERY_DIR}/ for evaluation; "
            "pass a folder in Market-1501 layout"
        )
    return MarketData(root=root, **splits)


def relabel(samples: list[Sample]) -> tuple[list[Sample], list[int]]:
    """Map person ids to 0..n-1 (for the ID classifier). Returns the new samples and the original
    id of each label."""
    pids = sorted({s.pid for s in samples})
    index = {pid: i for i, pid in enumerate(pids)}
    return [Sample(s.path, index[s.pid], s.camid) for s in samples], pids
