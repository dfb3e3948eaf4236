"""Where the Market-1501 data lives and how tests cut tiny slices of it."""

from __future__ import annotations

import shutil
from pathlib import Path

MARKET = Path(__file__).resolve().parents[3] / "shared" / "data" / "market1501"
ATTRIBUTES = MARKET.parent / "market1501_attribute"

if not MARKET.is_dir():  # the repo's sibling shared/ folder; fall back to the absolute location
    MARKET = Path("/work/shared/data/market1501")
    ATTRIBUTES = Path("/work/shared/data/market1501_attribute")

TRAIN_IDS = ("0002", "0007", "0010", "0011", "0012", "0020")
TEST_IDS = ("0955", "0957", "0958")


def make_slice(root: Path, train_ids=TRAIN_IDS, per_id: int = 4, test_ids=TEST_IDS) -> Path:
    """Copy a few identities (at most `per_id` train crops each) into a Market-layout folder."""
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for pid in train_ids:
        for path in sorted((MARKET / "bounding_box_train").glob(f"{pid}_*.jpg"))[:per_id]:
            shutil.copy(path, root / "bounding_box_train" / path.name)
    for pid in test_ids:
        for sub in ("query", "bounding_box_test"):
            for path in sorted((MARKET / sub).glob(f"{pid}_*.jpg")):
                shutil.copy(path, root / sub / path.name)
    return root
