"""`embedkd distill` under torchrun: two CPU processes (gloo). Rank 0 prepares (teacher vectors, mining, the
general-text stage) while the other waits and then reads its caches; both train on alternate batches; rank 0
alone saves, evaluates, registers and reports."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import make_beir_slice, minilm_path


@pytest.fixture(scope="module")
def tiny_beir(tmp_path_factory):
    return make_beir_slice(tmp_path_factory.mktemp("beir") / "tiny", 24, split="train", extra_splits=("test",))


def test_two_processes_train_on_alternate_batches_and_one_reports(tiny_beir, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "student"
    env = {**os.environ, "EMBEDKD_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
         "embedkd.cli.main", "distill", "--teacher", minilm_path(), "--student", f"prune:{minilm_path()}:1",
         "--data", str(tiny_beir), "--out", str(out), "--epochs", "1", "--batch-size", "4", "--negatives", "2",
         "--max-length", "32", "--general-steps", "2", "--quiet", "--json"],
        env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1  # rank 0 alone
    result = json.loads(reports[0])
    one_process_batches = math.ceil(result["train_examples"] / 4)
    assert result["processes"] == 2 and result["steps"] == result["planned_steps"] == one_process_batches // 2
    assert result["general_texts"]["stage"]["steps"] == 2  # run once, by rank 0; rank 1 loaded its checkpoint
    assert result["model_id"] >= 1 and 0 <= result["metrics"]["test"]["ndcg@10"] <= 1
    assert len(SentenceTransformer(str(out), device="cpu")[0].auto_model.encoder.layer) == 1
    assert not (out / "checkpoint").exists()
