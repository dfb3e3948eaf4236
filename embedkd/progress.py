"""Training progress on stderr: a tqdm bar on a terminal, a plain line every 30 s in a log file.

A batch job's log gets no carriage-return bars (unreadable in a file) but still shows that a long
run is alive and how far it is, so stdout stays free for `--json`.
"""

from __future__ import annotations

import sys
import time


class StepProgress:
    def __init__(self, total: int, desc: str, enabled: bool = True, initial: int = 0, every_s: float = 30.0):
        self.total, self.desc, self.enabled, self.every_s = total, desc, enabled, every_s
        self.done = initial
        self.t0 = self.last = time.perf_counter()
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total or None, initial=initial, desc=desc, unit="step", dynamic_ncols=True)

    def update(self, figures: dict[str, float]) -> None:
        """One step done; `figures` (e.g. running losses) go beside the count."""
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in figures.items()}, refresh=False)
            return
        now = time.perf_counter()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            text = " ".join(f"{k}={v:.4f}" for k, v in figures.items())
            count = f"{self.done}/{self.total}" if self.total else str(self.done)  # total 0: unknown (a time budget)
            sys.stderr.write(f"{self.desc}: step {count}, {now - self.t0:.0f}s {text}\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
