"""Make a second unseen-domain BEIR folder from Debian's package descriptions (no model download).

Query: a package's one-line synopsis ("Real-time strategy game of ancient warfare"); its relevant
document: the package's long description. Other packages' descriptions are the distractors. A proxy
for "BEIR sets we do not have", far from SciFact and from the docstring set: software of every kind,
games, fonts, science, written by thousands of maintainers.

Packages built from one source share most of their long description (libfoo1, libfoo-dev, foo-data),
so descriptions are grouped by their first paragraph and each group keeps one package: a query then has
exactly one relevant document. Synopses shared by several groups ("transitional package") are dropped.

The descriptions come from the Debian archive's Translation-en index, which apt fetches with

    apt-get -o Acquire::Languages=en update
    .venv/bin/python benchmarks/distill_make_debian.py --out /tmp/distill-bench/debian

(the lists are read with `apt-helper cat-file`; `--translations FILE` takes an uncompressed copy).
Descriptions are the packages' maintainers' text, redistributed by Debian; the folder is made locally
and not committed.
"""

from __future__ import annotations

import argparse
import glob
import json
import random
import re
import subprocess
from pathlib import Path

from embedkd.evaluation.beir import write_qrels, write_queries

LISTS = "/var/lib/apt/lists/*_debian_dists_*_main_i18n_Translation-en*"
SKIP_SYNOPSIS = re.compile(r"transitional|dummy package|debug symbols|metapackage|documentation for"
                           r'| - feature "', re.IGNORECASE)  # Rust crates' per-feature packages: near-copies


def _read_translations(path: str | None) -> str:
    if path:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    files = sorted(glob.glob(LISTS))
    if not files:
        raise SystemExit("no Translation-en list under /var/lib/apt/lists: run "
                         "`apt-get -o Acquire::Languages=en update` first, or pass --translations FILE")
    return "\n".join(subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", f], check=True,
                                    capture_output=True, text=True).stdout for f in files)


def _packages(text: str) -> list[tuple[str, str, list[str]]]:
    """(package, synopsis, paragraphs of the long description) for each stanza."""
    out = []
    for stanza in text.split("\n\n"):
        m = re.search(r"^Package: (\S+)$", stanza, re.MULTILINE)
        d = re.search(r"^Description-en: (.*)$((?:\n .*)*)", stanza, re.MULTILINE)
        if not m or not d:
            continue
        paragraphs, cur = [], []
        for line in d.group(2).splitlines():
            line = line[1:] if line.startswith(" ") else line
            if line.strip() == ".":
                paragraphs.append(" ".join(cur))
                cur = []
            elif line.strip():
                cur.append(line.strip())
        paragraphs.append(" ".join(cur))
        paragraphs = [" ".join(p.split()) for p in paragraphs if p.strip()]
        if paragraphs:
            out.append((m.group(1), d.group(1).strip(), paragraphs))
    return out


def _groups(packages: list[tuple[str, str, list[str]]]) -> list[tuple[str, str, str]]:
    """One (package, synopsis, description) per distinct first paragraph, synopses unique."""
    by_first: dict[str, tuple[str, str, list[str]]] = {}
    for name, synopsis, paragraphs in sorted(packages):
        key = paragraphs[0].lower()
        best = by_first.get(key)
        # Prefer the package whose synopsis has no "(... files)" suffix: the application, not its parts.
        if best is None or ("(" in best[1] and "(" not in synopsis):
            by_first[key] = (name, synopsis, paragraphs)
    counts: dict[str, int] = {}
    for _, synopsis, _ in by_first.values():
        counts[synopsis.lower()] = counts.get(synopsis.lower(), 0) + 1
    out = []
    for name, synopsis, paragraphs in by_first.values():
        body = " ".join(paragraphs)
        if (counts[synopsis.lower()] > 1 or SKIP_SYNOPSIS.search(synopsis) or "+" in name
                or body.startswith("This metapackage") or len(synopsis.split()) < 3 or len(body.split()) < 20):
            continue
        out.append((name, synopsis, body[:1500]))
    return sorted(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--translations", help="an uncompressed Translation-en file (default: apt's lists)")
    ap.add_argument("--docs", type=int, default=5000, help="documents in the corpus (a seeded sample)")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--train", type=int, default=0,
                    help="also write qrels/train.tsv: this many synopses of other corpus documents (for fine-tuning "
                         "a v2 or as a query log); the corpus and the test queries do not change")
    args = ap.parse_args()
    items = _groups(_packages(_read_translations(args.translations)))
    rng = random.Random(0)
    docs = rng.sample(items, min(args.docs, len(items)))
    queries = rng.sample(docs, min(args.queries, len(docs)))
    tested = {name for name, _, _ in queries}
    rest = [d for d in docs if d[0] not in tested]
    train = random.Random(1).sample(rest, min(args.train, len(rest)))
    out = Path(args.out)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w") as f:
        for name, _, body in docs:
            f.write(json.dumps({"_id": name, "title": "", "text": body}) + "\n")
    splits = {"test": ("q", queries), "train": ("t", train)}
    write_queries(out / "queries.jsonl", [(f"{prefix}{i}", synopsis) for prefix, items_ in splits.values()
                                          for i, (_, synopsis, _) in enumerate(items_)])
    for split, (prefix, items_) in splits.items():
        if items_:  # no train.tsv unless asked for: the folder stays as it was without --train
            write_qrels(out / "qrels" / f"{split}.tsv", [(f"{prefix}{i}", name, 1) for i, (name, _, _) in enumerate(items_)])
    print(json.dumps({"out": str(out), "groups": len(items), "documents": len(docs), "queries": len(queries),
                      "train": len(train)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
