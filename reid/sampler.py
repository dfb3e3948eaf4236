"""Identity-balanced P x K batches: P persons, K crops each (the batch-hard triplet needs positives)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["PKBatchSampler"]


class PKBatchSampler:
    """A batch sampler for `torch.utils.data.DataLoader(batch_sampler=...)`.

    Each epoch, every identity's crops are shuffled and cut into groups of K (an identity with fewer
    than K crops is filled up by drawing again with replacement); batches take P identities that
    still have a group left, chosen at random, until fewer than P remain. Seeded: the same seed and
    epoch give the same batches. Call `set_epoch` between epochs.

    Args:
        pids: the person id (or label) of each dataset item.
        p: identities per batch.
        k: crops per identity.
        seed: base seed.
    """

    def __init__(self, pids: Sequence[int], p: int, k: int, seed: int = 0) -> None:
        if p < 2 or k < 1:
            raise ValueError(f"PK sampling needs p >= 2 and k >= 1, got p={p}, k={k}")
        self.by_pid: dict[int, list[int]] = defaultdict(list)
        for i, pid in enumerate(pids):
            self.by_pid[int(pid)].append(i)
        if len(self.by_pid) < p:
            raise ValueError(f"PK sampling with p={p} needs at least {p} identities, the data has {len(self.by_pid)}")
        self.p, self.k, self.seed, self.epoch = p, k, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _groups(self, rng: np.random.Generator) -> dict[int, list[list[int]]]:
        groups: dict[int, list[list[int]]] = {}
        for pid, idx in self.by_pid.items():
            idx = list(rng.permutation(idx))
            if len(idx) < self.k:
                idx += list(rng.choice(idx, size=self.k - len(idx), replace=True))
            usable = len(idx) - len(idx) % self.k
            groups[pid] = [[int(i) for i in idx[j : j + self.k]] for j in range(0, usable, self.k)]
        return groups

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        groups = self._groups(rng)
        available = [pid for pid, g in groups.items() if g]
        while len(available) >= self.p:
            chosen = rng.choice(len(available), size=self.p, replace=False)
            batch: list[int] = []
            for c in sorted(chosen):
                batch.extend(groups[available[c]].pop())
            yield batch
            available = [pid for pid in available if groups[pid]]

    def __len__(self) -> int:
        # Number of batches is data-dependent; this is the usual estimate (torchreid's).
        groups = sum(max(len(v), self.k) // self.k for v in self.by_pid.values())
        return groups // self.p
