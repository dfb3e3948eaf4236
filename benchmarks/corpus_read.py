"""Reading a large corpus.jsonl: `indexer.textfile.text_lines` (bytes, decoded line by line, so that a bad byte
names its line) against Python's text-mode file iteration (what the readers used before).

The corpus is `--copies` copies of a BEIR corpus with fresh ids (SciFact x 100 = 518,300 documents). Both
readers parse every line as `JsonlCorpus` does; rounds alternate the two so that load on a shared machine
hits them alike; the report gives the median seconds of each and their ratio.

    .venv/bin/python benchmarks/corpus_read.py --data ../shared/data/scifact --copies 100 \\
        --out docs/corpus_read.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def text_mode_lines(path: Path):
    """The readers before `text_lines`: text mode, the decoder working on 8 KB chunks."""
    with open(path, encoding="utf-8") as f:
        yield from enumerate(f, 1)


def main() -> None:
    from indexer.corpus import parse_line
    from indexer.textfile import text_lines

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="BEIR folder whose corpus.jsonl is copied")
    ap.add_argument("--copies", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(Path(args.data) / "corpus.jsonl", encoding="utf-8") if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for c in range(args.copies):
                f.writelines(json.dumps({**r, "_id": f"{c}-{r['_id']}"}) + "\n" for r in rows)
        readers = {"text_lines": text_lines, "text_mode": text_mode_lines}
        seconds: dict[str, list[float]] = {name: [] for name in readers}
        for _ in range(args.rounds):
            for name, lines in readers.items():
                t0 = time.perf_counter()
                n = sum(1 for lineno, line in lines(path) if parse_line(line, lineno, path).content)
                seconds[name].append(time.perf_counter() - t0)
        size = path.stat().st_size
    med = {name: statistics.median(v) for name, v in seconds.items()}
    report = {"documents": n, "bytes": size, "rounds": args.rounds, "seconds": seconds, "median_seconds": med,
              "ratio_text_lines_to_text_mode": med["text_lines"] / med["text_mode"],
              "command": f"benchmarks/corpus_read.py --data {args.data} --copies {args.copies} --rounds {args.rounds}"}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
