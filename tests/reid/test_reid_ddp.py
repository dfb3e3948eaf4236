"""`reid train` under torchrun: two CPU processes (gloo) share each epoch's PK batches, one reports and
writes; a checkpoint resumes only with as many processes as wrote it."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from reid.data import read_market, relabel
from reid.model import load_model
from reid.sampler import PKBatchSampler

ARGS = ["--epochs", "1", "--ids-per-batch", "4", "--crops-per-id", "2", "--height", "64", "--width", "32",
        "--eval-every", "0", "--json"]


def _train(market_slice, out, processes: int | None):
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
                 "-m", "embedkd.cli.main"] if processes else [sys.executable, "-m", "embedkd.cli.main"])
    return subprocess.run([*launcher, "reid", "train", "--data", str(market_slice), "--out", str(out), *ARGS],
                          capture_output=True, text=True, timeout=600)


def test_two_processes_share_the_epoch_and_one_writes(market_slice, tmp_path):
    out = tmp_path / "ddp"
    proc = _train(market_slice, out, 2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reports = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1  # rank 0 alone
    summary = json.loads(reports[0])
    samples, _ = relabel(read_market(market_slice, need_train=True).train)
    batches = len(list(PKBatchSampler([s.pid for s in samples], 4, 2, seed=0)))
    assert summary["processes"] == 2 and summary["steps"] == batches // 2
    model, _ = load_model(out)
    assert model(torch.zeros(1, 3, 64, 32)).shape == (1, model.dim)
    state = torch.load(out / "checkpoint.pt", weights_only=False)["state"]
    assert state["processes"] == 2 and state["done"]

    again = _train(market_slice, out, None)  # the same --out without torchrun: refused, nothing changed
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1].endswith(
        "holds a checkpoint of training in 2 processes, this run has 1; resume with the same number "
        "(torchrun --nproc-per-node 2) or use a new --out")
