"""Where does the distilled student's LQ lead over LQ augmentation come from? (reads earlier results)

For every seed pair of a comparison (the logit student and LQ augmentation fine-tuned from the same
baseline with the same seed and budget), split the LQ rank-1 difference into two parts:

    LQ(student) - LQ(aug) = [clean(student) - clean(aug)] - [drop(student) - drop(aug)]

where drop = clean rank-1 - LQ rank-1 of the same model. The first part is a better model overall,
the second is more robustness to degraded queries, which is what HQ->LQ distillation is meant to buy.
No training, no evaluation: the per-run figures come from the JSON files `reid_compare.py` wrote.

    .venv/bin/python benchmarks/reid_gap.py docs/reid_logit_kd.json docs/reid_logit_kd_confirm.json \
        docs/reid_patient.json --student distilled_logits,distilled_logits8 --aug lq_aug_finetune,lq_aug_ft8
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from embedkd.evaluation.compare import paired_comparison


def seed_pairs(rows: list[dict], students: set[str], augs: set[str]) -> list[tuple[dict, dict]]:
    """(student row, augmentation row) for each seed both have, in seed order."""
    by_seed_s = {r["seed"]: r for r in rows if r["model"] in students}
    by_seed_a = {r["seed"]: r for r in rows if r["model"] in augs}
    return [(by_seed_s[s], by_seed_a[s]) for s in sorted(set(by_seed_s) & set(by_seed_a))]


def decompose(student: dict, aug: dict, queries: str = "lq") -> dict:
    """LQ difference = clean difference - difference of the clean->LQ drops (rank-1 points). `queries`
    names the degraded condition: `lq` (the protocol) or a `reid_compare.py --condition`."""
    key = f"{queries}_rank1"
    lq = 100 * (student[key] - aug[key])
    clean = 100 * (student["rank1"] - aug["rank1"])
    drop_s = 100 * (student["rank1"] - student[key])
    drop_a = 100 * (aug["rank1"] - aug[key])
    return {"lq": lq, "clean": clean, "drop_student": drop_s, "drop_aug": drop_a, "robustness": drop_a - drop_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="reid_compare.py JSON results")
    ap.add_argument("--student", default="distilled_logits,distilled_logits8", help="student model names")
    ap.add_argument("--aug", default="lq_aug_finetune,lq_aug_ft8", help="LQ augmentation model names")
    ap.add_argument("--queries", default="lq", help="degraded condition: lq, or a reid_compare.py --condition name")
    ap.add_argument("--out", help="write the table as JSON here")
    args = ap.parse_args()
    students, augs = set(args.student.split(",")), set(args.aug.split(","))
    out = []
    for f in args.files:
        for s, a in seed_pairs(json.loads(Path(f).read_text())["rows"], students, augs):
            out.append({"file": f, "seed": s["seed"], **decompose(s, a, args.queries)})
    if not out:
        raise SystemExit("no seed pairs found: check --student/--aug against the files' model names")
    for r in out:
        print(f"{r['file']:36s} seed {r['seed']}: LQ {r['lq']:+.1f} = clean {r['clean']:+.1f} "
              f"+ robustness {r['robustness']:+.1f} (drops {r['drop_student']:.1f} vs {r['drop_aug']:.1f})")
    mean = {k: float(np.mean([r[k] for r in out])) for k in ("lq", "clean", "robustness", "drop_student", "drop_aug")}
    sd = {k: float(np.std([r[k] for r in out], ddof=1)) if len(out) > 1 else None for k in ("lq", "clean", "robustness")}
    print(f"mean of {len(out)} pairs: LQ {mean['lq']:+.2f} = clean {mean['clean']:+.2f} + robustness "
          f"{mean['robustness']:+.2f} (drops {mean['drop_student']:.2f} vs {mean['drop_aug']:.2f})"
          + (f"; sd LQ {sd['lq']:.2f}, clean {sd['clean']:.2f}, robustness {sd['robustness']:.2f}" if len(out) > 1 else ""))
    ci = None
    if len(out) > 1:
        # the pairs, not the queries, are the sample here: each pair is one draw of the whole training noise
        t = paired_comparison(np.zeros(len(out)), np.array([r["lq"] for r in out]))
        ci = [t["ci_low"], t["ci_high"]]
        print(f"LQ difference, 95% t-interval over the {len(out)} pairs: [{ci[0]:+.2f}, {ci[1]:+.2f}]")
    if args.out:
        table = {"queries": args.queries, "pairs": out, "mean": mean, "sd": sd, "lq_t_interval_95": ci}
        Path(args.out).write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
