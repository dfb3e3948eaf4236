"""Users' text files (corpora, queries, qrels, runs, query logs), read line by line as UTF-8.

A leading byte-order mark (Windows editors write one) is dropped, and a line that is not UTF-8 is a
one-line error naming the file and the line, not a traceback from the decoder."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path

from indexer.errors import UserError

__all__ = ["text_lines"]

_BOM = b"\xef\xbb\xbf"


def text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """(line number from 1, line with its ending) for each line of `path`; a `.gz` file is decompressed."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        # Bytes, decoded one line at a time: a decode error then knows its line.
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(f"{path} line {lineno} is not UTF-8 text (byte {raw[err.start]:#04x} at offset "
                                f"{err.start}); convert the file, e.g. iconv -f LATIN1 -t UTF-8") from None
