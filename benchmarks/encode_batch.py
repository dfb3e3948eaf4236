"""Encoding throughput by batch size and precision on this machine (`load_text_encoder`, as the CLI loads).

Each (batch size, precision) setting encodes the same documents; settings are interleaved over
`--rounds` so that load on a shared machine hits them alike; the report gives docs/s per setting
(median over rounds) and its ratio to the CLI's default batch size.

    .venv/bin/python benchmarks/encode_batch.py --model MODEL --data BEIR_DIR --docs 256 \\
        --out docs/encode_batch_<model>.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    import numpy as np

    from embedkd.text_encoder import load_text_encoder
    from indexer.corpus import read_corpus

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--docs", type=int, default=256)
    ap.add_argument("--batches", default="16,32,64,128")
    ap.add_argument("--precisions", default="bf16,fp32")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--default-batch", type=int, default=64, help="the batch size the ratios are taken against")
    ap.add_argument("--out")
    args = ap.parse_args()
    docs = [str(d.content) for d in read_corpus(args.data)]
    texts = [docs[i] for i in np.random.default_rng(0).choice(len(docs), min(args.docs, len(docs)), replace=False)]
    settings = [(int(b), p) for p in args.precisions.split(",") for b in args.batches.split(",")]
    encoders = {}
    for b, p in settings:
        encoders[(b, p)] = enc = load_text_encoder(args.model, device="cpu", batch_size=b, precision=p)
        enc(texts[:4])  # warm up
    seconds: dict[tuple[int, str], list[float]] = {s: [] for s in settings}
    for _ in range(args.rounds):
        for s in settings:
            t0 = time.perf_counter()
            encoders[s](texts)
            seconds[s].append(time.perf_counter() - t0)
    rate = {s: len(texts) / float(np.median(v)) for s, v in seconds.items()}
    rows = [{"batch_size": b, "precision": p, "docs_per_s": round(rate[(b, p)], 2),
             "vs_default": round(rate[(b, p)] / rate[(args.default_batch, p)], 3)} for b, p in settings]
    out = {"model": args.model, "data": args.data, "docs": len(texts),
           "mean_chars": int(np.mean([len(t) for t in texts])), "rounds": args.rounds, "rows": rows}
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
