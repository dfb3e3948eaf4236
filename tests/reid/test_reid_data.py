from __future__ import annotations

import shutil

import pytest

from indexer.errors import UserError
from reid.data import parse_market_name, read_market, relabel


def test_parse_market_name():
    assert parse_market_name("0002_c1s1_000451_03.jpg") == (2, 1)
    assert parse_market_name("-1_c3s2_000001_00.jpg") == (-1, 3)
    assert parse_market_name("0000_c6s1_000001_01.jpg") == (0, 6)
    assert parse_market_name("person2.jpg") is None


def test_read_market_splits_junk_and_distractors(market_slice, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(market_slice, root)
    some = next((root / "bounding_box_test").glob("*.jpg"))
    shutil.copy(some, root / "bounding_box_test" / "-1_c1s1_000001_00.jpg")  # junk
    shutil.copy(some, root / "bounding_box_test" / "0000_c2s1_000002_00.jpg")  # distractor
    shutil.copy(some, root / "bounding_box_train" / "0000_c2s1_000002_00.jpg")
    data = read_market(root, need_train=True, need_test=True)
    assert {s.pid for s in data.train} == {2, 7, 10, 11, 12, 20}
    assert all(s.pid > 0 for s in data.train)
    gallery_pids = [s.pid for s in data.gallery]
    assert -1 not in gallery_pids and 0 in gallery_pids
    assert {s.pid for s in data.query} == {955, 957, 958}
    q = [s for s in data.query if s.path.endswith("0955_c3s2_119844_06.jpg")][0]
    assert (q.pid, q.camid) == (955, 3)


def test_relabel_is_dense_and_reversible(market_slice):
    data = read_market(market_slice)
    new, pids = relabel(data.train)
    assert sorted({s.pid for s in new}) == list(range(len(pids)))
    assert all(pids[n.pid] == o.pid for n, o in zip(new, data.train))


def test_not_market_layout_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no training crops"):
        read_market(tmp_path, need_train=True)
    with pytest.raises(UserError, match="not a folder"):
        read_market(tmp_path / "missing")
    (tmp_path / "query").mkdir()
    (tmp_path / "query" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="not named like a Market-1501 crop"):
        read_market(tmp_path, need_test=True)
