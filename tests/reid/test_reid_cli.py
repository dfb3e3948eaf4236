from __future__ import annotations

import json

import pytest

from embedkd.cli.main import main


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_train_and_eval_contracts(market_slice, tmp_path, capsys):
    out = tmp_path / "model"
    rc = main(["reid", "train", "--data", str(market_slice), "--out", str(out), "--epochs", "1", "--p", "4",
               "--k", "2", "--height", "64", "--width", "32", "--eval-every", "0", "--quiet", "--json"])
    assert rc == 0
    summary = _last_json(capsys)
    assert summary["epochs"] == 1 and summary["input_size"] == [64, 32]
    for lq in ([], ["--lq"]):
        assert main(["reid", "eval", "--model", str(out), "--data", str(market_slice), "--json", *lq]) == 0
        result = _last_json(capsys)
        assert {"rank1", "rank5", "mAP"} <= set(result)
        assert 0.0 <= result["rank1"] <= result["rank5"] <= 1.0 and 0.0 < result["mAP"] <= 1.0
        assert result["lq"] == bool(lq)
    # the protocol restricted to some kinds, e.g. those a model was not trained on
    assert main(["reid", "eval", "--model", str(out), "--data", str(market_slice), "--json", "--lq",
                 "--lq-kinds", "downscale"]) == 0
    assert _last_json(capsys)["lq_kinds"] == ["downscale"]
    # tracklet queries: the query and its same-camera gallery crops, fused
    assert main(["reid", "eval", "--model", str(out), "--data", str(market_slice), "--json", "--tracklet", "3"]) == 0
    result = _last_json(capsys)
    assert result["tracklet"] == 3 and 1.0 <= result["mean_crops"] <= 3.0 and 0.0 < result["mAP"] <= 1.0
    assert main(["reid", "eval", "--model", str(out), "--data", str(market_slice), "--tracklet", "0"]) == 2
    assert "--tracklet must be at least 1" in capsys.readouterr().err


def test_train_on_some_degradations(market_slice, tmp_path, capsys):
    out = tmp_path / "lq"
    assert main(["reid", "train", "--data", str(market_slice), "--out", str(out), "--epochs", "1", "--p", "4",
                 "--k", "2", "--height", "64", "--width", "32", "--eval-every", "0", "--lq-prob", "1",
                 "--lq-kinds", "jpeg,downscale", "--quiet", "--json"]) == 0
    assert _last_json(capsys)["lq_kinds"] == ["jpeg", "downscale"]
    info = json.loads((out / "reid_model.json").read_text())["info"]
    assert info["options"]["lq_kinds"] == ["jpeg", "downscale"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["reid", "train", "--data", "{tmp}", "--out", "{tmp}/o"], "no training crops"),
        (["reid", "eval", "--model", "{tmp}", "--data", "{slice}"], "not a ReID model folder"),
        (["reid", "eval", "--model", "{model}", "--data", "{tmp}"], "query/ and bounding_box_test/"),
        (["reid", "train", "--data", "{slice}", "--out", "{tmp}/o", "--backbone", "nonet", "--p", "4"],
         "timm model name"),
        (["reid", "gallery", "query", "--gallery", "nope", "--image", "x.jpg"], "no gallery named"),
        (["reid", "eval", "--model", "{model}", "--data", "{slice}", "--lq", "--lq-kinds", "jpeg,fog"], "'fog'"),
        (["reid", "eval", "--model", "{model}", "--data", "{slice}", "--lq-kinds", "jpeg"], "add --lq"),
        (["reid", "train", "--data", "{slice}", "--out", "{tmp}/o", "--lq-kinds", "jpeg"], "add --lq-prob"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, message, market_slice, trained_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    argv = [a.format(tmp=tmp_path, slice=market_slice, model=trained_model) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_train_refuses_a_file_as_out(market_slice, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("keep me\n")
    assert main(["reid", "train", "--data", str(market_slice), "--out", str(taken), "--p", "4", "--k", "2"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err and taken.read_text() == "keep me\n"
    out = tmp_path / "new"
    assert main(["reid", "train", "--data", str(market_slice), "--out", str(out), "--p", "4", "--k", "2",
                 "--attributes", str(tmp_path)]) == 2
    assert "market_attribute" in capsys.readouterr().err and not out.exists()  # a refused run leaves no folder


def test_gallery_cli(market_slice, trained_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    assert main(["reid", "gallery", "build", "--gallery", "g", "--model", str(trained_model), "--images",
                 str(market_slice / "bounding_box_test"), "--json"]) == 0
    count = _last_json(capsys)["count"]
    q = sorted((market_slice / "query").iterdir())[0]
    assert main(["reid", "gallery", "add", "--gallery", "g", "--images", str(q), "--json"]) == 0
    assert _last_json(capsys)["count"] == count + 1
    assert main(["reid", "gallery", "query", "--gallery", "g", "--image", str(q), "-k", "2", "--json"]) == 0
    results = _last_json(capsys)["results"]
    assert results[0]["id"] == q.stem and len(results) == 2
    # only crops from other cameras than the query's: the query crop itself is filtered out
    camid = results[0]["camid"]
    assert main(["reid", "gallery", "query", "--gallery", "g", "--image", str(q), "-k", "5", "--where",
                 f"camid!={camid}", "--json"]) == 0
    others = _last_json(capsys)["results"]
    assert len(others) == 5 and all(r["camid"] != camid for r in others)
    assert main(["reid", "gallery", "query", "--gallery", "g", "--image", str(q), "-k", "5", "--where",
                 f"camid={json.dumps([c for c in range(1, 7) if c != camid])}", "--json"]) == 0
    assert _last_json(capsys)["results"] == others  # the same crops, named the other way
    q2 = sorted((market_slice / "query").iterdir())[1]
    assert main(["reid", "gallery", "query", "--gallery", "g", "--image", str(q), str(q2), "-k", "3", "--json"]) == 0
    assert [len(r["results"]) for r in _last_json(capsys)["queries"]] == [3, 3]  # a list per image
    assert main(["reid", "gallery", "query", "--gallery", "g", "--image", str(q), str(q2), "-k", "3", "--fuse",
                 "--json"]) == 0
    assert len(_last_json(capsys)["results"]) == 3  # one tracklet, one list
    assert main(["reid", "gallery", "query", "--gallery", "g", "--image", str(q), "--where", "camid"]) == 2
    assert "has no =, !=" in capsys.readouterr().err
    assert main(["reid", "gallery", "remove", "--gallery", "g", q.stem, "--json"]) == 0
    assert _last_json(capsys)["count"] == count
    assert main(["reid", "gallery", "drop", "--gallery", "g", "--json"]) == 0
    assert _last_json(capsys)["dropped"] is True
    assert q.is_file()  # crops indexed from the user's own folder stay where they are
    assert main(["reid", "gallery", "query", "--gallery", "g", "--image", str(q)]) == 2


def test_gallery_in_shards(market_slice, trained_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    crops = str(market_slice / "bounding_box_test")
    assert main(["reid", "gallery", "build", "--gallery", "g", "--model", str(trained_model), "--images", crops,
                 "--shard-size", "0"]) == 2
    assert "shard size must be a positive number" in capsys.readouterr().err
    assert main(["reid", "gallery", "build", "--gallery", "g", "--model", str(trained_model), "--images", crops,
                 "--shard-size", "4", "--json"]) == 0
    out = _last_json(capsys)
    assert out["shards"] == -(-out["count"] // 4) > 1
    crop = sorted((market_slice / "bounding_box_test").iterdir())[-1]  # in the last shard
    assert main(["reid", "gallery", "query", "--gallery", "g", "--image", str(crop), "-k", "1", "--json"]) == 0
    assert _last_json(capsys)["results"][0]["id"] == crop.stem


def test_text_commands_refuse_a_gallery(market_slice, trained_model, beir_small, tmp_path, capsys, monkeypatch):
    """A gallery named where a text index is expected is a one-line error about the gallery, before any
    model loads (it used to be a failed text-model load that blamed the gallery's ReID folder)."""
    from indexer.context import open_catalog
    from indexer.settings import load_settings

    from ..conftest import minilm_path
    from ..indexer.helpers import snapshot

    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    assert main(["reid", "gallery", "build", "--gallery", "g", "--model", str(trained_model), "--images",
                 str(market_slice / "bounding_box_test")]) == 0
    capsys.readouterr()
    catalog = open_catalog(load_settings(home=tmp_path / "home"))
    before = snapshot(catalog)
    for argv in (["index", "search", "--index", "g", "--query", "a person"],
                 ["index", "add", "--index", "g", "--corpus", str(beir_small)],
                 ["eval", "retrieval", "--data", str(beir_small), "--index", "g"],
                 ["upgrade", "fit", "--index", "g", "--model", minilm_path()],
                 ["upgrade", "backfill", "--index", "g", "--model", minilm_path()],
                 ["index", "delete", "--index", "g", sorted((market_slice / "bounding_box_test").iterdir())[0].stem],
                 ["index", "drop", "--index", "g"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "index 'g' holds image embeddings, not text; use the `embedkd reid gallery` commands" in err, (argv, err)
        assert len(err.splitlines()) == 1
    assert main(["reid", "gallery", "build", "--gallery", "g", "--model", str(trained_model), "--images",
                 str(market_slice / "query")]) == 2
    assert "add to it with `embedkd reid gallery add`, or remove it first with `embedkd reid gallery drop`" in \
        capsys.readouterr().err
    assert snapshot(catalog) == before
    catalog.close()


def test_a_reid_model_named_as_a_text_model_says_so(trained_model):
    from embedkd.text_encoder import load_sentence_transformer
    from indexer.errors import UserError

    with pytest.raises(UserError, match="is a ReID model .* use ReID models with the `embedkd reid` commands"):
        load_sentence_transformer(str(trained_model))
    with pytest.raises(UserError, match="is a ReID model"):  # a student made by pruning one, too
        load_sentence_transformer(f"prune:{trained_model}:2")
