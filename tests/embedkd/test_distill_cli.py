"""`embedkd distill` and `embedkd teacher train` end to end on tiny real slices, and their bad-input errors."""

from __future__ import annotations

import json

import pytest

from embedkd.cli.main import main
from tests.conftest import make_beir_slice, minilm_path


@pytest.fixture(scope="module")
def tiny_beir(tmp_path_factory):
    return make_beir_slice(tmp_path_factory.mktemp("beir") / "tiny", 24, split="train", extra_splits=("test",))


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_distill_end_to_end_registers_a_loadable_student(tiny_beir, tmp_path, monkeypatch, capsys):
    from sentence_transformers import SentenceTransformer

    from indexer.catalog import find_model
    from indexer.context import open_catalog
    from indexer.settings import load_settings

    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    out = tmp_path / "student"
    rc = main(["distill", "--teacher", minilm_path(), "--student", f"prune:{minilm_path()}:1", "--data",
               str(tiny_beir), "--out", str(out), "--loss", "cosine+kl+margin-mse+attention", "--epochs", "1",
               "--batch-size", "4", "--negatives", "2", "--max-length", "32", "--pseudo-queries", "4", "--seed", "3", "--json"])
    assert rc == 0
    captured = capsys.readouterr()
    result = _last_json(captured.out)
    assert result["steps"] == result["planned_steps"] >= 1
    # --json keeps stdout for the result; progress still reaches stderr, as plain lines without a terminal
    assert f"distill: step {result['steps']}/{result['planned_steps']}" in captured.err
    assert result["pseudo_queries"] == 4 and result["train_examples"] >= 4 + 1
    assert result["lineage"]["kept_layers"] == [5]
    assert result["options"]["seed"] == 3 and result["lineage"]["seed"] == 3
    assert set(result["final_loss"]) == {"cosine", "kl", "margin-mse", "attention"}
    assert result["general_texts"]["stage"]["steps"] >= 1  # the default general-text stage ran before distillation
    assert 0 <= result["metrics"]["test"]["ndcg@10"] <= 1 and result["metrics"]["test"]["queries"] > 0
    student = SentenceTransformer(str(out), device="cpu")
    assert len(student[0].auto_model.encoder.layer) == 1
    assert not (out / "checkpoint").exists() and (out / "distill.json").is_file()
    from embedkd.text_encoder import load_text_encoder

    fp = load_text_encoder(str(out), device="cpu").record.fingerprint
    cat = open_catalog(load_settings())
    try:
        with cat.session() as s:
            row = find_model(s, fp)
            assert row is not None and row.id == result["model_id"]
            assert row.info["teacher"] == result["teacher"] and row.info["steps"] == result["steps"]
            assert row.info["loss"] == result["loss"] and "test" in row.info["metrics"]
            assert row.info["lineage"]["seed"] == 3
    finally:
        cat.close()


@pytest.mark.parametrize(
    "student, data_split, loss, message",
    [
        ("prune:{m}:9", "train", "cosine", "cannot keep 9 layers of a model with 6"),
        ("prune:{m}:x", "train", "cosine", "LAYERS must be a count"),
        ("prune:{m}:2", "test", "cosine", "no qrels/train.tsv"),
        ("prune:{m}:2", "train", "bogus", "loss term 'bogus' is unknown"),
    ],
)
def test_distill_bad_input_one_line(tmp_path, capsys, monkeypatch, student, data_split, loss, message):
    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    data = make_beir_slice(tmp_path / "b", 12, split=data_split)
    rc = main(["distill", "--teacher", minilm_path(), "--student", student.format(m=minilm_path()), "--data",
               str(data), "--out", str(tmp_path / "o"), "--loss", loss])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1


def test_distill_refuses_a_negative_seed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    data = make_beir_slice(tmp_path / "b", 12, split="train")
    rc = main(["distill", "--teacher", minilm_path(), "--student", f"prune:{minilm_path()}:1", "--data", str(data),
               "--out", str(tmp_path / "o"), "--seed", "-1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--seed must be 0 or a positive integer, got -1" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_distill_embedding_loss_needs_a_bi_encoder_teacher(tmp_path, capsys, monkeypatch):
    from sentence_transformers import CrossEncoder

    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    CrossEncoder(minilm_path(), num_labels=1, max_length=32, device="cpu").save(str(tmp_path / "ce"))
    data = make_beir_slice(tmp_path / "b", 12, split="train")
    rc = main(["distill", "--teacher", str(tmp_path / "ce"), "--student", f"prune:{minilm_path()}:1", "--data",
               str(data), "--out", str(tmp_path / "o"), "--loss", "cosine"])
    err = capsys.readouterr().err
    assert rc == 2 and "need a bi-encoder teacher" in err


def test_distill_default_loss_matches_library():
    from embedkd.cli import distill_cmd
    from embedkd.distill import DEFAULT_LOSS

    assert distill_cmd.DEFAULT_LOSS == DEFAULT_LOSS


@pytest.mark.slow
def test_teacher_train_then_distill_from_the_cross_encoder(tiny_beir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    ce = tmp_path / "ce"
    rc = main(["teacher", "train", "--base", minilm_path(), "--data", str(tiny_beir), "--out", str(ce),
               "--epochs", "1", "--batch-size", "8", "--max-length", "64", "--rerank-depth", "5", "--json"])
    assert rc == 0
    trained = _last_json(capsys.readouterr().out)
    assert trained["steps"] >= 1 and 0 <= trained["metrics"]["test"]["ndcg@10"] <= 1
    rc = main(["distill", "--teacher", str(ce), "--student", f"prune:{minilm_path()}:1", "--data", str(tiny_beir),
               "--out", str(tmp_path / "s"), "--loss", "margin-mse+kl", "--epochs", "1", "--batch-size", "4",
               "--max-length", "32", "--allow-weak-teacher", "--json"])  # a 1-epoch teacher may be weak
    assert rc == 0
    result = _last_json(capsys.readouterr().out)
    assert result["teacher_kind"] == "cross-encoder" and result["teacher_metrics"] is None
    assert result["teacher_check"] is None or result["teacher_check"]["queries"] >= 1


def test_distill_with_prompted_models_uses_the_prompts_as_search_does(tiny_beir, tmp_path, monkeypatch, capsys):
    """An e5-style teacher and its prune: targets from the teacher's role prompts, the student trained and
    evaluated with its own, and saved with them, so `eval retrieval` and search see what training saw."""
    from embedkd.evaluation.beir import load_beir
    from embedkd.evaluation.retrieval import evaluate_model
    from embedkd.text_encoder import load_text_encoder, role_prompts
    from tests.conftest import prompted_copy

    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    prompts = {"query": "query: ", "passage": "passage: "}
    prompted = prompted_copy(minilm_path(), tmp_path / "e5", prompts)
    out = tmp_path / "student"
    rc = main(["distill", "--teacher", prompted, "--student", f"prune:{prompted}:1", "--data", str(tiny_beir),
               "--out", str(out), "--loss", "cosine", "--epochs", "1", "--batch-size", "4", "--negatives", "1",
               "--max-length", "32", "--no-register", "--json"])
    assert rc == 0
    result = _last_json(capsys.readouterr().out)
    expected = {"query": "query: ", "document": "passage: "}
    assert result["lineage"]["prompts"] == {"teacher": expected, "student": expected}
    student = load_text_encoder(str(out), device="cpu", precision="fp32")
    assert role_prompts(student.model) == expected
    # the run's own figures are those of the saved student used with its prompts
    again = evaluate_model(student, load_beir(tiny_beir, "test"))
    assert abs(again["ndcg@10"] - result["metrics"]["test"]["ndcg@10"]) < 1e-4
    # and the teacher's are the teacher's as it taught: documents cut at the training length
    assert result["teacher_document_tokens"] == 32
    teacher = load_text_encoder(prompted, device="cpu", precision="fp32")
    teacher.model.max_seq_length = 32  # the tiny set's queries are shorter than that
    assert abs(evaluate_model(teacher, load_beir(tiny_beir, "test"))["ndcg@10"]
               - result["teacher_metrics"]["test"]["ndcg@10"]) < 1e-4


def test_distill_with_a_lexical_teacher_reports_the_fused_teacher(tiny_beir, tmp_path, monkeypatch, capsys):
    """--lexical auto: the weight is picked on dev from the grid, the lineage says so, and the teacher's
    figures are the fused teacher's (they change with the weight)."""
    from embedkd.distill.pipeline import LEXICAL_GRID

    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    common = ["--teacher", minilm_path(), "--student", f"prune:{minilm_path()}:1", "--data", str(tiny_beir),
              "--epochs", "1", "--batch-size", "4", "--negatives", "2", "--max-length", "32", "--no-register", "--json",
              "--general-texts", "none"]  # this test is about the lexical teacher alone
    results = {}
    for lexical in ("auto", "0", "100"):
        # BM25 candidates without fusion, beyond a dense miner that looks only 3 deep
        hybrid = ["--mine-k", "3", "--mine-lexical", "5"] if lexical == "0" else []
        assert main(["distill", *common, "--out", str(tmp_path / lexical), "--lexical", lexical, *hybrid]) == 0
        results[lexical] = _last_json(capsys.readouterr().out)
    auto = results["auto"]
    assert auto["lexical"]["weight"] in LEXICAL_GRID
    assert set(auto["lexical"]["dev_ndcg@10"]) == {str(w) for w in LEXICAL_GRID}
    assert auto["lineage"]["lexical"] == auto["lexical"] and set(auto["final_loss"]) == {"cosine", "kl"}
    assert results["0"]["lexical"] is None and "lexical" not in results["0"]["lineage"]
    added = results["0"]["lineage"]["mine_lexical"]["candidates_added"]
    assert results["0"]["lexical_candidates_added"] == added > 0 and auto["lexical_candidates_added"] == 0
    # at weight 100 the teacher ranks by BM25 alone, which differs from the cosine teacher on this slice
    plain, lexical_only = results["0"]["teacher_metrics"]["test"], results["100"]["teacher_metrics"]["test"]
    assert plain["ndcg@10"] != lexical_only["ndcg@10"] or plain["mrr@10"] != lexical_only["mrr@10"]


def test_distill_lexical_refuses_bad_weights_and_cross_encoders(tiny_beir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    rc = main(["distill", "--teacher", minilm_path(), "--student", f"prune:{minilm_path()}:1", "--data",
               str(tiny_beir), "--out", str(tmp_path / "s"), "--lexical", "lots", "--epochs", "1"])
    assert rc != 0 and "--lexical takes a weight" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    for extra, message in ((["--lexical", "0.5", "--lexical-language", "klingon"], "no Snowball stemmer for language"),
                           (["--lexical-language", "french"], "--lexical-language goes with --lexical"),
                           (["--mine-lexical", "-1"], "--mine-lexical takes a count")):
        rc = main(["distill", "--teacher", minilm_path(), "--student", f"prune:{minilm_path()}:1", "--data",
                   str(tiny_beir), "--out", str(tmp_path / "s"), "--epochs", "1", *extra])
        assert rc != 0 and message in capsys.readouterr().err
        assert not (tmp_path / "s").exists()


def test_distill_on_a_query_log_needs_no_train_qrels(tmp_path, monkeypatch, capsys, caplog):
    """A corpus with test labels only, and a log of unlabelled queries: the teacher labels the log."""
    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    data = make_beir_slice(tmp_path / "b", 16, split="test")
    test_queries = [json.loads(line)["text"] for line in (data / "queries.jsonl").read_text().splitlines()]
    log = tmp_path / "log.txt"
    # the first line repeats an evaluation query: it must be left out of training
    log.write_text("\n".join([test_queries[0], "Which drugs lower blood pressure?", "What causes anaemia?",
                              "How do vaccines train the immune system?"]) + "\n")
    out = tmp_path / "s"
    rc = main(["distill", "--teacher", minilm_path(), "--student", f"prune:{minilm_path()}:1", "--data", str(data),
               "--out", str(out), "--queries", str(log), "--epochs", "1", "--batch-size", "2", "--negatives", "2",
               "--max-length", "32", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = _last_json(captured.out)
    assert result["log_queries"] == 3 and result["train_examples"] == 3 and result["steps"] == 2
    assert "1 logged queries are also dev/evaluation queries" in caplog.text
    assert set(result["metrics"]) == {"test"}  # no dev split without train labels
    assert result["lineage"]["log_queries"] == {"file": str(log), "count": 3}
    saved = json.loads((out / "distill.json").read_text())
    assert saved["log_queries"] == 3


def test_distill_without_train_qrels_says_how_to_train_without_labels(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    data = make_beir_slice(tmp_path / "b", 12, split="test")
    rc = main(["distill", "--teacher", minilm_path(), "--student", f"prune:{minilm_path()}:1", "--data", str(data),
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--queries FILE" in err and len(err.splitlines()) == 1
    log = tmp_path / "log.txt"
    log.write_text(json.loads((data / "queries.jsonl").read_text().splitlines()[0])["text"] + "\n")
    rc = main(["distill", "--teacher", minilm_path(), "--student", f"prune:{minilm_path()}:1", "--data", str(data),
               "--out", str(tmp_path / "o"), "--queries", str(log)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and "every query of --queries" in err and not (tmp_path / "o").exists()
