"""The fixed command-line contracts of DESIGN.md, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import minilm_path
from .indexer.helpers import free_port


def run(home, *args, check=True):
    env = {**os.environ, "EMBEDKD_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "embedkd.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc


def last_json(proc) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def home(tmp_path_factory, beir_small):
    h = tmp_path_factory.mktemp("home")
    run(h, "index", "build", "--index", "sf", "--model", minilm_path(), "--corpus", str(beir_small), "--json")
    return h


def test_build_search_eval_json(home, beir_small):
    res = last_json(run(home, "index", "search", "--index", "sf", "--query", "heart attack risk", "-k", "3", "--json"))
    assert len(res["results"]) == 3 and set(res["results"][0]) == {"id", "score"}
    scores = [r["score"] for r in res["results"]]
    assert scores == sorted(scores, reverse=True)
    ev = last_json(run(home, "eval", "retrieval", "--data", str(beir_small), "--index", "sf", "--json"))
    assert set(ev) == {"ndcg@10", "recall@100", "mrr@10", "queries"} and ev["queries"] > 0
    by_model = last_json(run(home, "eval", "retrieval", "--data", str(beir_small), "--model", minilm_path(), "--json"))
    assert abs(by_model["ndcg@10"] - ev["ndcg@10"]) < 0.005
    listed = last_json(run(home, "index", "list", "--json"))
    assert listed["indexes"][0]["name"] == "sf"


def test_eval_an_undistilled_prune(home, beir_small):
    """A prune spec is a model like any other: the student before distillation can be measured."""
    full = last_json(run(home, "eval", "retrieval", "--data", str(beir_small), "--index", "sf", "--json"))
    one = last_json(run(home, "eval", "retrieval", "--data", str(beir_small), "--model", f"prune:{minilm_path()}:1",
                        "--json"))
    assert one["queries"] == full["queries"] and one["ndcg@10"] < full["ndcg@10"]
    proc = run(home, "eval", "retrieval", "--data", str(beir_small), "--model", f"prune:{minilm_path()}:9", check=False)
    assert proc.returncode == 2 and "cannot keep 9 layers" in proc.stderr


def test_eval_runs_and_paired_compare(home, beir_small, tmp_path):
    a, b = tmp_path / "index.trec", tmp_path / "model.trec"
    ev = last_json(run(home, "eval", "retrieval", "--data", str(beir_small), "--index", "sf", "--run", str(a), "--json"))
    run(home, "eval", "retrieval", "--data", str(beir_small), "--model", minilm_path(), "--run", str(b), "--json")
    cmp = last_json(run(home, "eval", "compare", "--data", str(beir_small), str(a), str(b), "--json"))
    nd = cmp["ndcg@10"]
    assert cmp["queries"] == ev["queries"] and nd["mean_a"] == pytest.approx(ev["ndcg@10"], abs=1e-6)
    assert abs(nd["diff"]) < 0.005 and nd["ci_low"] <= nd["diff"] <= nd["ci_high"]  # same model both ways
    # A run of other queries is refused, not scored as all zeros.
    other = tmp_path / "other.trec"
    other.write_text("no-such-query Q0 d1 1 1.0 x\n")
    proc = run(home, "eval", "compare", "--data", str(beir_small), str(a), str(other), check=False)
    assert proc.returncode == 2 and "ranks none of the" in proc.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (["index", "search", "--index", "nope", "--query", "x"], "no index named"),
        (["index", "search", "--index", "sf", "--query", "  "], "empty"),
        (["index", "search", "--index", "sf", "--query", "x", "-k", "0"], "positive"),
        (["index", "search", "--index", "sf", "--query", "x", "--nprobe", "0"], "nprobe must be at least 1"),
        (["index", "build", "--index", "sf2", "--model", "/no/such/model", "--corpus", "/no/such/corpus"], "corpus not found"),
        (["eval", "retrieval", "--data", "/tmp", "--index", "sf"], "not a BEIR folder"),
        (["index", "frobnicate"], "invalid choice"),
        (["serve", "--query-batch", "-1"], "--query-batch must be 0"),
        (["serve", "--gc-every", "-1"], "--gc-every must be 0 (never) or a positive number of seconds, got -1"),
        (["serve", "--token-file", "/no/such/token"], "--token-file /no/such/token: No such file"),
        (["serve", "--preload-field", "sf"], "--preload-field 'sf' is not INDEX:FIELD"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(home, args, needle):
    proc = run(home, *args, check=False)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_an_output_path_that_is_a_file_is_one_line_before_any_work(home, beir_small, tmp_path):
    """It used to be a traceback, for `upgrade report` only after its reindex-sized encoding."""
    taken = tmp_path / "taken"
    taken.write_text("keep me\n")
    m = minilm_path()
    for args in (["distill", "--teacher", m, "--student", f"prune:{m}:2", "--data", str(beir_small), "--out", str(taken)],
                 ["teacher", "train", "--base", m, "--data", str(beir_small), "--out", str(taken)],
                 ["upgrade", "report", "--index", "sf", "--model", f"prune:{m}:2", "--data", str(beir_small),
                  "--out", str(taken)]):
        proc = run(home, *args, check=False)
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        assert proc.returncode == 2 and lines == [f"embedkd: error: --out {taken} is a file, not a folder; "
                                                  "give a new folder path"], (args, proc.stderr)
    assert taken.read_text() == "keep me\n"
    # a file *above* the path, and a run file that can never be written: the same, before any encoding
    # (the run was a traceback after every query had been encoded)
    below = taken / "sub"
    for args, flag, shown in (
        (["distill", "--teacher", m, "--student", f"prune:{m}:2", "--data", str(beir_small), "--out", str(below)],
         "--out", below),
        (["eval", "retrieval", "--data", str(beir_small), "--model", m, "--run", str(below / "x.run")],
         "--run", below / "x.run"),
    ):
        proc = run(home, *args, check=False)
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        assert proc.returncode == 2 and lines == [f"embedkd: error: {flag} {shown}: {taken} is a file, so no folder "
                                                  "can be made under it; give another path"], (args, proc.stderr)
    proc = run(home, "eval", "retrieval", "--data", str(beir_small), "--model", m, "--run", str(tmp_path), check=False)
    assert proc.returncode == 2 and f"--run {tmp_path} is a folder; give a file path" in proc.stderr
    assert taken.read_text() == "keep me\n"


def test_backfill_reads_every_file_of_the_index_and_refuses_a_document_none_has(tmp_path, beir_small):
    """Built from one file, added to from another and from a third since deleted: `upgrade backfill` with no
    --corpus names the one document no file has and changes nothing, in one line; given the files, it switches."""
    rows = [json.loads(line) for line in (beir_small / "corpus.jsonl").read_text().splitlines()[:30]]
    files = {name: tmp_path / f"{name}.jsonl" for name in ("built", "added", "gone")}
    for name, part in (("built", rows[:20]), ("added", rows[20:]), ("gone", [{"_id": "gone-1", "text": "a lost text"}])):
        files[name].write_text("".join(json.dumps(r) + "\n" for r in part))
    home, m = tmp_path / "home", minilm_path()
    run(home, "index", "build", "--index", "s", "--model", m, "--corpus", str(files["built"]))
    for name in ("added", "gone"):
        run(home, "index", "add", "--index", "s", "--corpus", str(files[name]))
    kept = files["gone"].read_text()
    files["gone"].unlink()
    dry = run(home, "upgrade", "backfill", "--index", "s", "--model", f"prune:{m}:2", "--dry-run", "--json", check=False)
    assert dry.returncode != 0 and "holds 1 document ('gone-1')" in dry.stderr
    assert {k: last_json(dry)[k] for k in ("documents", "staged", "found", "missing", "missing_ids")} == {
        "documents": 31, "staged": 0, "found": 30, "missing": 1, "missing_ids": ["gone-1"]}
    proc = run(home, "upgrade", "backfill", "--index", "s", "--model", f"prune:{m}:2", check=False)
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "holds 1 document ('gone-1')" in lines[0], proc.stderr
    assert str(files["added"]) in lines[0] and str(files["built"]) in lines[0]
    assert [i["name"] for i in last_json(run(home, "index", "list", "--json"))["indexes"]] == ["s"]  # no staging
    (tmp_path / "restored.jsonl").write_text(kept)
    given = ["--corpus", str(tmp_path / "restored.jsonl"), "--corpus", str(files["added"]), "--corpus", str(files["built"])]
    dry = last_json(run(home, "upgrade", "backfill", "--index", "s", "--model", f"prune:{m}:2", "--dry-run", "--json",
                        *given))
    assert (dry["found"], dry["missing"]) == (31, 0)
    out = last_json(run(home, "upgrade", "backfill", "--index", "s", "--model", f"prune:{m}:2", "--json", *given))
    assert out["switched"] and out["count"] == 31
    hit = last_json(run(home, "index", "search", "--index", "s", "--query", "a lost text", "-k", "1", "--json"))
    assert hit["results"][0]["id"] == "gone-1"


def test_serve_answers_over_http(home):
    """`embedkd serve` as a user starts it, with a token: the same results over HTTP as `index search`; without
    the token only the health check and metrics answer."""
    import time

    import httpx

    port = free_port()
    token = "s3cret-token-0123456789"
    env = {**os.environ, "EMBEDKD_HOME": str(home), "EMBEDKD_API_TOKEN": token}
    server = subprocess.Popen([sys.executable, "-m", "embedkd.cli.main", "serve", "--port", str(port),
                               "--preload", "sf", "--preload-field", "sf:title"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.time() < deadline, server.stderr.read().decode()[-2000:]
                time.sleep(0.5)
        assert health.json() == {"status": "ok", "indexes": 1}
        body = {"index": "sf", "query": "heart attack risk", "k": 3}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            refused = httpx.post(f"http://127.0.0.1:{port}/search", json=body, headers=headers, timeout=60)
            assert refused.status_code == 401 and "bearer token" in refused.json()["detail"]
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        assert "\nembedkd_filter_fields 1.0\n" in metrics  # the preloaded field, before any filtered query
        got = httpx.post(f"http://127.0.0.1:{port}/search", json=body, headers={"Authorization": f"Bearer {token}"},
                         timeout=60).json()["results"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    want = last_json(run(home, "index", "search", "--index", "sf", "--query", "heart attack risk", "-k", "3", "--json"))
    assert [r["id"] for r in got] == [r["id"] for r in want["results"]]


def test_postgres_catalog_needs_migration_then_builds(tmp_path, pg_url, beir_small):
    import os as _os

    small = tmp_path / "c.jsonl"
    small.write_text("\n".join((beir_small / "corpus.jsonl").read_text().splitlines()[:6]) + "\n")
    env_url = pg_url

    def pg(*args, check=True):
        env = {**_os.environ, "EMBEDKD_HOME": str(tmp_path / "h"), "EMBEDKD_DATABASE_URL": env_url}
        proc = subprocess.run([sys.executable, "-m", "embedkd.cli.main", *args], env=env, capture_output=True,
                              text=True, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(proc.stderr)
        return proc

    refused = pg("index", "list", check=False)
    assert refused.returncode != 0 and "embedkd db upgrade" in refused.stderr
    assert last_json(pg("db", "upgrade", "--json"))["revision"]
    built = last_json(pg("index", "build", "--index", "pg", "--model", minilm_path(), "--corpus", str(small), "--json"))
    assert built["count"] == 6
    first = json.loads(small.read_text().splitlines()[0])
    hits = last_json(pg("index", "search", "--index", "pg", "--query", first["title"], "-k", "1", "--json"))
    assert hits["results"][0]["id"] == first["_id"]
