"""Compare ReID models that are already trained, on clean and `--lq` queries, with paired CIs.

Each model is `NAME=DIR`; give a NAME several times for several training runs of it (seeds): its
rows are reported per run, and in the paired comparisons a query's rank-1 hit is the share of its
runs that rank the match first (`reid.metrics.paired_rank1_difference`). Used to compare the models
that the default commands make, e.g. LQ augmentation trained like the baseline vs HQ->LQ distillation:

    .venv/bin/python benchmarks/reid_compare.py --data ../shared/data/market1501 \\
        --model hq_baseline=/tmp/reid/hq --model lq_aug=/tmp/reid/lq_scratch --model distilled=/tmp/reid/distilled \\
        --pair distilled:lq_aug:lq --pair distilled:hq_baseline:lq --pair distilled:hq_baseline:clean \\
        --out docs/reid_default_commands

`--condition NAME=KIND[,KIND]` adds a query condition: the `--lq` protocol restricted to those degradation
kinds (`reid eval --lq --lq-kinds`), e.g. the kinds a model was not trained on; `--pair A:B:NAME` compares on it.

Each row keeps its per-query first-match ranks, so `--earlier FILE.json` can pool the runs of an
earlier comparison (models trained in another session, since deleted) into this one's pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="Market-1501 folder with query/ and bounding_box_test/")
    ap.add_argument("--model", action="append", required=True, help="NAME=DIR (repeat a NAME for seeds)")
    ap.add_argument("--pair", action="append", default=[], help="A:B:clean|lq|CONDITION, rank-1 of A minus B")
    ap.add_argument("--condition", action="append", default=[],
                    help="NAME=KIND[,KIND]: LQ queries degraded by these kinds only (the protocol's draw)")
    ap.add_argument("--out", required=True, help="path prefix for .json and .md results")
    ap.add_argument("--earlier", action="append", default=[],
                    help="an earlier comparison's .json on the same data: its runs join their names here")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    from reid.data import read_market
    from reid.evaluation import evaluate_market
    from reid.metrics import paired_rank1_difference
    from reid.model import load_model

    data = read_market(args.data, need_test=True)
    conditions = {}
    for spec in args.condition:
        name, _, kinds = spec.partition("=")
        if not kinds or name in ("clean", "lq"):
            raise SystemExit(f"--condition takes NAME=KIND[,KIND] with a NAME other than clean/lq, got {spec!r}")
        conditions[name] = tuple(kinds.split(","))
    rows, ranks = [], defaultdict(lambda: defaultdict(list))
    for path in args.earlier:
        for row in json.loads(Path(path).read_text())["rows"]:
            if "first_match_rank" not in row:
                raise SystemExit(f"{path} predates per-query ranks; rerun its models, or leave it out")
            for kind in ("clean", "lq"):
                earlier = [int(r) for r in row["first_match_rank"][kind].split()]
                if len(earlier) != len(data.query):
                    raise SystemExit(f"{path} ranks {len(earlier)} queries, --data has {len(data.query)}: "
                                     "pool only comparisons on the same split")
                ranks[row["model"]][kind].append(earlier)
            rows.append({**row, "earlier": path})
    for spec in args.model:
        name, _, folder = spec.partition("=")
        if not folder:
            raise SystemExit(f"--model takes NAME=DIR, got {spec!r}")
        model, _ = load_model(folder)
        info = json.loads((Path(folder) / "reid_model.json").read_text()).get("info", {})
        summary = info.get("summary", {})
        t0 = time.time()
        clean = evaluate_market(model, data, per_query=True)
        lq = evaluate_market(model, data, lq=True, per_query=True)
        ranks[name]["clean"].append(clean["first_match_rank"])
        ranks[name]["lq"].append(lq["first_match_rank"])
        extra = {}
        for cond, kinds in conditions.items():
            r = evaluate_market(model, data, lq=True, lq_kinds=kinds, per_query=True)
            ranks[name][cond].append(r["first_match_rank"])
            extra.update({f"{cond}_rank1": r["rank1"], f"{cond}_mAP": r["mAP"]})
        rows.append({"model": name, "dir": folder, "seed": info.get("options", {}).get("seed"),
                     "lq_kinds_trained": info.get("options", {}).get("lq_kinds"),
                     "rank1": clean["rank1"], "mAP": clean["mAP"], "lq_rank1": lq["rank1"], "lq_mAP": lq["mAP"], **extra,
                     "train_minutes": round(summary.get("train_seconds", 0.0) / 60, 1),
                     "epochs": summary.get("epochs"), "eval_seconds": round(time.time() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
        rows[-1]["first_match_rank"] = {kind: " ".join(map(str, ranks[name][kind][-1]))
                                        for kind in ("clean", "lq", *conditions)}
    paired = []
    for spec in args.pair:
        a, b, kind = spec.split(":")
        paired.append({"a": a, "b": b, "queries": kind,
                       **paired_rank1_difference(np.array(ranks[a][kind]), np.array(ranks[b][kind]))})
    keys = ("rank1", "mAP", "lq_rank1", "lq_mAP", *(f"{c}_{m}" for c in conditions for m in ("rank1", "mAP")))
    means = {name: {k: float(np.mean([r[k] for r in rows if r["model"] == name and k in r])) for k in keys}
             for name in ranks}
    out = {"command": " ".join(sys.argv), "queries": len(data.query), "gallery": len(data.gallery),
           "conditions": {c: list(k) for c, k in conditions.items()},
           "rows": rows, "means": means, "paired": paired}
    Path(args.out + ".json").write_text(json.dumps(out, indent=2) + "\n")
    cols = "".join(f" {c} rank-1 | {c} mAP |" for c in conditions)
    lines = [f"| model | runs | rank-1 | mAP | LQ rank-1 | LQ mAP |{cols}",
             "|---|---|---|---|---|---|" + "---|---|" * len(conditions)]
    for name, m in means.items():
        lines.append(f"| {name} | {len(ranks[name]['clean'])} | {100 * m['rank1']:.1f} | {100 * m['mAP']:.1f} | "
                     f"{100 * m['lq_rank1']:.1f} | {100 * m['lq_mAP']:.1f} |"
                     + "".join(f" {100 * m[f'{c}_rank1']:.1f} | {100 * m[f'{c}_mAP']:.1f} |" for c in conditions))
    lines += ["", "| rank-1 difference (same queries) | queries | difference | 95% CI (paired bootstrap) |",
              "|---|---|---|---|"]
    for d in paired:
        lines.append(f"| {d['a']} - {d['b']} ({d['queries']}) | {d['n']} | {100 * d['diff']:+.1f} | "
                     f"[{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}] |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
