"""ReID inference throughput by batch size: crops embedded per second through `reid.evaluation.embed_images`.

Backbones are built from timm without weights (speed does not depend on them); the same crops go
through every batch size, interleaved over `--rounds` so load on a shared machine hits them alike.

    .venv/bin/python benchmarks/reid_batch.py --out docs/reid_batch.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    import numpy as np
    import torch
    from PIL import Image

    from reid.evaluation import embed_images
    from reid.model import ModelSpec, build_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/shared/data/market1501")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--backbones", default="mobilenetv2_100,tf_efficientnet_lite0")
    ap.add_argument("--batches", default="16,32,64,128")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    paths = sorted(Path(args.data).rglob("*.jpg"))[: args.images]
    images = [Image.open(p).convert("RGB") for p in paths]
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for name in args.backbones.split(","):
        model, _ = build_model(ModelSpec(backbone=name), pretrained=False)
        embed_images(model, images[:16], 16)  # warm up
        rates: dict[int, list[float]] = {b: [] for b in batches}
        for _ in range(args.rounds):
            for b in batches:
                t0 = time.perf_counter()
                with torch.inference_mode():
                    embed_images(model, images, b)
                rates[b].append(len(images) / (time.perf_counter() - t0))
        best = {b: float(np.median(v)) for b, v in rates.items()}
        rows += [{"backbone": name, "batch_size": b, "images_per_s": round(r, 1), "vs_64": round(r / best[64], 3)}
                 for b, r in best.items()]
    out = {"images": len(images), "threads": torch.get_num_threads(), "input": [128, 64], "rows": rows}
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
