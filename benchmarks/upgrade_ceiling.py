"""Ceiling of any query-side adapter on SciFact: how good can a v2 query get against v1's stored vectors?

For each test query, gradient descent finds the unit vector u in v1's space whose ranking of *all* of
v1's document vectors best imitates the reindex's ranking (v2 query among v2 documents):
minimise KL(softmax(q2 . D2 / T) || softmax(u . D1 / T)). No adapter can do better than choosing u per
query with the whole reindex in hand, so the nDCG@10 of these u's bounds what the adapters can recover
without touching the index. Reads the embeddings `benchmarks/upgrade_scifact.py` cached.

    .venv/bin/python benchmarks/upgrade_ceiling.py --v2-tag minilm-scifact --out docs/upgrade_ceiling.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    import torch
    import torch.nn.functional as F

    from embedkd.evaluation import exact_run, retrieval_metrics
    from embedkd.upgrade.report import load_beir_queries
    from indexer.corpus import read_corpus

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/shared/data/scifact")
    ap.add_argument("--cache", default="/tmp/embedkd_upgrade/cache")
    ap.add_argument("--v1-tag", default="all-MiniLM-L6-v2")
    ap.add_argument("--v2-tag", action="append", required=True, help="cached v2 model tag(s)")
    ap.add_argument("--temperatures", default="0.02,0.05")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cache = Path(args.cache)
    ids = [d.id for d in read_corpus(args.data)]
    qids, _, qrels = load_beir_queries(args.data, "test")

    def ndcg(q: np.ndarray, docs: np.ndarray) -> float:
        return retrieval_metrics(exact_run(ids, docs, qids, q), qrels)["ndcg@10"]

    d1 = np.load(cache / f"{args.v1_tag}.docs.npy")
    q1 = np.load(cache / f"{args.v1_tag}.queries.npy")
    out = {}
    for tag in args.v2_tag:
        d2 = np.load(cache / f"{tag}.docs.npy")
        q2 = np.load(cache / f"{tag}.queries.npy")
        res = {"v1/v1": ndcg(q1, d1), "v2/v2": ndcg(q2, d2), "v2 raw/v1": ndcg(q2, d1) if q2.shape[1] == d1.shape[1]
               else None, "v1/v2": ndcg(q1, d2) if q1.shape[1] == d2.shape[1] else None}
        t1, t2 = torch.from_numpy(d1), torch.from_numpy(d2)
        for temp in (float(t) for t in args.temperatures.split(",")):
            target = torch.softmax(torch.from_numpy(q2) @ t2.T / temp, dim=1)
            u = torch.from_numpy(q1.copy()).requires_grad_(True)  # start from v1's own query
            opt = torch.optim.Adam([u], lr=0.01)
            for _ in range(args.steps):
                loss = F.kl_div(torch.log_softmax(F.normalize(u, dim=1) @ t1.T / temp, dim=1), target,
                                reduction="batchmean")
                opt.zero_grad()
                loss.backward()
                opt.step()
            res[f"ceiling T={temp}"] = ndcg(F.normalize(u, dim=1).detach().numpy(), d1)
            res[f"ceiling T={temp} kl"] = float(loss)
        gain = res["v2/v2"] - res["v1/v1"]
        res["ceiling share of gain"] = max(v for k, v in res.items() if k.startswith("ceiling T=") and "kl" not in k
                                           ) - res["v1/v1"]
        res["ceiling share of gain"] /= gain if gain else float("nan")
        print(tag, json.dumps(res), flush=True)
        out[tag] = res
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
