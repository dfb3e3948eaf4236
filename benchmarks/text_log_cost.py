"""What keeping the texts of HTTP writes costs (`indexer/text_log.py`, `embedkd serve`'s default).

An index of `--docs` vectors (Flat, `--dim`-d, no model: document i's vector is row i of a seeded matrix, so
the figures are the write path alone; a real model adds its encoding time to both modes alike). Then
`--writes` requests of `--batch` new documents of about `--text-bytes` each go one after another through the
function the HTTP route calls, alternating (ABBA) a request that keeps its texts with one that does not. Reported:
latency per mode (median, p95) and their ratio; the log's files by level and its bytes against the texts
kept; bytes written to the log (merges included) per byte kept; and a check that the log holds exactly the
texts of the kept-mode documents, once each.

    .venv/bin/python benchmarks/text_log_cost.py --out docs/text_log_cost.json
    .venv/bin/python benchmarks/text_log_cost.py --texts ../shared/data/scifact --out docs/text_log_cost_scifact.json
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from command import command_line, emit  # this folder is on sys.path when a script in it runs
from filtered_search import TableEncoder, _clustered, table_docs

from indexer import text_log
from indexer.build import build_index
from indexer.context import open_catalog
from indexer.corpus import Doc, ListSource, read_corpus
from indexer.search import Searcher
from indexer.service import _add_keeping_texts
from indexer.settings import load_settings


def _docs(start: int, n: int, text_bytes: int, texts: list[str] | None) -> list[Doc]:
    """Documents `start`.. of `table_docs`, each with ~`text_bytes` of filler, or with the next of `texts` (real
    prose: what compression of the log is measured on)."""
    if texts:
        return [Doc(d.id, f"{d.content} {texts[i % len(texts)]}") for i, d in enumerate(table_docs(start, n), start)]
    filler = ("lorem ipsum dolor sit amet " * (text_bytes // 27 + 1))[:text_bytes]
    return [Doc(d.id, f"{d.content} {filler}") for d in table_docs(start, n)]


def _stats(latencies: list[float]) -> dict:
    lat = sorted(latencies)
    return {"latency_median_ms": round(1000 * statistics.median(lat), 2),
            "latency_p95_ms": round(1000 * lat[max(0, math.ceil(0.95 * len(lat)) - 1)], 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--writes", type=int, default=400, help="requests, alternating keep / not (ABBA)")
    ap.add_argument("--batch", type=int, default=10, help="documents per request")
    ap.add_argument("--text-bytes", type=int, default=1000, help="about this many characters a document")
    ap.add_argument("--texts", type=Path, default=None, help="a BEIR folder whose documents' texts to write instead")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    texts = [d.content for d in read_corpus(args.texts)] if args.texts else None

    x, _ = _clustered(args.docs + args.writes * args.batch, args.dim, 100, 0)
    encoder = TableEncoder(x)
    written = Counter()
    real_write = text_log._write

    def counting_write(folder, level, stamp_ns, rows, name=None):
        rows = list(rows)
        path = real_write(folder, level, stamp_ns, rows, name)
        written["bytes"] += path.stat().st_size
        return path

    text_log._write = counting_write  # bytes written to the log, merges included
    with tempfile.TemporaryDirectory() as home:
        catalog = open_catalog(load_settings(home=home))
        build_index(catalog, "w", encoder, ListSource(table_docs(0, args.docs)), progress=False)
        searcher = Searcher(catalog, lambda _source: encoder)
        latencies: dict[bool, list[float]] = {True: [], False: []}
        kept_ids, kept_bytes = set(), 0
        for w in range(args.writes):
            keep = w % 4 in (0, 3)  # ABBA: the index's own shard merges fall on a pattern of writes
            docs = _docs(args.docs + w * args.batch, args.batch, args.text_bytes, texts)
            t0 = time.perf_counter()
            out = _add_keeping_texts(searcher, "w", docs, keep)
            latencies[keep].append(time.perf_counter() - t0)
            assert out["added"] == args.batch
            if keep:
                kept_ids.update(d.id for d in docs)
                kept_bytes += sum(len(d.content) for d in docs)
        assert text_log.idle(600), "a background merge did not end"
        files = text_log.files(catalog, "w")
        in_log = Counter(d.id for p in files for d in read_corpus(p))
        assert set(in_log) == kept_ids and max(in_log.values()) == 1, "the log holds other texts than those kept"
        on_disk = sum(p.stat().st_size for p in files)
        report = {"command": command_line(__file__, args), "docs": args.docs, "writes": args.writes,
                  "batch": args.batch, "text_bytes": args.text_bytes,
                  "keep": _stats(latencies[True]), "no_keep": _stats(latencies[False]),
                  "median_ratio_keep_over_no_keep": round(statistics.median(latencies[True])
                                                          / statistics.median(latencies[False]), 3),
                  "log_files_by_level": dict(sorted(Counter(p.name.split("-")[0] for p in files).items())),
                  "log_bytes": on_disk, "texts_kept_chars": kept_bytes,
                  "log_bytes_per_char_kept": round(on_disk / kept_bytes, 3),
                  "bytes_written_per_byte_on_disk": round(written["bytes"] / on_disk, 2),
                  "bytes_written_per_char_kept": round(written["bytes"] / kept_bytes, 3),
                  "check": f"{len(in_log)} documents in the log, each once, all of the kept-mode writes"}
        catalog.close()
    emit(report, args.out)


if __name__ == "__main__":
    main()
