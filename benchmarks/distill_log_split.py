"""Split a labelled BEIR folder into a query log and a held-out test set, for `embedkd distill --queries`.

The scenario: a user has a corpus and a log of queries but no relevance labels. A seeded share of the
test queries becomes `log.txt` (text only: the labels are dropped); the rest stay in `qrels/test.tsv`
with the same corpus, so a student distilled on the log is measured on queries it never saw.

    .venv/bin/python benchmarks/distill_log_split.py --data /tmp/unseen/faq --out /tmp/unseen/faq_log
    embedkd distill --teacher $M --student prune:$M:3 --data /tmp/unseen/faq_log \
        --queries /tmp/unseen/faq_log/log.txt --out /tmp/faq-student
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from embedkd.evaluation.beir import load_qrels, load_queries, write_qrels, write_queries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="BEIR folder with qrels/test.tsv")
    ap.add_argument("--out", required=True)
    ap.add_argument("--log-fraction", type=float, default=0.5, help="share of the test queries that become the log")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    src, out = Path(args.data), Path(args.out)
    qrels = load_qrels(src / "qrels" / "test.tsv")
    queries = load_queries(src / "queries.jsonl")
    qids = sorted(q for q in qrels if q in queries)
    rng = np.random.default_rng(args.seed)
    order = [qids[i] for i in rng.permutation(len(qids))]
    n_log = int(round(args.log_fraction * len(order)))
    log_ids, test_ids = sorted(order[:n_log]), sorted(order[n_log:])
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "corpus.jsonl", out / "corpus.jsonl")
    write_queries(out / "queries.jsonl", [(q, queries[q]) for q in test_ids])
    write_qrels(out / "qrels" / "test.tsv", [(q, d, g) for q in test_ids for d, g in sorted(qrels[q].items())])
    (out / "log.txt").write_text("".join(queries[q] + "\n" for q in log_ids))
    print(json.dumps({"out": str(out), "log_queries": len(log_ids), "test_queries": len(test_ids)}))


if __name__ == "__main__":
    main()
