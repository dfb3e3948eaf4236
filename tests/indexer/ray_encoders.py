"""An encoder for Ray workers that fails on demand (pickled by value, so workers need not import tests/)."""

from __future__ import annotations

from pathlib import Path


class FailWhileFlagged:
    """The real encoder, except that a call holding `marker` fails while the file `flag` exists."""

    def __init__(self, inner, marker: str, flag: str) -> None:
        self.inner, self.marker, self.flag = inner, marker, flag
        self.record = inner.record

    def __call__(self, items):
        if Path(self.flag).exists() and any(self.marker in t for t in items):
            raise RuntimeError("worker lost its disk")
        return self.inner(items)


def failing_text_encoder(model: str, marker: str, flag: str) -> FailWhileFlagged:
    from embedkd.text_encoder import worker_text_encoder

    return FailWhileFlagged(worker_text_encoder(model, precision="fp32", batch_size=8), marker, flag)
