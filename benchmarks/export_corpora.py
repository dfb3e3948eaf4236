"""What `index export --with-corpora` and a purge of the imported index cost now that the carried copies keep only
the documents the index holds, and a purge takes its documents out of them.

A corpus of real prose (`--corpus`, a BEIR folder, its `corpus.jsonl` written `--repeat` times with ids suffixed)
is indexed (Flat, vectors hashed from each text: no model, so only the files count), `--deleted` of its documents
deleted; then, in alternating rounds, the index is exported without and with its corpora, and the export with them
imported into a second catalog, where `--purges` single documents are purged one at a time. Reported: seconds of each
(medians over `--rounds`), the carried bytes against the source file's, and the lines carried against the
documents held. Run it with this tree and with an earlier one on PYTHONPATH to compare.

    cd benchmarks && PYTHONPATH=.. ../.venv/bin/python export_corpora.py --corpus ../../shared/data/scifact \
        --out ../docs/export_corpora.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from command import command_line, emit  # this folder is on sys.path when a script in it runs

from indexer.build import build_index, delete_items
from indexer.context import open_catalog
from indexer.corpus import read_corpus
from indexer.encoder import ModelRecord
from indexer.settings import load_settings
from indexer.transfer import export_index, import_index


class HashedText:
    """A text's vector is seeded by its crc32: deterministic, and cheap beside the files."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.record = ModelRecord(name="hashed", source="hashed", dimension=dim, fingerprint=f"hashed-{dim}")

    def __call__(self, texts: list[str]) -> np.ndarray:
        x = np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(self.dim) for t in texts])
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _write_corpus(src: Path, repeat: int, dest: Path) -> int:
    lines = (src / "corpus.jsonl" if src.is_dir() else src).read_text(encoding="utf-8").splitlines()
    n = 0
    with open(dest, "w", encoding="utf-8") as fh:
        for r in range(repeat):
            for line in lines:
                row = json.loads(line)
                row["_id"] = f"{row['_id']}-{r}"
                fh.write(json.dumps(row) + "\n")
                n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--deleted", type=float, default=0.03)
    ap.add_argument("--purges", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--label", default="this tree")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {"export_s": [], "export_with_corpora_s": [], "import_s": [], "purge_one_s": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        docs = _write_corpus(args.corpus, args.repeat, tmp / "corpus.jsonl")
        catalog = open_catalog(load_settings(home=tmp / "home"), migrate=True)
        build_index(catalog, "e", HashedText(args.dim), read_corpus(tmp / "corpus.jsonl"), progress=False)
        ids = [d.id for d in read_corpus(tmp / "corpus.jsonl")]
        gone = [str(i) for i in rng.choice(ids, int(args.deleted * docs), replace=False)]
        delete_items(catalog, "e", gone)
        held = docs - len(gone)
        for r in range(args.rounds):
            t0 = time.perf_counter()
            export_index(catalog, "e", tmp / f"plain{r}")
            times["export_s"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            export_index(catalog, "e", tmp / f"carried{r}", with_corpora=True)
            times["export_with_corpora_s"].append(time.perf_counter() - t0)
            other = open_catalog(load_settings(home=tmp / f"other{r}"), migrate=True)
            t0 = time.perf_counter()
            import_index(other, tmp / f"carried{r}", name="moved")
            times["import_s"].append(time.perf_counter() - t0)
            left = sorted(set(ids) - set(gone))
            for i in rng.choice(left, args.purges, replace=False):
                t0 = time.perf_counter()
                delete_items(other, "moved", [str(i)], purge=True)
                times["purge_one_s"].append(time.perf_counter() - t0)
            other.close()
        copies = list((tmp / "carried0" / "corpora").iterdir())
        carried_lines = sum(1 for p in copies for line in p.open(encoding="utf-8") if line.strip())
        row = {"label": args.label, "docs": docs, "held": held,
               "source_bytes": (tmp / "corpus.jsonl").stat().st_size,
               "carried_bytes": sum(p.stat().st_size for p in copies), "carried_lines": carried_lines,
               **{k: round(statistics.median(v), 3) for k, v in times.items()},
               "rounds": {k: [round(t, 3) for t in v] for k, v in times.items()}}
        catalog.close()
    emit({"command": command_line(__file__, args), "machine": "2-core CPU, no GPU", "results": [row]}, args.out)


if __name__ == "__main__":
    main()
