"""Querying a gallery with a tracklet (several crops of one person) against a single crop.

A camera tracker gives a person's crops along a track, not one crop; `reid gallery query --fuse` (and
several `image` parts over HTTP) searches once with the mean of their unit embeddings
(`indexer.search.mean_query`). This measures what that buys on a Market-layout split, clean and under
the fixed `--lq` protocol, at several tracklet sizes (`reid eval --tracklet N` measures one).

Tracklets: Market has no tracks, but a person's gallery crops from the query's own camera come from the
same passage past that camera, and the Market protocol already removes them from that query's ranking
(same person, same camera). So query i's tracklet is its own crop plus up to S-1 of those crops
(in file-name order, i.e. frame order); the gallery and the ranking rules are unchanged, so a tracklet
query competes for exactly the matches its single crop does. With `lq`, every shot is degraded by the
fixed protocol (keyed by its file name, as `reid eval --lq` does). Queries that have no such crops stay
single-shot in every row; figures are given on all queries and on those with at least one extra shot.

    .venv/bin/python benchmarks/reid_multishot.py --model /tmp/reid/hq --data ../shared/data/market1501 \
        --out docs/reid_multishot.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, nargs="+", help="model folders from `embedkd reid train`")
    ap.add_argument("--data", required=True, help="Market-layout folder with query/ and bounding_box_test/")
    ap.add_argument("--shots", type=int, nargs="+", default=[2, 4, 8], help="tracklet sizes to measure (crops)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch

    from reid.data import read_market
    from reid.evaluation import crop_features, extract_features, fuse_tracklets, tracklet_crops
    from reid.metrics import cosine_distance, evaluate_rank, first_match_ranks, paired_rank1_difference
    from reid.model import load_model

    torch.set_flush_denormal(True)
    data = read_market(args.data, need_test=True)
    q_paths = [s.path for s in data.query]
    g_paths = [s.path for s in data.gallery]
    q_pids, q_cams = np.array([s.pid for s in data.query]), np.array([s.camid for s in data.query])
    g_pids, g_cams = np.array([s.pid for s in data.gallery]), np.array([s.camid for s in data.gallery])
    most = max(args.shots) - 1
    pool = tracklet_crops(q_pids, q_cams, g_pids, g_cams, most)
    multi = np.array([len(idx) > 0 for idx in pool])
    report = {"command": " ".join(sys.argv), "data": str(args.data), "queries": len(q_paths), "gallery": len(g_paths),
              "queries_with_extra_shots": int(multi.sum()),
              "extra_shots_available": {"mean": float(np.mean([len(np.flatnonzero((g_pids == p) & (g_cams == c)))
                                                               for p, c in zip(q_pids, q_cams)]))},
              "machine": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
              "models": {}}
    for folder in args.model:
        model, _ = load_model(folder)
        model.eval()
        t0 = time.perf_counter()
        gf = extract_features(model, g_paths)
        out: dict = {"gallery_seconds": round(time.perf_counter() - t0, 2)}
        for cond in ("clean", "lq"):
            lq = cond == "lq"
            qf = extract_features(model, q_paths, lq=lq)
            shot_feats = crop_features(model, g_paths, gf, pool, lq=lq)
            single = cosine_distance(qf, gf)
            base = first_match_ranks(single, q_pids, g_pids, q_cams, g_cams)
            rows = {}
            for size in [1, *args.shots]:
                dist = single if size == 1 else cosine_distance(fuse_tracklets(qf, shot_feats, [i[: size - 1] for i in pool]), gf)
                cmc, mean_ap = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=10)
                _, map_multi = evaluate_rank(dist[multi], q_pids[multi], g_pids, q_cams[multi], g_cams, max_rank=10)
                ranks = first_match_ranks(dist, q_pids, g_pids, q_cams, g_cams)
                row = {"rank1": round(100 * float(cmc[0]), 2), "rank5": round(100 * float(cmc[4]), 2),
                       "mAP": round(100 * mean_ap, 2), "mAP_multi": round(100 * map_multi, 2),
                       "rank1_multi": round(100 * float((ranks[multi] == 0).mean()), 2),
                       "mean_shots": round(1 + float(np.mean([min(len(i), size - 1) for i in pool])), 2)}
                if size > 1:
                    d = paired_rank1_difference(ranks, base)
                    row["rank1_vs_single"] = {"diff": round(100 * d["diff"], 2), "ci": [round(100 * c, 2) for c in d["ci"]],
                                              "better": d["a_better"], "worse": d["b_better"]}
                rows[str(size)] = row
                print(f"{Path(folder).name} {cond} shots<={size}: {row}", flush=True)
            out[cond] = rows
        report["models"][str(folder)] = out
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
