"""Make an unseen-domain BEIR folder from the Python standard library's docstrings (no download).

Query: a function's or class's one-line summary; its relevant document: the rest of the docstring
(summary removed, so the match is semantic, not a copy). Other docstrings are the distractors.
A proxy for "BEIR sets we do not have": software documentation, far from SciFact's biomedicine.

    .venv/bin/python benchmarks/distill_make_unseen.py --out /tmp/distill-bench/pydocs
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import pkgutil
import random
import re
import sys
import warnings
from pathlib import Path

from embedkd.evaluation.beir import write_qrels, write_queries

EXTRA = ("numpy", "scipy")  # large, well-documented packages installed here
SKIP = ("test", "idlelib", "tkinter", "turtle", "lib2to3", "ensurepip", "venv", "pydoc_data", "antigravity",
        "this", "tests", "testing", "conftest", "setup")


def _docstrings() -> list[tuple[str, str, str]]:
    seen, out = set(), []
    tops = sorted(m.name for m in pkgutil.iter_modules() if m.module_finder.path.startswith(sys.base_prefix)
                  and "site-packages" not in m.module_finder.path) + list(EXTRA)
    names = []
    for top in tops:
        if top.startswith("_") or top.startswith(SKIP):
            continue
        names.append(top)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pkg = importlib.import_module(top)
        except Exception:  # noqa: BLE001
            continue
        if hasattr(pkg, "__path__"):
            names += [m.name for m in pkgutil.walk_packages(pkg.__path__, top + ".", onerror=lambda _n: None)
                      if not any(p.startswith("_") or p.startswith(SKIP) for p in m.name.split(".")[1:])]
    for name in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - platform-specific modules that do not import here
            continue
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", None) != name:
                continue
            doc = inspect.getdoc(obj) or ""
            parts = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)
            if len(parts) < 2:
                continue
            summary, body = parts[0].replace("\n", " ").strip(), " ".join(parts[1].split())
            if len(summary.split()) < 5 or len(body.split()) < 15 or summary in seen:
                continue
            seen.add(summary)
            out.append((f"{name}.{attr}", summary, body[:1500]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    items = _docstrings()
    rng = random.Random(0)
    chosen = set(rng.sample(range(len(items)), min(args.queries, len(items))))
    out = Path(args.out)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w") as f:
        for key, _summary, body in items:
            f.write(json.dumps({"_id": key, "title": "", "text": body}) + "\n")
    write_queries(out / "queries.jsonl", [(f"q{i}", items[i][1]) for i in sorted(chosen)])
    write_qrels(out / "qrels" / "test.tsv", [(f"q{i}", items[i][0], 1) for i in sorted(chosen)])
    print(json.dumps({"docs": len(items), "queries": len(chosen), "out": str(out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
