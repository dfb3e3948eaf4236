"""Tracklet queries when the tracker switched identity: one crop of another person in the track.

`reid gallery query --fuse` averages a track's crops (`indexer.search.mean_query`). A real tracker
sometimes hands over a crop of someone else (an identity switch); a mean takes it in. This compares,
on the tracklet protocol of `benchmarks/reid_multishot.py` (the query + up to 3 same-camera gallery
crops), the mean with two robust fusions, each in one configuration chosen before the run (not tuned):
`trim25` drops the floor(n/4) crops least similar to the mean of a tracklet of n >= 3 crops, then
averages the rest; `medoid` keeps the crops whose mean cosine to the others is at least the median of
those scores minus 0.15. "Switched": every tracklet of at least 3 crops gets one more, a random crop
(seeded) of another person from the same camera. Rank-1 and mAP on all queries, and the paired rank-1
difference from a single crop on the tracklets that can switch.

    .venv/bin/python benchmarks/reid_tracklet_switch.py --model /tmp/reid/hq --data ../shared/data/market1501 \
        --out docs/reid_tracklet_switch.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from indexer.search import mean_query  # noqa: E402


def trimmed(v: np.ndarray, drop: float = 0.25) -> np.ndarray:
    k = int(np.floor(drop * len(v)))
    if len(v) < 3 or k == 0:
        return mean_query(v)
    return mean_query(v[np.argsort(-(v @ mean_query(v)[0]))[: len(v) - k]])


def medoid(v: np.ndarray, margin: float = 0.15) -> np.ndarray:
    if len(v) < 3:
        return mean_query(v)
    sims = v @ v.T
    np.fill_diagonal(sims, np.nan)
    score = np.nanmean(sims, axis=1)
    return mean_query(v[score >= np.median(score) - margin])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch

    from reid.data import read_market
    from reid.evaluation import crop_features, extract_features, tracklet_crops
    from reid.metrics import cosine_distance, evaluate_rank, first_match_ranks, paired_rank1_difference
    from reid.model import load_model

    torch.set_flush_denormal(True)
    data = read_market(args.data, need_test=True)
    qp, gp = [s.path for s in data.query], [s.path for s in data.gallery]
    qpid, qcam = np.array([s.pid for s in data.query]), np.array([s.camid for s in data.query])
    gpid, gcam = np.array([s.pid for s in data.gallery]), np.array([s.camid for s in data.gallery])
    model, _ = load_model(args.model)
    model.eval()
    gf = extract_features(model, gp)
    crops = tracklet_crops(qpid, qcam, gpid, gcam, 3)
    rng = np.random.default_rng(args.seed)
    foreign = [int(rng.choice(np.flatnonzero((gpid != qpid[i]) & (gcam == qcam[i]) & (gpid > 0)))) if len(c) >= 2
               else None for i, c in enumerate(crops)]
    switchable = np.array([f is not None for f in foreign])
    report = {"command": " ".join(sys.argv), "model": args.model, "queries": len(qp),
              "tracklets_that_switch": int(switchable.sum()), "results": {}}
    for cond in ("clean", "lq"):
        lq = cond == "lq"
        qf = extract_features(model, qp, lq=lq)
        feats = crop_features(model, gp, gf, [*crops, [f for f in foreign if f is not None]], lq=lq)
        single = first_match_ranks(cosine_distance(qf, gf), qpid, gpid, qcam, gcam)
        for switched in (False, True):
            for name, fuse in (("mean", mean_query), ("trim25", trimmed), ("medoid", medoid)):
                rows = []
                for i, c in enumerate(crops):
                    v = np.vstack([qf[i], feats[c]])
                    if switched and foreign[i] is not None:
                        v = np.vstack([v, feats[foreign[i]][None]])
                    rows.append(fuse(v))
                dist = cosine_distance(np.vstack(rows), gf)
                cmc, mean_ap = evaluate_rank(dist, qpid, gpid, qcam, gcam, max_rank=10)
                ranks = first_match_ranks(dist, qpid, gpid, qcam, gcam)
                d = paired_rank1_difference(ranks[switchable], single[switchable])
                row = {"rank1": round(100 * float(cmc[0]), 2), "mAP": round(100 * mean_ap, 2),
                       "rank1_switchable": round(100 * float((ranks[switchable] == 0).mean()), 2),
                       "single_rank1_switchable": round(100 * float((single[switchable] == 0).mean()), 2),
                       "vs_single": {"diff": round(100 * d["diff"], 2), "ci": [round(100 * x, 2) for x in d["ci"]]}}
                key = f"{cond}/{'switched' if switched else 'clean_track'}/{name}"
                report["results"][key] = row
                print(key, row, flush=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
