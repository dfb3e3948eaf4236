from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from indexer.errors import UserError
from reid.data import read_market
from reid.evaluation import extract_features
from reid.model import load_model
from reid.training import TrainOptions, train_reid

from .reid_testdata import ATTRIBUTES

TINY = dict(epochs=1, p=4, k=2, height=64, width=32, eval_every=0)


def test_training_writes_model_log_and_checkpoint(trained_model):
    meta = json.loads((trained_model / "reid_model.json").read_text())
    assert meta["spec"]["height"] == 64 and meta["spec"]["backbone"] == "mobilenetv2_100"
    assert meta["info"]["summary"]["steps"] >= 1
    assert meta["info"]["summary"]["weights"].startswith("package:")
    log = [json.loads(line) for line in (trained_model / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["epoch"] == 1 and log[0]["id"] > 0 and log[0]["metric"] >= 0
    assert (trained_model / "checkpoint.pt").is_file()


def test_rerun_resumes_without_more_steps(trained_model, market_slice):
    before = json.loads((trained_model / "reid_model.json").read_text())["info"]["summary"]["steps"]
    summary = train_reid(market_slice, trained_model, TrainOptions(**TINY), quiet=True)
    assert summary["steps"] == before
    with pytest.raises(UserError, match="other options"):
        train_reid(market_slice, trained_model, TrainOptions(**{**TINY, "lr": 1e-3}), quiet=True)


def test_checkpoint_from_before_an_option_existed_resumes(trained_model, market_slice, tmp_path):
    import torch

    old = tmp_path / "old"
    shutil.copytree(trained_model, old)
    ckpt = torch.load(old / "checkpoint.pt", weights_only=False)
    for key in ("distill_logits", "distill_temperature"):  # options a later release added
        del ckpt["options"][key]
    torch.save(ckpt, old / "checkpoint.pt")
    before = json.loads((old / "reid_model.json").read_text())["info"]["summary"]["steps"]
    assert train_reid(market_slice, old, TrainOptions(**TINY), quiet=True)["steps"] == before
    with pytest.raises(UserError, match="other options"):  # a non-default value still differs
        train_reid(market_slice, old, TrainOptions(**TINY, teacher=str(trained_model), distill_logits=1.0),
                   quiet=True)


def test_distillation_with_attributes_alternates(trained_model, market_slice, tmp_path):
    out = tmp_path / "student"
    summary = train_reid(
        market_slice, out, TrainOptions(**{**TINY, "eval_every": 1}, teacher=str(trained_model),
                                        attributes=str(ATTRIBUTES)), quiet=True
    )
    assert summary["teacher"] == str(trained_model) and summary["lq_prob"] == 0.5
    assert summary["steps"] >= 2
    assert {"rank1", "mAP", "lq_rank1", "lq_mAP"} <= set(summary)
    log = json.loads((out / "train_log.jsonl").read_text().splitlines()[0])
    assert {"kd_feat", "kd_rel", "kd_logit", "attr"} <= set(log)  # both RLQ parts ran, on alternating steps
    assert summary["distill_logits"] == 1.0  # on by default: the teacher folder has its checkpoint
    # the student started from the teacher and moved away from it
    teacher, _ = load_model(trained_model)
    student, _ = load_model(out)
    paths = [s.path for s in read_market(market_slice).query[:4]]
    t, s = extract_features(teacher, paths), extract_features(student, paths)
    assert not np.allclose(t, s)
    assert float((t * s).sum(axis=1).mean()) > 0.5


def test_logit_distillation_starts_from_the_teachers_classifier(trained_model, market_slice, tmp_path, capsys):
    summary = train_reid(market_slice, tmp_path / "s", TrainOptions(**TINY, teacher=str(trained_model),
                                                                    distill_logits=2.0), quiet=True)
    assert summary["distill_logits"] == 2.0
    assert summary["steps"] >= 1
    log = json.loads((tmp_path / "s" / "train_log.jsonl").read_text().splitlines()[0])
    assert log["kd_logit"] > 0 and {"kd_feat", "kd_rel"} <= set(log)
    import torch

    teacher_w = torch.load(trained_model / "checkpoint.pt", weights_only=False)["extra"]["0.classifier.weight"]
    student_w = torch.load(tmp_path / "s" / "checkpoint.pt", weights_only=False)["extra"]["0.classifier.weight"]
    # initialised from the teacher's, then trained: close to it, not equal (a fresh one is ~N(0, 0.001))
    assert not torch.equal(teacher_w, student_w)
    assert torch.nn.functional.cosine_similarity(teacher_w.flatten(), student_w.flatten(), dim=0) > 0.5
    # a teacher folder without its checkpoint cannot give logits
    bare = tmp_path / "bare"
    shutil.copytree(trained_model, bare, ignore=shutil.ignore_patterns("checkpoint.pt"))
    with pytest.raises(UserError, match="checkpoint.pt, which is missing.*drop --distill-logits"):
        train_reid(market_slice, tmp_path / "s2", TrainOptions(**TINY, teacher=str(bare), distill_logits=1.0),
                   quiet=True)
    # by default such a teacher still distils, without the logit term
    capsys.readouterr()
    summary = train_reid(market_slice, tmp_path / "s5", TrainOptions(**TINY, teacher=str(bare)))
    assert summary["distill_logits"] == 0.0
    said = capsys.readouterr().err
    # the fallback says why, without telling to drop an option the user never passed
    assert "no identity-logit distillation" in said and "--distill-logits" not in said
    assert "kd_logit" not in json.loads((tmp_path / "s5" / "train_log.jsonl").read_text().splitlines()[0])
    other = tmp_path / "other"  # a teacher trained on other identities
    shutil.copytree(trained_model, other)
    ckpt = torch.load(other / "checkpoint.pt", weights_only=False)
    ckpt["extra"]["0.classifier.weight"] = torch.zeros(len(teacher_w) + 1, teacher_w.shape[1])
    torch.save(ckpt, other / "checkpoint.pt")
    with pytest.raises(UserError, match="same identities"):
        train_reid(market_slice, tmp_path / "s4", TrainOptions(**TINY, teacher=str(other), distill_logits=1.0),
                   quiet=True)
    with pytest.raises(UserError, match="pass --teacher"):
        train_reid(market_slice, tmp_path / "s3", TrainOptions(**TINY, distill_logits=1.0), quiet=True)


def test_lq_queries_change_features(trained_model, market_slice):
    model, _ = load_model(trained_model)
    paths = [s.path for s in read_market(market_slice).query[:3]]
    clean, lq = extract_features(model, paths), extract_features(model, paths, lq=True)
    assert clean.shape == lq.shape == (3, 1280)
    np.testing.assert_allclose(np.linalg.norm(clean, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(clean, lq)
    np.testing.assert_array_equal(lq, extract_features(model, paths, lq=True))  # fixed protocol


def test_bad_images_are_user_errors(market_slice, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(market_slice, root)
    Image.new("RGB", (8, 10)).save(root / "bounding_box_train" / "0002_c1s1_999999_01.jpg")
    with pytest.raises(UserError, match="at least 16 px"):
        train_reid(root, tmp_path / "out", TrainOptions(**TINY), quiet=True)
    (root / "bounding_box_train" / "0002_c1s1_999999_01.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="cannot read image"):
        train_reid(root, tmp_path / "out2", TrainOptions(**TINY), quiet=True)


def test_bad_options(market_slice, tmp_path):
    with pytest.raises(UserError, match="not a ReID model folder"):
        train_reid(market_slice, tmp_path / "o", TrainOptions(**TINY, teacher=str(tmp_path)), quiet=True)
    with pytest.raises(UserError, match="lq-prob"):
        train_reid(market_slice, tmp_path / "o", TrainOptions(**TINY, lq_prob=2.0), quiet=True)
    with pytest.raises(UserError, match="identities"):
        train_reid(market_slice, tmp_path / "o", TrainOptions(**{**TINY, "p": 50}), quiet=True)


@pytest.mark.parametrize("backbone, size", [("resnet18", (64, 32)), ("tf_efficientnet_lite0", (96, 48))])
def test_cross_architecture_teacher_gets_a_projection(market_slice, tmp_path, backbone, size):
    """A teacher of another architecture: a projection when its dimension differs (resnet18: 512), its own
    input statistics and size (tf_efficientnet_lite0: mean = std = 0.5, here trained at 96x48)."""
    from reid.model import ModelSpec, build_model, save_model

    teacher, _ = build_model(ModelSpec(backbone=backbone, height=size[0], width=size[1]), pretrained=False)
    save_model(teacher.eval(), tmp_path / "t")
    summary = train_reid(market_slice, tmp_path / "s", TrainOptions(**TINY, teacher=str(tmp_path / "t"),
                                                                    backbone="mobilenetv2_100"), quiet=True)
    assert summary["backbone"] == "mobilenetv2_100" and summary["weights"].startswith("package:")
    log = json.loads((tmp_path / "s" / "train_log.jsonl").read_text().splitlines()[0])
    assert log["kd_feat"] > 0 and np.isfinite(log["kd_rel"])


@pytest.mark.slow
def test_training_beats_imagenet_features_on_held_out_ids(tmp_path):
    """Four short epochs on 120 identities must improve mAP on 30 unseen ones over ImageNet features."""
    from reid.evaluation import evaluate_market
    from reid.model import ModelSpec, build_model

    from .reid_testdata import MARKET, make_slice

    train_ids = sorted({p.name[:4] for p in (MARKET / "bounding_box_train").glob("*.jpg")})[:120]
    test_ids = sorted({p.name[:4] for p in (MARKET / "query").glob("*.jpg")})[:30]
    root = make_slice(tmp_path / "m", train_ids=train_ids, per_id=12, test_ids=test_ids)
    data = read_market(root, need_train=True, need_test=True)
    imagenet, _ = build_model(ModelSpec())
    before = evaluate_market(imagenet, data)
    train_reid(root, tmp_path / "out", TrainOptions(epochs=4, p=8, k=4, eval_every=0), quiet=True)
    model, _ = load_model(tmp_path / "out")
    after = evaluate_market(model, data)
    assert after["mAP"] > before["mAP"] + 0.03


def test_objective_follows_rlq_schedule(trained_model):
    """With a teacher and attributes, distillation and attribute terms alternate step by step (RLQ); with
    one of them alone it runs every step. The teacher is frozen: no gradient reaches it."""
    import torch

    from reid.attributes import ATTRIBUTE_TASKS
    from reid.heads import TrainingHeads
    from reid.objective import LossWeights, ReIDObjective

    teacher, _ = load_model(trained_model)
    teacher.eval().requires_grad_(False)
    student, _ = load_model(trained_model)
    w = LossWeights(label_smoothing=0.1, center=0.0, feature=1.0, relation=1.0, logits=0.0, temperature=4.0,
                    attributes=1.0)
    x, labels = torch.rand(4, 3, 64, 32), torch.tensor([0, 0, 1, 1])
    attrs = torch.zeros(4, len(ATTRIBUTE_TASKS), dtype=torch.long)

    def keys(teacher_on: bool, attributes: bool, step: int) -> set[str]:
        heads = TrainingHeads(student.dim, 2, tuple(n for _, n in ATTRIBUTE_TASKS) if attributes else ())
        objective = ReIDObjective(heads, "triplet", w, num_ids=2, dim=student.dim,
                                  teacher=teacher if teacher_on else None, attributes=attributes)
        terms = objective(student, x, labels, step, x if objective.distills(step) else None,
                          attrs if objective.predicts_attributes(step) else None)
        sum(terms.values()).backward()
        return set(terms)

    assert keys(True, True, 0) == {"id", "metric", "kd_feat", "kd_rel"}
    assert keys(True, True, 1) == {"id", "metric", "attr"}
    assert keys(True, False, 1) == {"id", "metric", "kd_feat", "kd_rel"}
    assert keys(False, True, 0) == {"id", "metric", "attr"}
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in student.parameters())
