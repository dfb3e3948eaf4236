"""Compaction in the background of `embedkd serve` (`--compact-every`), as a database's own merge scheduler.

Every `every_s` seconds the server reads each index's manifest (no vectors) and compacts the indexes that need
it (`compaction.compaction_need`: deleted vectors still in their files, or many small shards). A compaction
holds the index's write lock only to start and to commit, so writes and searches go on meanwhile. Several
servers on one catalog share the work: an index that another process compacts or writes right now is skipped
until the next round. The server holds what a compaction rewrites in memory meanwhile, beside what it serves
(a full shard of 384-d vectors is 1.5 GB): size its memory for that, or serve with `--compact-every 0` and run
`embedkd index compact --all` (`compact_where_needed`, the same round) from cron.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

from .catalog import list_indexes
from .compaction import compact_index, compaction_status
from .context import Catalog
from .errors import Conflict, UserError
from .periodic import Periodic

__all__ = ["AutoCompactor", "compact_where_needed"]

log = logging.getLogger(__name__)

LOCK_WAIT_S = 10.0  # for the index's lock to start and to commit: a round waits no longer for a busy index


def compact_where_needed(catalog: Catalog, deleted_share: float = 0.05, folds: int = 12,
                         stop: threading.Event | None = None) -> dict[str, Any]:
    """Compact every index that needs it (`compaction_need`): {"compacted": what each compaction returned, with
    `why`; "busy": indexes another process compacted or wrote (skipped); "failed": {index: why}}."""
    with catalog.session() as s:
        names = [i.name for i in list_indexes(s) if i.file]
    out: dict[str, Any] = {"compacted": [], "busy": [], "failed": {}}
    for name in names:
        if stop is not None and stop.is_set():
            break
        try:
            status = compaction_status(catalog, name, deleted_share, folds)
            if status["compacting"] is not None:
                raise Conflict(f"index {name!r} is being compacted by another process ({status['compacting']})")
            why = status["compaction_need"]
            if why is None:
                continue
            log.info("compacting index %r: %s", name, why)
            out["compacted"].append({**compact_index(catalog, name, lock_wait_s=LOCK_WAIT_S), "why": why})
        except Conflict as err:  # another process writes or compacts it: the next round
            out["busy"].append(name)
            log.info("not compacting index %r now: %s", name, err)
        except (UserError, OSError) as err:  # dropped meanwhile, a file gone: said, and the rest go on
            out["failed"][name] = str(err)
            log.warning("compacting index %r failed: %s", name, err)
    return out


class AutoCompactor:
    def __init__(self, catalog: Catalog, every_s: float, deleted_share: float = 0.05, folds: int = 12) -> None:
        if every_s <= 0:
            raise UserError(f"compaction interval must be a positive number of seconds, got {every_s}")
        if not 0 < deleted_share <= 1:
            raise UserError(f"--compact-deleted is a share of an index's vectors in (0, 1], got {deleted_share}")
        self.catalog, self.every_s, self.deleted_share, self.folds = catalog, every_s, deleted_share, folds
        self.counts: Counter[str] = Counter()  # compactions by outcome: done, busy, failed (`GET /metrics`)
        self._loop = Periodic("embedkd-compact", every_s, self.round,
                              on_error=lambda: self.counts.update(failed=1))

    def round(self) -> list[dict[str, Any]]:
        """Compact every index that needs it, now; what each compaction returned."""
        out = compact_where_needed(self.catalog, self.deleted_share, self.folds, self._loop.stopping)
        self.counts += Counter(done=len(out["compacted"]), busy=len(out["busy"]), failed=len(out["failed"]))
        return out["compacted"]

    def start(self) -> None:
        self._loop.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the compaction under way, if any (waiting up to `timeout_s`: one killed midway leaves its
        staged shards, which the next compaction reuses)."""
        self._loop.stop(timeout_s)
