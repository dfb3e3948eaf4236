"""What a blended adapter costs per query: the extra encoding by the index's model (v1), against v2's.

A blend (`upgrade fit --eval-data`, docs/upgrade.md "Blending with v1's query") encodes every query
with both models. This times one query at a time through each model, interleaved in one run so that
load on a shared machine hits both alike, and reports v1's time as a share of the whole query path.

    .venv/bin/python benchmarks/upgrade_blend_cost.py --v1 V1 --v2 V2 --data /work/shared/data/scifact \\
        --out docs/upgrade_blend_cost_minilm-mpnet.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    import torch

    from embedkd.text_encoder import load_text_encoder
    from embedkd.upgrade.report import load_beir_queries

    ap = argparse.ArgumentParser()
    ap.add_argument("--v1", required=True)
    ap.add_argument("--v2", required=True)
    ap.add_argument("--data", default="/work/shared/data/scifact")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    texts = load_beir_queries(args.data, "test")[1][: args.queries]
    models = {name: load_text_encoder(path, device="cpu", batch_size=1) for name, path in (("v1", args.v1),
                                                                                          ("v2", args.v2))}
    for enc in models.values():
        enc.encode_queries(texts[:2])  # warm up
    seconds = {"v1": [], "v2": []}
    for text in texts:
        for name, enc in models.items():
            t0 = time.perf_counter()
            enc.encode_queries([text])
            seconds[name].append(time.perf_counter() - t0)
    ms = {name: 1000 * sorted(v)[len(v) // 2] for name, v in seconds.items()}  # medians: robust to other jobs
    out = {"v1": args.v1, "v2": args.v2, "queries": len(texts), "threads": args.threads,
           "median_ms_per_query": ms, "v1_share_of_encoding": ms["v1"] / (ms["v1"] + ms["v2"]),
           "blend_over_plain_encoding": (ms["v1"] + ms["v2"]) / ms["v2"]}
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
