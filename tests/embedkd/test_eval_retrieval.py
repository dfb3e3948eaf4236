"""`embedkd eval retrieval` drops a query's own id from its ranking, as BEIR does (ArguAna, Quora)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from embedkd.cli.main import main
from embedkd.evaluation import drop_identical_ids, exact_run, read_trec_run, retrieval_metrics
from embedkd.evaluation.retrieval import top_k_indices

from ..conftest import minilm_path


def test_exact_run_leaves_out_the_query_itself_by_hand():
    docs = np.eye(3, dtype=np.float32)  # a, b, c
    query = np.array([[1.0, 0.5, 0.1]], dtype=np.float32)  # closest to a, then b, then c
    qrels = {"a": {"b": 1}}
    kept = exact_run(["a", "b", "c"], docs, ["a"], query, k=2, ignore_identical_ids=False)
    assert list(kept["a"]) == ["a", "b"]
    assert retrieval_metrics(kept, qrels)["ndcg@10"] == pytest.approx(1 / math.log2(3))
    dropped = exact_run(["a", "b", "c"], docs, ["a"], query, k=2)
    assert list(dropped["a"]) == ["b", "c"]  # still k documents: one more was retrieved
    assert retrieval_metrics(dropped, qrels)["ndcg@10"] == pytest.approx(1.0)


def test_top_k_indices_are_each_rows_best_columns_best_first():
    scores = np.random.default_rng(0).normal(size=(4, 30)).astype(np.float32)
    np.testing.assert_array_equal(top_k_indices(scores, 5), np.argsort(-scores, axis=1)[:, :5])
    assert top_k_indices(scores, 50).shape == (4, 30) and top_k_indices(scores, 0).shape == (4, 0)


def test_drop_identical_ids_keeps_order_and_cuts_to_k():
    run = {"q": {"x": 0.9, "q": 0.8, "y": 0.7, "z": 0.6}, "r": {"q": 0.5}}
    assert drop_identical_ids(run, 2) == {"q": {"x": 0.9, "y": 0.7}, "r": {"q": 0.5}}
    # A set whose answers share their query's id keeps them: dropping would hide the answer.
    assert drop_identical_ids(run, 2, {"q": {"q": 1}}) == {"q": {"x": 0.9, "q": 0.8}, "r": {"q": 0.5}}
    assert drop_identical_ids(run, 2, {"q": {"q": 0, "x": 1}}) == {"q": {"x": 0.9, "y": 0.7}, "r": {"q": 0.5}}


def _arguana_like(beir_small: Path, dest: Path) -> tuple[Path, list[str]]:
    """Queries that are documents of the corpus under the same id, judged against another document."""
    docs = [json.loads(line) for line in (beir_small / "corpus.jsonl").read_text().splitlines()]
    dest.mkdir()
    (dest / "corpus.jsonl").write_text((beir_small / "corpus.jsonl").read_text())
    pairs = [(docs[i], docs[i + 1]) for i in range(0, 20, 2)]
    (dest / "queries.jsonl").write_text("".join(json.dumps({"_id": q["_id"], "text": q["text"]}) + "\n" for q, _ in pairs))
    (dest / "qrels").mkdir()
    (dest / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q['_id']}\t{d['_id']}\t1\n" for q, d in pairs))
    return dest, [q["_id"] for q, _ in pairs]


def test_eval_cli_drops_identical_ids_unless_asked(tmp_path, beir_small, capsys):
    data, qids = _arguana_like(beir_small, tmp_path / "arguana-like")
    figures = {}
    for name, extra in (("dropped", []), ("kept", ["--keep-identical-ids"])):
        run_file = tmp_path / f"{name}.trec"
        assert main(["eval", "retrieval", "--data", str(data), "--model", minilm_path(), "--run", str(run_file),
                     "--json", *extra]) == 0
        figures[name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        run = read_trec_run(run_file)
        assert all(len(docs) == min(100, 60 - (name == "dropped")) for docs in run.values())
        selves = sum(q in run[q] for q in qids)
        assert selves == (0 if name == "dropped" else len(qids))
    # A query's own text is its nearest document, so keeping it pushes every judged document down a rank.
    assert figures["kept"]["mrr@10"] <= 0.5 + 1e-9
    assert figures["dropped"]["ndcg@10"] > figures["kept"]["ndcg@10"]


def test_eval_cli_bm25_baseline_ranks_by_bm25_and_refuses_a_bad_language(tmp_path, beir_small, capsys):
    """--bm25: the lexical baseline, through the same metrics and run files as a model; ArguAna-like
    queries (their own text under their own id) find themselves first unless the id is dropped."""
    data, qids = _arguana_like(beir_small, tmp_path / "arguana-like")
    figures = {}
    for name, extra in (("dropped", []), ("kept", ["--keep-identical-ids"])):
        run_file = tmp_path / f"bm25-{name}.trec"
        assert main(["eval", "retrieval", "--data", str(data), "--bm25", "--run", str(run_file), "--json", *extra]) == 0
        figures[name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        run = read_trec_run(run_file)
        firsts = [max(run[q], key=run[q].get) for q in qids]
        assert (sum(f == q for f, q in zip(firsts, qids)) == len(qids)) == (name == "kept")
    assert 0 < figures["kept"]["ndcg@10"] < figures["dropped"]["ndcg@10"]
    assert main(["eval", "retrieval", "--data", str(data), "--bm25", "--language", "klingon"]) != 0
    assert "no Snowball stemmer" in capsys.readouterr().err
    assert main(["eval", "retrieval", "--data", str(data), "--model", minilm_path(), "--language", "french"]) != 0
    assert "--language goes with --bm25" in capsys.readouterr().err


def test_qrels_of_another_corpus_are_refused_and_a_partial_match_warned(tmp_path, beir_small, caplog):
    """Judged documents absent from the corpus count as misses: all absent means the wrong corpus (every
    figure a silent 0 before this check), some absent is worth a warning."""
    import logging
    import shutil

    from embedkd.evaluation import load_beir
    from indexer.errors import UserError

    data = tmp_path / "beir"
    shutil.copytree(beir_small, data)
    qrels = (data / "qrels" / "test.tsv").read_text().splitlines()
    header, rows = qrels[0], [r.split("\t") for r in qrels[1:] if r.strip()]
    (data / "qrels" / "test.tsv").write_text("\n".join([header] + [f"{q}\tnot-{d}\t{g}" for q, d, g in rows]) + "\n")
    with pytest.raises(UserError, match="none of the .* documents judged relevant .* is in corpus.jsonl"):
        load_beir(data)
    q, d, g = rows[0]
    (data / "qrels" / "test.tsv").write_text("\n".join([header, f"{q}\t{d}\t{g}", f"{q}\tnot-{d}\t{g}"]) + "\n")
    with caplog.at_level(logging.WARNING):
        assert load_beir(data).qrels == {q: {d: int(g), f"not-{d}": int(g)}}
    assert "1 of 2 documents judged relevant" in caplog.text
    # comparing runs needs only the qrels: the corpus (millions of lines, perhaps) is not read at all
    (data / "corpus.jsonl").write_text("not json\n")
    assert load_beir(data, check_corpus=False).qrels == {q: {d: int(g), f"not-{d}": int(g)}}
    with pytest.raises(UserError, match="line 1"):
        load_beir(data)


def test_files_from_windows_editors_and_other_encodings(tmp_path, beir_small):
    """A byte-order mark (Windows editors write one) is read past, in the JSONL files and before the qrels
    header alike; a file in another encoding is a one-line error naming its line, not a decoder traceback."""
    import shutil

    from embedkd.evaluation import load_beir
    from indexer.errors import UserError

    data = tmp_path / "beir"
    shutil.copytree(beir_small, data)
    before = load_beir(data)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        (data / name).write_bytes(b"\xef\xbb\xbf" + (beir_small / name).read_bytes())
    after = load_beir(data)
    assert after.qrels == before.qrels and after.queries == before.queries
    assert [d.id for d in after.corpus] == [d.id for d in before.corpus]

    lines = (beir_small / "queries.jsonl").read_bytes().splitlines(keepends=True)
    lines[2] = json.dumps({"_id": "x", "text": "caf\u00e9"}).replace("\\u00e9", "\u00e9").encode("latin-1") + b"\n"
    (data / "queries.jsonl").write_bytes(b"".join(lines))
    with pytest.raises(UserError, match=r"queries.jsonl line 3 is not UTF-8 text .*iconv"):
        load_beir(data)


def test_trec_qrels_get_a_conversion_hint(tmp_path):
    """TREC's `qid 0 docid grade` is the usual qrels layout outside BEIR: the error says how to convert it."""
    from embedkd.evaluation.beir import load_qrels
    from indexer.errors import UserError

    path = tmp_path / "test.tsv"
    path.write_text("q1 0 d1 1\n")
    with pytest.raises(UserError, match=r"line 1 .* looks like TREC qrels \(qid 0 docid grade\): convert with awk"):
        load_qrels(path)
    path.write_text("q1 d1\n")  # not TREC either: no hint
    with pytest.raises(UserError, match=r"line 1 is not 'query-id<TAB>corpus-id<TAB>score'$"):
        load_qrels(path)
