"""General-text embedding distillation (`embedkd/distill/general.py`, `embedkd distill --general-texts`)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from embedkd.cli.main import main
from embedkd.distill.general import GeneralTexts, embedding_loss, general_stage, read_general_texts
from indexer.errors import UserError
from tests.conftest import make_beir_slice, minilm_path

# real sentences (WordNet-style glosses), enough for a few batches
GLOSSES = [f"{w}: {g}" for w, g in [
    ("river", "a large natural stream of water"), ("bank", "sloping land beside a body of water"),
    ("money", "the most common medium of exchange"), ("piano", "a keyboard instrument played by hammers"),
    ("violin", "bowed stringed instrument with four strings"), ("bread", "food made from dough of flour"),
    ("cheese", "a solid food made from the pressed curds of milk"), ("rain", "water falling in drops"),
    ("snow", "precipitation falling from clouds as ice crystals"), ("doctor", "a licensed medical practitioner"),
    ("nurse", "one skilled in caring for the sick"), ("train", "a line of railway cars coupled together"),
    ("ship", "a vessel that carries passengers or freight"), ("forest", "land covered with trees and shrubs"),
    ("desert", "arid land with little or no vegetation"), ("coffee", "a beverage made from roasted beans"),
]]


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_read_general_texts_reads_txt_jsonl_and_gz(tmp_path):
    texts = [f"{g} ({i})" for i in range(4) for g in GLOSSES]  # 64
    assert read_general_texts(_write(tmp_path / "a.txt", texts + ["", "  "])) == texts
    rows = [json.dumps({"title": t.split(":")[0], "text": t}) for t in texts]
    assert read_general_texts(_write(tmp_path / "c.jsonl", rows))[0] == f"river {texts[0]}"
    with gzip.open(tmp_path / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.writelines(t + "\n" for t in texts)
    assert read_general_texts(tmp_path / "b.txt.gz") == texts


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("folder", "is a folder"),
    ("few", "holds 16 texts; give at least 64"),
    (b"\xff\xfe caf\xe9\n" * 70, "is not UTF-8 text"),
    ("{not json\n" * 70, "line 1: not JSON"),
])
def test_read_general_texts_bad_input(tmp_path, content, message):
    path = tmp_path / ("t.jsonl" if content and "{" in str(content) else "t.txt")
    if content == "folder":
        path.mkdir()
    elif content == "few":
        _write(path, GLOSSES)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_general_texts(path)


def _recording_encoder() -> tuple[list[list[str]], object]:
    """A stand-in teacher that records each batch it is asked to encode."""
    calls: list[list[str]] = []

    def encode(batch):
        calls.append(batch)
        return np.ones((len(batch), 3), dtype=np.float32)

    return calls, encode


def test_general_batches_cover_every_text_once_per_pass_in_a_seeded_order():
    _, encode = _recording_encoder()
    a, b = GeneralTexts(GLOSSES, encode, batch_size=4, seed=1), GeneralTexts(GLOSSES, encode, batch_size=4, seed=1)
    first = [a.next("cpu")[0] for _ in range(4)]  # one pass of 16
    assert sorted(t for batch in first for t in batch) == sorted(GLOSSES)
    assert first == [b.next("cpu")[0] for _ in range(4)]
    texts, target = a.next("cpu")
    assert len(texts) == 4 and target.shape == (4, 3) and target.dtype == torch.float32 and a.seen == 20


def test_skipping_batches_continues_the_stream_without_encoding_them():
    calls, encode = _recording_encoder()
    whole, resumed = GeneralTexts(GLOSSES, encode, batch_size=3, seed=2), GeneralTexts(GLOSSES, encode, batch_size=3, seed=2)
    stream = [whole.next("cpu")[0] for _ in range(9)]  # crosses a pass (16 texts) boundary
    calls.clear()
    resumed.skip(7)
    assert calls == [] and resumed.seen == 0
    assert [resumed.next("cpu")[0] for _ in range(2)] == stream[7:]


@pytest.fixture(scope="module")
def teacher_st():
    from embedkd.text_encoder import load_sentence_transformer

    return load_sentence_transformer(minilm_path(), "cpu").eval()


def test_embedding_loss_is_zero_against_the_models_own_vectors_and_one_minus_cosine_otherwise(teacher_st):
    minilm = teacher_st
    vecs = minilm.encode(GLOSSES[:4], normalize_embeddings=True, convert_to_tensor=True)
    with torch.no_grad():
        assert embedding_loss(minilm, GLOSSES[:4], vecs).item() == pytest.approx(0.0, abs=1e-5)
        shifted = vecs.roll(1, dims=0)  # each text against another text's vector
        expected = (1 - (vecs * shifted).sum(-1)).mean().item()
        assert embedding_loss(minilm, GLOSSES[:4], shifted).item() == pytest.approx(expected, abs=1e-5)


def test_general_stage_brings_a_pruned_student_closer_to_the_teacher(teacher_st):
    minilm = teacher_st
    from embedkd.distill.prune import load_student

    student, _ = load_student(f"prune:{minilm_path()}:1", "cpu")

    def teacher(batch):
        return minilm.encode(batch, normalize_embeddings=True)

    def gap() -> float:
        with torch.no_grad():
            return embedding_loss(student, GLOSSES, torch.from_numpy(teacher(GLOSSES))).item()

    before = gap()
    frozen = student[0].auto_model.embeddings.word_embeddings.weight.clone()
    result = general_stage(student, GeneralTexts(GLOSSES, teacher, batch_size=8), steps=30, lr=3e-4,
                           progress=False)
    assert result["steps"] == 30 and result["texts_seen"] == 240 and result["stopped"] == "done"
    assert gap() < 0.8 * before
    assert torch.equal(frozen, student[0].auto_model.embeddings.word_embeddings.weight)
    assert not student.training


@pytest.fixture(scope="module")
def tiny_beir(tmp_path_factory):
    return make_beir_slice(tmp_path_factory.mktemp("beir") / "tiny", 24, split="train", extra_splits=("test",))


def test_distill_with_general_texts_records_the_stage_and_the_term(tiny_beir, tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file

    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    texts = _write(tmp_path / "g.txt", [f"{g} ({i})" for i in range(4) for g in GLOSSES])

    def run(out: str) -> dict:
        rc = main(["distill", "--teacher", minilm_path(), "--student", f"prune:{minilm_path()}:1", "--data",
                   str(tiny_beir), "--out", str(tmp_path / out), "--epochs", "1", "--batch-size", "4", "--negatives",
                   "2", "--max-length", "32", "--general-texts", str(texts), "--general-steps", "6",
                   "--general-weight", "0.5", "--threads", "1", "--json"])
        assert rc == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    result = run("s")
    info = result["lineage"]["general_texts"]
    assert info["texts"] == 64 and info["weight"] == 0.5 and info["stage"]["steps"] == 6
    assert result["lineage"]["threads"] == 1
    assert "general" in result["final_loss"] and result["general_texts"] == info
    assert not (tmp_path / "s" / "checkpoint").exists()
    # the lineage's seed and threads are enough to retrain the same student: the stage's dropout was unseeded
    # before; the threads are pinned as the default follows the machine's load, which changed between two runs in CI
    run("s2")
    first, again = load_file(tmp_path / "s" / "model.safetensors"), load_file(tmp_path / "s2" / "model.safetensors")
    assert all(torch.equal(first[k], again[k]) for k in first)


@pytest.mark.parametrize("extra, message", [
    (["--general-texts", "none", "--general-steps", "2"], "--general-texts is none"),
    (["--general-texts", "{g}", "--general-steps", "0", "--general-weight", "0"], "both are 0"),
    (["--general-texts", "{g}", "--general-steps", "0"], "0 unless given"),  # the term is off by default
    (["--general-texts", "{g}", "--general-weight", "-1"], "must be >= 0"),
    (["--general-texts", "{g}.missing"], "no such file"),
])
def test_distill_general_options_bad_input_one_line(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    texts = _write(tmp_path / "g.txt", [f"{g} ({i})" for i in range(4) for g in GLOSSES])
    data = make_beir_slice(tmp_path / "b", 12, split="train")
    rc = main(["distill", "--teacher", minilm_path(), "--student", f"prune:{minilm_path()}:1", "--data", str(data),
               "--out", str(tmp_path / "o")] + [x.format(g=texts) for x in extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_distill_general_texts_need_a_bi_encoder_teacher(tmp_path, capsys, monkeypatch):
    from sentence_transformers import CrossEncoder

    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    CrossEncoder(minilm_path(), num_labels=1, max_length=32, device="cpu").save(str(tmp_path / "ce"))
    texts = _write(tmp_path / "g.txt", [f"{g} ({i})" for i in range(4) for g in GLOSSES])
    data = make_beir_slice(tmp_path / "b", 12, split="train")
    rc = main(["distill", "--teacher", str(tmp_path / "ce"), "--student", f"prune:{minilm_path()}:1", "--data",
               str(data), "--out", str(tmp_path / "o"), "--loss", "margin-mse", "--general-texts", str(texts),
               "--allow-weak-teacher"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "a cross-encoder teacher has none" in err and not (tmp_path / "o").exists()


def test_packaged_wordnet_texts_are_read_by_name():
    texts = read_general_texts("wordnet")
    assert len(texts) == 60000 and len(set(texts)) == 60000
    assert all(3 <= len(t.split()) <= 64 for t in texts[:1000])


def test_distill_uses_the_packaged_texts_by_default_for_a_bi_encoder_teacher(tiny_beir, tmp_path, monkeypatch,
                                                                             capsys):
    monkeypatch.setenv("EMBEDKD_HOME", str(tmp_path / "home"))
    rc = main(["distill", "--teacher", minilm_path(), "--student", f"prune:{minilm_path()}:1", "--data",
               str(tiny_beir), "--out", str(tmp_path / "s"), "--epochs", "1", "--batch-size", "8", "--negatives",
               "1", "--max-length", "32", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    info = result["general_texts"]
    assert info["file"] == "wordnet" and info["texts"] == 60000
    assert info["steps"] == 5 * result["planned_steps"] == info["stage"]["steps"]
    # the stage alone: no general term beside the task loss unless --general-weight asks for one
    assert info["weight"] == 0.0 and "general" not in result["final_loss"]
    rc = main(["distill", "--teacher", minilm_path(), "--student", f"prune:{minilm_path()}:1", "--data",
               str(tiny_beir), "--out", str(tmp_path / "n"), "--epochs", "1", "--batch-size", "8", "--negatives",
               "1", "--max-length", "32", "--general-texts", "none", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and result["general_texts"] is None and "general" not in result["final_loss"]
    # no stage asked for and no term: the packaged default has nothing to do, so it is off
    rc = main(["distill", "--teacher", minilm_path(), "--student", f"prune:{minilm_path()}:1", "--data",
               str(tiny_beir), "--out", str(tmp_path / "z"), "--epochs", "1", "--batch-size", "8", "--negatives",
               "1", "--max-length", "32", "--general-steps", "0", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and result["general_texts"] is None
    # label-only fine-tuning stays label-only by default
    rc = main(["distill", "--teacher", minilm_path(), "--student", f"prune:{minilm_path()}:1", "--data",
               str(tiny_beir), "--out", str(tmp_path / "l"), "--epochs", "1", "--batch-size", "8", "--negatives",
               "1", "--max-length", "32", "--loss", "labels", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and result["general_texts"] is None and set(result["final_loss"]) == {"labels"}


def test_a_rerun_loads_the_stage_from_its_checkpoint_and_only_with_the_same_settings(tmp_path, teacher_st):
    """An interrupted `embedkd distill` rerun with the same command skips the finished stage (it takes a
    third of the budget) and continues the text stream after it; other settings train it again."""
    from embedkd.distill.general import resumable_stage
    from embedkd.distill.prune import load_student

    calls: list[int] = []

    def teacher(batch):
        calls.append(len(batch))
        return teacher_st.encode(batch, normalize_embeddings=True)

    def run(seed: int):
        student, _ = load_student(f"prune:{minilm_path()}:1", "cpu")
        stream = GeneralTexts(GLOSSES, teacher, batch_size=4, seed=0)
        info = {"fingerprint": stream.fingerprint, "steps": 3, "max_length": 32}
        result = resumable_stage(student, stream, 3, None, info, seed, 1e-4, tmp_path / "checkpoint", False)
        return student, stream, result

    first, _, result = run(seed=0)
    assert result["steps"] == 3 and len(calls) == 3 and (tmp_path / "checkpoint" / "general.pt").is_file()
    calls.clear()
    again, stream, loaded = run(seed=0)
    assert calls == [] and loaded == result and stream.seen == 0
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True))
    fresh = GeneralTexts(GLOSSES, teacher, batch_size=4, seed=0)
    fresh.skip(3)
    assert stream.next("cpu")[0] == fresh.next("cpu")[0]  # the stream goes on where the stage stopped
    calls.clear()
    run(seed=1)
    assert len(calls) == 3  # another seed: the checkpoint is not this stage's
