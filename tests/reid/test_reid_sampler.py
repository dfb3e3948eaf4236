from __future__ import annotations

from collections import Counter

import pytest

from reid.sampler import PKBatchSampler


def test_batches_hold_p_identities_with_k_crops_each():
    pids = [0] * 9 + [1] * 4 + [2] * 2 + [3] * 7 + [4] * 1
    sampler = PKBatchSampler(pids, p=3, k=2, seed=1)
    batches = list(sampler)
    assert batches
    for batch in batches:
        counts = Counter(pids[i] for i in batch)
        assert len(batch) == 6 and len(counts) == 3 and set(counts.values()) == {2}
    # identity 4 has one crop: its group is filled by drawing it again
    seen = [i for b in batches for i in b]
    assert all(0 <= i < len(pids) for i in seen)


def test_seeded_and_epoch_dependent():
    pids = [i // 5 for i in range(60)]
    a = PKBatchSampler(pids, p=4, k=3, seed=0)
    b = PKBatchSampler(pids, p=4, k=3, seed=0)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first


def test_too_few_identities():
    with pytest.raises(ValueError, match="at least 4 identities"):
        PKBatchSampler([0, 0, 1, 1], p=4, k=2)
