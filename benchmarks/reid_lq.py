"""ReID on low-quality queries: HQ baseline vs LQ augmentation vs HQ->LQ distillation (+ attributes).

One sequential run on the Market-1501 dev split (query/ + bounding_box_test/ of --data):
  0. imagenet      : the ImageNet backbone, no ReID training (reference point)
  1. hq_baseline   : trained from ImageNet on clean crops                (baseline-epochs)
  2. lq_aug        : from hq_baseline, fine-tuned with 50% degraded crops (finetune-epochs)
  3. distilled     : from hq_baseline, same fine-tuning + HQ->LQ distillation, teacher = hq_baseline
  4. distilled_attr: as 3 + coarse attribute prediction alternating with distillation
Rows 2-4 share the starting point and the fine-tuning budget, so they differ only in the loss.
Each row: rank-1/mAP with clean and with `--lq` queries (fixed seeded protocol), training time,
images/s at inference (gallery extraction, batch 128, this CPU). A finished stage is not rerun.

Budget-aware: each stage has an epoch count and a wall-clock cap (--*-minutes); the LR schedule
ends at whichever comes first. The machine is shared, so times are what this run saw.

    nice -n 10 .venv/bin/python benchmarks/reid_lq.py --data ../shared/data/market1501 \
        --attributes ../shared/data/market1501_attribute --work /tmp/reid_bench --out docs/reid_benchmark
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
    ap.add_argument("--data", required=True)
    ap.add_argument("--attributes", required=True)
    ap.add_argument("--work", required=True, help="folder for the trained models")
    ap.add_argument("--out", required=True, help="path prefix for .json and .md results")
    ap.add_argument("--backbone", default="mobilenetv2_100")
    ap.add_argument("--baseline", default=None,
                    help="an HQ model already trained (e.g. by the default `embedkd reid train`): used as the "
                         "baseline row and the starting point instead of training one")
    ap.add_argument("--baseline-epochs", type=int, default=12)
    ap.add_argument("--baseline-minutes", type=float, default=40)
    ap.add_argument("--finetune-epochs", type=int, default=4)
    ap.add_argument("--finetune-minutes", type=float, default=18)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stages", default="lq_aug,distilled,distilled_attr",
                    help="fine-tuned models to train and compare with the baseline (another seed: a subset; "
                         "also distilled_logits)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is 2-3x faster than 2 when the 2 cores are shared)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    from reid.data import read_market
    from reid.evaluation import evaluate_market
    from reid.metrics import paired_rank1_difference
    from reid.model import ModelSpec, build_model, load_model
    from reid.training import TrainOptions, train_reid

    torch.set_flush_denormal(True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = read_market(args.data, need_train=True, need_test=True)
    base = args.baseline or str(work / "hq_baseline")
    common = dict(backbone=args.backbone, eval_every=0, seed=args.seed)
    finetune = dict(epochs=args.finetune_epochs, max_minutes=args.finetune_minutes, init=base, lq_prob=0.5)
    stages = [
        ("hq_baseline", TrainOptions(**common, epochs=args.baseline_epochs, max_minutes=args.baseline_minutes)),
        ("lq_aug", TrainOptions(**common, **finetune)),
        # embedding terms only, as docs/reid_benchmark.* were made (identity logits became the default later)
        ("distilled", TrainOptions(**common, **finetune, teacher=base, distill_logits=0.0)),
        ("distilled_attr", TrainOptions(**common, **finetune, teacher=base, attributes=args.attributes,
                                        distill_logits=0.0)),
        ("distilled_logits", TrainOptions(**common, **finetune, teacher=base, distill_logits=1.0)),
    ]
    wanted = {"hq_baseline", *args.stages.split(",")}
    stages = [(name, opts) for name, opts in stages if name in wanted]
    rows: list[dict] = []
    ranks: dict[str, dict[str, np.ndarray]] = {}  # per model, per query set: first-match rank per query
    t_start = time.time()

    def evaluate(name: str, model, summary: dict) -> None:
        clean = evaluate_market(model, data, per_query=True)
        lq = evaluate_market(model, data, lq=True, per_query=True)
        ranks[name] = {"clean": np.array(clean["first_match_rank"]), "lq": np.array(lq["first_match_rank"])}
        row = {
            "model": name,
            "rank1": clean["rank1"], "mAP": clean["mAP"], "lq_rank1": lq["rank1"], "lq_mAP": lq["mAP"],
            "rank5": clean["rank5"], "lq_rank5": lq["rank5"],
            "train_minutes": round(summary.get("train_seconds", 0.0) / 60, 1),
            "epochs": summary.get("epochs", 0), "steps": summary.get("steps", 0),
            "infer_images_per_s": round(clean["images_per_s"], 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        write()

    def write() -> None:
        out = {"command": " ".join(sys.argv), "host": platform.node(), "cpu_threads": torch.get_num_threads(),
               "queries": len(data.query), "gallery": len(data.gallery), "train_crops": len(data.train),
               "wall_minutes": round((time.time() - t_start) / 60, 1), "rows": rows, "paired": paired()}
        Path(args.out + ".json").write_text(json.dumps(out, indent=2))
        lines = ["| model | rank-1 | mAP | LQ rank-1 | LQ mAP | train min | epochs | infer img/s |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['model']} | {100 * r['rank1']:.1f} | {100 * r['mAP']:.1f} | "
                         f"{100 * r['lq_rank1']:.1f} | {100 * r['lq_mAP']:.1f} | {r['train_minutes']} | "
                         f"{r['epochs']} | {r['infer_images_per_s']} |")
        lines += ["", "| rank-1 difference (same queries) | queries | difference | 95% CI (paired bootstrap) |",
                  "|---|---|---|---|"]
        for d in out["paired"]:
            lines.append(f"| {d['a']} - {d['b']} ({d['queries']}) | {d['n']} | {100 * d['diff']:+.1f} | "
                         f"[{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}] |")
        Path(args.out + ".md").write_text("\n".join(lines) + "\n")

    def paired() -> list[dict]:
        """Rank-1 differences between two models on the same queries (paired bootstrap 95% CI)."""
        pairs = [("distilled", "lq_aug", "lq"), ("distilled", "hq_baseline", "lq"), ("distilled", "hq_baseline", "clean"),
                 ("distilled_attr", "lq_aug", "lq"), ("lq_aug", "hq_baseline", "lq"),
                 ("distilled_logits", "lq_aug", "lq"), ("distilled_logits", "distilled", "lq"),
                 ("distilled_logits", "hq_baseline", "clean")]
        return [{"a": a, "b": b, "queries": kind, **paired_rank1_difference(ranks[a][kind], ranks[b][kind])}
                for a, b, kind in pairs if a in ranks and b in ranks]

    imagenet, _ = build_model(ModelSpec(backbone=args.backbone))
    import timm

    cfg = timm.create_model(args.backbone, num_classes=0).pretrained_cfg
    imagenet.spec = ModelSpec(backbone=args.backbone, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    evaluate("imagenet", imagenet, {})
    for name, opts in stages:
        folder = Path(base) if name == "hq_baseline" else work / name
        if name == "hq_baseline" and args.baseline:
            summary = json.loads((folder / "reid_model.json").read_text())["info"].get("summary", {})
        else:
            t0 = time.time()
            summary = train_reid(args.data, folder, opts)
            print(f"{name}: trained in {(time.time() - t0) / 60:.1f} min", flush=True)
        model, _ = load_model(folder)
        evaluate(name, model, summary)
    print(Path(args.out + ".md").read_text())


if __name__ == "__main__":
    main()
