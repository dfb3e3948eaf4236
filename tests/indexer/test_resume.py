"""A build killed with SIGKILL half-way resumes from its checkpoint; every item is indexed exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
from sqlalchemy import select

from indexer.catalog import get_index
from indexer.context import open_catalog
from indexer.models import Item, Job
from indexer.settings import load_settings

from ..conftest import minilm_path
from .helpers import load_index


def _cli(home, *args):
    env = {**os.environ, "EMBEDKD_HOME": str(home)}
    return [sys.executable, "-m", "embedkd.cli.main", *args], env


def _vectors(home, name):
    cat = open_catalog(load_settings(home=home))
    with cat.session() as s:
        idx = get_index(s, name)
        ids = {i.external_id: i.faiss_id for i in s.scalars(select(Item).where(Item.index_id == idx.id))}
    index = load_index(cat, name)
    order = sorted(ids)
    return order, index.reconstruct(np.array([ids[e] for e in order])), index.ntotal


def test_sigkill_then_rerun_resumes_and_matches_uninterrupted(tmp_path, beir_small):
    args = ["index", "build", "--index", "r", "--model", minilm_path(), "--corpus", str(beir_small),
            "--chunk-size", "8", "--precision", "fp32", "--batch-size", "8", "--json"]
    killed_home = tmp_path / "killed"
    cmd, env = _cli(killed_home, *args)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    progress = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        db = killed_home / "catalog.db"
        if not db.exists():
            continue
        try:
            cat = open_catalog(load_settings(home=killed_home), migrate=False)
            with cat.session() as s:
                job = s.scalar(select(Job))
                progress = job.progress if job else 0
            cat.close()
        except Exception:
            continue
        if progress >= 16:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    assert progress >= 16
    # what an operator sees: stored as running, but no process holds the index's lock any more
    cmd, env = _cli(killed_home, "index", "jobs", "--json")
    (job,) = json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120).stdout.splitlines()[-1])["jobs"]
    assert job["state"] == "interrupted" and job["progress"] >= 16 and job["stored_bytes"] >= 16 * 384 * 4

    cmd, env = _cli(killed_home, *args)
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert result["resumed_from"] >= 16

    fresh_home = tmp_path / "fresh"
    cmd, env = _cli(fresh_home, *args)
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=300).returncode == 0

    ids_k, vec_k, n_k = _vectors(killed_home, "r")
    ids_f, vec_f, n_f = _vectors(fresh_home, "r")
    corpus_ids = [json.loads(line)["_id"] for line in (beir_small / "corpus.jsonl").read_text().splitlines()]
    assert n_k == n_f == len(corpus_ids)
    assert ids_k == ids_f == sorted(corpus_ids)  # each item exactly once
    np.testing.assert_allclose(vec_k, vec_f, atol=1e-5)
    assert not any((killed_home / "jobs").iterdir())  # checkpoints cleaned once the job is done
