"""Peak memory of an index build against the code of a baseline commit (e5952f2), which held every
document's text from the corpus check to the end and, to write, concatenated every chunk's vectors and
then copied them into FAISS. Now the texts are read again chunk by chunk while encoding and the chunks'
vectors are added to FAISS one at a time (`indexer.build`).

Each (code, factory) build runs in a fresh child process that imports `indexer` from the given source
tree and reports its peak RSS (ru_maxrss) and wall time; rounds alternate the trees. The corpus is
`--copies` copies of a BEIR corpus with fresh ids; the encoder is a fast real model (the static
MiniLM distillation of benchmarks/upgrade_make_v2.py), so the corpus can be large enough for the
vectors to matter on this machine: the encoding is the same code in both trees.

    git worktree add /tmp/base-build e5952f2          # the baseline: before chunk-by-chunk writes
    .venv/bin/python benchmarks/upgrade_make_v2.py --which minilm-static256 --out /tmp/models
    .venv/bin/python benchmarks/index_build_memory.py --data ../shared/data/scifact --copies 100 \\
        --model /tmp/models/minilm-static256 --baseline /tmp/base-build --out docs/index_build_memory.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_flush_denormal(True)
from embedkd.text_encoder import load_text_encoder
from indexer.build import build_index
from indexer.context import open_catalog
from indexer.corpus import read_corpus
from indexer.settings import load_settings
import indexer.build
assert indexer.build.__file__.startswith(sys.argv[1]), indexer.build.__file__
catalog = open_catalog(load_settings(home=sys.argv[2]))
encoder = load_text_encoder(sys.argv[3], device="cpu", batch_size=256)
t0 = time.perf_counter()
out = build_index(catalog, "m", encoder, read_corpus(sys.argv[4]), factory=sys.argv[5], progress=False)
print(json.dumps({"seconds": time.perf_counter() - t0, "count": out["count"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--copies", type=int, default=100)
    ap.add_argument("--model", required=True)
    ap.add_argument("--baseline", required=True, help="source tree of the baseline commit (a git worktree)")
    ap.add_argument("--factories", default="Flat;IVF1024,PQ32", help="FAISS factory strings separated by ';'")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out")
    args = ap.parse_args()
    trees = {"baseline": str(Path(args.baseline).resolve()), "chunked": str(Path(__file__).resolve().parents[1])}
    factories = args.factories.split(";")
    runs: dict[str, dict[str, list[dict]]] = {f: {t: [] for t in trees} for f in factories}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        rows = [json.loads(line) for line in open(Path(args.data) / "corpus.jsonl", encoding="utf-8") if line.strip()]
        with open(corpus, "w", encoding="utf-8") as f:
            for c in range(args.copies):
                f.writelines(json.dumps({**r, "_id": f"{c}-{r['_id']}"}) + "\n" for r in rows)
        for r in range(args.rounds):
            for factory in factories:
                for name, tree in trees.items():
                    home = Path(tmp) / f"home-{factory}-{name}-{r}".replace(",", "_")
                    out = subprocess.run([sys.executable, "-c", CHILD, tree, str(home), args.model, str(corpus), factory],
                                         capture_output=True, text=True, check=True)
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    runs[factory][name].append(result)
                    print(f"round {r} {factory} {name}: {result}", flush=True)
    summary = {}
    for factory, by_tree in runs.items():
        peak = {t: statistics.median(x["peak_rss_mb"] for x in v) for t, v in by_tree.items()}
        secs = {t: statistics.median(x["seconds"] for x in v) for t, v in by_tree.items()}
        summary[factory] = {"peak_rss_mb": peak, "seconds": secs,
                            "peak_saved_mb": peak["baseline"] - peak["chunked"],
                            "peak_ratio_chunked_to_baseline": peak["chunked"] / peak["baseline"],
                            "time_ratio_chunked_to_baseline": secs["chunked"] / secs["baseline"]}
    count = runs[factories[0]]["chunked"][0]["count"]
    report = {"documents": count, "model": args.model, "rounds": args.rounds, "runs": runs, "summary": summary,
              "command": f"benchmarks/index_build_memory.py --data {args.data} --copies {args.copies} "
                         f"--model {args.model} --baseline {args.baseline} --rounds {args.rounds}"}
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
