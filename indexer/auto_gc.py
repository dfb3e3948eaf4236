"""`embedkd index gc` in the background of `embedkd serve` (`--gc-every`), as a database cleans up after itself.

A process killed midway (a build before its commit, a drop, an export, an upgrade reading kept texts) leaves
files no catalog row needs, gigabytes on a large index, until someone runs `index gc`. The server runs it every
`every_s` seconds. It deletes only what is provably dead (`cleanup.py`): each index folder is cleaned holding the
index's write lock (one being written is skipped until the next round), a job's folder is kept while the job can
resume, pins are removed only for processes gone from this machine, and a stopped compaction's shards are kept
while the next compaction can reuse them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from .cleanup import collect_garbage
from .context import Catalog
from .errors import UserError
from .periodic import Periodic

__all__ = ["AutoCollector"]

log = logging.getLogger(__name__)


class AutoCollector:
    def __init__(self, catalog: Catalog, every_s: float,
                 also: Sequence[Callable[[Catalog, bool], list[dict[str, Any]]]] = ()) -> None:
        """`also`: more collectors, as `collect_garbage` takes them."""
        if every_s <= 0:
            raise UserError(f"gc interval must be a positive number of seconds, got {every_s}")
        self.catalog, self.every_s, self.also = catalog, every_s, also
        self.counts: Counter[str] = Counter()  # rounds (done, failed) and what they removed (`GET /metrics`)
        self._loop = Periodic("embedkd-gc", every_s, self.round, on_error=lambda: self.counts.update(failed=1))

    def round(self) -> dict[str, Any]:
        """`index gc` now; what it removed."""
        out = collect_garbage(self.catalog, also=self.also)
        for removed in out["removed"]:
            log.warning("gc: deleted %s (%d bytes): %s", removed["path"], removed["bytes"], removed["why"])
        self.counts.update(done=1, removed_files=len(out["removed"]), removed_bytes=out["bytes"])
        return out

    def start(self) -> None:
        self._loop.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._loop.stop(timeout_s)
