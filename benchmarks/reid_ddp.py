"""Training throughput of `reid train` under torchrun (N processes, DistributedDataParallel) against one
process, on the same machine in the same run, rounds alternating. Each run trains for `--minutes` of
wall time (the time budget) from ImageNet weights and reports images per second over all processes.

On a CPU the processes share its cores (torchrun gives each one thread): this measures what the
data-parallel machinery costs, not what more GPUs buy.

    .venv/bin/python benchmarks/reid_ddp.py --data ../shared/data/market1501 --processes 2 --minutes 1.5 \\
        --out docs/reid_ddp.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def _run(data: str, out: Path, processes: int, minutes: float) -> dict:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
                 "-m", "embedkd.cli.main"] if processes > 1 else [sys.executable, "-m", "embedkd.cli.main"])
    proc = subprocess.run([*launcher, "reid", "train", "--data", data, "--out", str(out), "--epochs", "100",
                           "--max-minutes", str(minutes), "--eval-every", "0", "--quiet", "--json"],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=1.5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"one_process": [], f"torchrun_{args.processes}": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, n in (("one_process", 1), (f"torchrun_{args.processes}", args.processes)):
                result = _run(args.data, Path(tmp) / f"{name}-{r}", n, args.minutes)
                runs[name].append({k: result[k] for k in ("steps", "processes", "train_seconds", "train_images_per_s")})
                print(f"round {r} {name}: {runs[name][-1]}", flush=True)
    medians = {name: statistics.median(x["train_images_per_s"] for x in v) for name, v in runs.items()}
    names = list(runs)
    report = {"command": " ".join(["benchmarks/reid_ddp.py", *sys.argv[1:]]), "runs": runs,
              "median_images_per_s": medians, "ratio": round(medians[names[1]] / medians[names[0]], 3)}
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
