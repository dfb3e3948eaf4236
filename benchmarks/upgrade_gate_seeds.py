"""The safety gate over many samples: which adapter it lets through, and what that does to real queries.

For each seed, `upgrade fit`'s fit runs on a fresh `--size`-document sample (drawn from the cached
2,000-document sample of `benchmarks/upgrade_scifact.py`), every candidate kind is scored on SciFact's
300 labelled test queries against v1's stored vectors, and the gate's choice is replayed two ways:
self-retrieval among the sample alone (the rule before) and among the sample plus the index's other
v1 vectors (the rule now). Reads the embeddings `upgrade_scifact.py` cached for both models.

    .venv/bin/python benchmarks/upgrade_gate_seeds.py --v1-tag minilm-static256 --v2-tag model \\
        --seeds 0-9 --out docs/upgrade_gate_static256-minilm.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _choice(kinds: dict, baseline: dict, self_key: str, base_key: str, tolerance: float) -> str | None:
    """The kind the gate would activate (best selection score among the accepted), or None."""
    from embedkd.upgrade.fit import selection_score
    from embedkd.upgrade.gate import decide

    ranked = sorted(kinds, key=lambda k: -selection_score(kinds[k]["figures"]))
    for kind in ranked:
        f = kinds[kind]["figures"]
        replay = {"agree_v1": baseline["agree_v1"], "agree_adapted": f["agree_adapted"],
                  "self_v1": baseline[base_key], "self_adapted": f[self_key]}
        if decide(replay, tolerance).accepted:
            return kind
    return None


def main() -> None:
    from embedkd.evaluation import exact_run, retrieval_metrics
    from embedkd.upgrade.fit import fit_from_pairs, single_threaded_blas
    from embedkd.upgrade.gate import TOLERANCE
    from embedkd.upgrade.pairs import PairedVectors
    from embedkd.upgrade.report import load_beir_queries
    from embedkd.upgrade.sampling import query_like_pieces, sample_indices
    from embedkd.upgrade.select import CANDIDATES
    from indexer.corpus import read_corpus

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/shared/data/scifact")
    ap.add_argument("--cache", default="/tmp/embedkd_upgrade/cache")
    ap.add_argument("--v1-tag", required=True)
    ap.add_argument("--v2-tag", required=True)
    ap.add_argument("--size", type=int, default=250, help="documents per sample (the CLI's default on SciFact)")
    ap.add_argument("--seeds", default="0-9", help="first-last")
    ap.add_argument("--out")
    args = ap.parse_args()
    cache = Path(args.cache)
    docs = list(read_corpus(args.data))
    ids, texts = [d.id for d in docs], [str(d.content) for d in docs]
    titles = [(d.info or {}).get("title") for d in docs]

    def load(tag: str) -> np.ndarray:
        return np.load(cache / f"{tag}.npy")

    d1, d2 = load(f"{args.v1_tag}.docs"), load(f"{args.v2_tag}.docs")
    q1, q2 = load(f"{args.v1_tag}.queries"), load(f"{args.v2_tag}.queries")
    p1, p2 = load(f"{args.v1_tag}.pieces-2000-0"), load(f"{args.v2_tag}.pieces-2000-0")
    qids, _, qrels = load_beir_queries(args.data, "test")
    pick = sample_indices(len(docs), 2000, 0)
    pieces = query_like_pieces([texts[i] for i in pick], [titles[i] for i in pick], seed=0)

    def ndcg(queries: np.ndarray, corpus: np.ndarray) -> float:
        return retrieval_metrics(exact_run(ids, corpus, qids, queries), qrels)["ndcg@10"]

    v1v1 = ndcg(q1, d1)
    first, last = (int(v) for v in args.seeds.split("-"))
    runs = []
    for seed in range(first, last + 1):
        keep = np.sort(np.random.default_rng(100 + seed).choice(len(pick), min(args.size, len(pick)), replace=False))
        new_pos = {int(old): new for new, old in enumerate(keep)}
        sel = [i for i, p in enumerate(pieces) if p.doc in new_pos]
        sub_pieces = [type(pieces[i])(pieces[i].text, new_pos[pieces[i].doc], pieces[i].kind) for i in sel]
        sampled = pick[keep]
        pairs = PairedVectors(d1[sampled], d2[sampled], sub_pieces, p1[sel], p2[sel])
        index_v1 = np.vstack([d1[sampled], d1[np.setdiff1d(np.arange(len(docs)), sampled)]])
        with single_threaded_blas():
            outcome = fit_from_pairs(pairs, CANDIDATES, seed=seed, index_v1=index_v1)
        kinds = {c.kind: {"figures": c.figures, "test_ndcg@10": ndcg(c.adapter.apply(q2), d1)}
                 for c in outcome.candidates}
        run = {"seed": seed, "baseline": outcome.baseline, "kinds": kinds}
        for rule, (self_key, base_key) in {"sample": ("self_adapted", "self_v1"),
                                           "index": ("self_adapted_index", "self_v1_index")}.items():
            kind = _choice(kinds, outcome.baseline, self_key, base_key, TOLERANCE)
            run[f"gate_{rule}"] = {"kind": kind, "change": (kinds[kind]["test_ndcg@10"] - v1v1) if kind else 0.0}
        print(seed, run["gate_sample"], run["gate_index"], flush=True)
        runs.append(run)
    summary = {}
    for rule in ("sample", "index"):
        changes = [r[f"gate_{rule}"]["change"] for r in runs]
        accepted = [r[f"gate_{rule}"]["kind"] is not None for r in runs]
        summary[rule] = {"accepted": int(sum(accepted)), "worse_than_v1_beyond_tolerance":
                         int(sum(c < -TOLERANCE for c in changes)), "mean_change": float(np.mean(changes)),
                         "changes": [round(c, 4) for c in changes]}
    out = {"v1": args.v1_tag, "v2": args.v2_tag, "size": args.size, "v1/v1": v1v1, "v2/v2": ndcg(q2, d2),
           "summary": summary, "runs": runs}
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
