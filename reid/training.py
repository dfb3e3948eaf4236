"""ReID training: PK batches -> backbone + BN-neck -> ID (label-smoothed CE) + metric loss, with
optional LQ augmentation, HQ->LQ distillation from a teacher (RLQ) and coarse attribute prediction
alternating with distillation step by step (RLQ's schedule).

Learning rate: linear warm-up, then cosine decay over *progress*: steps done / planned steps, or minutes
spent / `max_minutes` once that is ahead by more than a step (`embedkd.schedule.run_fraction`): with a
time budget the schedule ends on time instead of being cut off mid-way, and a run that fits it is
reproducible from its seed. A checkpoint is written after every epoch; rerunning the same
command with the same --out resumes from it.

Under `torchrun` each process trains a replica on its share of the PK batches and DistributedDataParallel
averages the gradients (`embedkd.ddp`): the effective batch is P x K x processes, an epoch is still one pass
over the data, and rank 0 alone writes checkpoints, logs, evaluations and the model.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from embedkd import ddp
from embedkd.out_dir import output_folder
from embedkd.schedule import run_fraction
from indexer.errors import UserError

from .attributes import ATTRIBUTE_TASKS, attribute_targets, load_attributes
from .data import read_market, relabel
from .datasets import TrainSet
from .degrade import check_kinds
from .evaluation import evaluate_market
from .heads import TrainingHeads
from .model import ModelSpec, ReIDModel, build_model, load_model, save_model
from .objective import LossWeights, ReIDObjective
from .sampler import PKBatchSampler
from .transforms import PairedTrainTransform

__all__ = ["TrainOptions", "train_reid", "DEFAULT_BACKBONE", "CHECKPOINT_FILE"]

log = logging.getLogger(__name__)
DEFAULT_BACKBONE = "mobilenetv2_100"
CHECKPOINT_FILE = "checkpoint.pt"
DEFAULT_LOGIT_WEIGHT = 1.0
# options added since earlier releases wrote checkpoints, at the values that train as those releases did,
# so that such a checkpoint still resumes
ADDED_OPTIONS = {"distill_logits": 0.0, "distill_temperature": 4.0, "lq_kinds": None}


@dataclass(frozen=True)
class TrainOptions:
    """Training hyper-parameters. None means: decided from the other options (see `resolved`)."""

    backbone: str | None = None  # timm name; default: the init/teacher model's, else mobilenetv2_100
    pool: str = "gem"
    height: int = 128  # native Market-1501 size; 256x128 is the literature's (4x the compute)
    width: int = 64
    pretrained: bool = True  # ImageNet weights for a backbone trained from scratch
    epochs: int | None = None  # default 20 from ImageNet, 8 when starting from a trained model
    p: int = 16
    k: int = 4
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    metric: str = "triplet"  # or circle
    center_weight: float = 0.0  # BoT uses 5e-4
    label_smoothing: float = 0.1
    lq_prob: float | None = None  # share of degraded student crops; default 0.5 with a teacher, else 0
    lq_kinds: tuple[str, ...] | None = None  # degradation kinds those crops get; default all five
    teacher: str | None = None  # model folder: enables HQ->LQ distillation
    init: str | None = None  # model folder to start from; default: the teacher (same backbone)
    distill_feature: float = 1.0
    distill_relation: float = 5.0
    # weight of KD on the teacher's identity logits; default 1 with a teacher whose checkpoint.pt holds
    # its ID classifier for these identities, else 0
    distill_logits: float | None = None
    distill_temperature: float = 4.0
    attributes: str | None = None  # Market attribute folder: enables coarse attribute prediction
    attribute_weight: float = 0.5
    eval_every: int = 5  # epochs; evaluates on the data's query/gallery split when present
    max_minutes: float | None = None
    seed: int = 0
    workers: int = 0
    device: str | None = None

    def resolved(self) -> TrainOptions:
        init = self.init or self.teacher
        epochs = self.epochs if self.epochs is not None else (8 if init else 20)
        lq_prob = self.lq_prob if self.lq_prob is not None else (0.5 if self.teacher else 0.0)
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        return replace(self, init=init, epochs=epochs, lq_prob=lq_prob, device=device)


def _validate(opts: TrainOptions) -> None:
    if opts.epochs is not None and opts.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {opts.epochs}")
    if opts.lq_prob is not None and not 0.0 <= opts.lq_prob <= 1.0:
        raise UserError(f"--lq-prob must be in [0, 1], got {opts.lq_prob}")
    if opts.lq_kinds is not None:
        try:
            check_kinds(opts.lq_kinds)
        except ValueError as e:
            raise UserError(f"--lq-kinds: {e}") from None
        if (opts.lq_prob if opts.lq_prob is not None else (0.5 if opts.teacher else 0.0)) == 0:
            raise UserError("--lq-kinds picks the degradations of LQ training crops, and this run degrades none; "
                            "add --lq-prob P > 0 (or --teacher DIR)")
    if opts.height < 32 or opts.width < 16:
        raise UserError(f"input size {opts.height}x{opts.width} is too small; use at least 32x16")
    if opts.max_minutes is not None and opts.max_minutes <= 0:
        raise UserError("--max-minutes must be positive")
    if (opts.distill_logits or 0.0) < 0 or opts.distill_temperature <= 0:
        raise UserError("--distill-logits must be >= 0 and --distill-temperature > 0")
    if (opts.distill_logits or 0.0) > 0 and not opts.teacher:
        raise UserError("--distill-logits distils the teacher's identity logits; pass --teacher too")


def _teacher_classifier(folder: str, num_ids: int, dim: int) -> torch.Tensor:
    """The ID classifier a teacher was trained with, from the checkpoint its `reid train` left beside it
    (the saved model holds the embedding only). It must cover the same training identities."""
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        raise UserError(f"logit distillation needs the teacher's ID classifier from {path}, which is missing; "
                        "use a teacher folder written by `reid train`")
    # mmap: only the classifier is read, not the whole checkpoint with its optimizer state
    weight = torch.load(path, map_location="cpu", weights_only=False, mmap=True)["extra"].get("0.classifier.weight")
    if weight is None or tuple(weight.shape) != (num_ids, dim):
        got = "none" if weight is None else f"{tuple(weight.shape)[0]} identities x {tuple(weight.shape)[1]}-d"
        raise UserError(f"the teacher's ID classifier ({got}) does not match this training set "
                        f"({num_ids} identities x {dim}-d); logit distillation needs a teacher trained on the "
                        "same identities")
    return weight.float().clone()  # off the mapped file


def _logit_teacher(opts: TrainOptions, teacher: ReIDModel | None, num_ids: int,
                   quiet: bool) -> tuple[torch.Tensor | None, TrainOptions]:
    """The teacher's ID classifier when logits are to be distilled, and the options with the weight
    resolved: the default (None) distils where the classifier can be read and falls back, saying
    so, where it cannot; an explicit weight > 0 makes that an error."""
    classifier = None
    if teacher is not None and opts.distill_logits != 0.0:
        try:
            classifier = _teacher_classifier(opts.teacher, num_ids, teacher.dim)
        except UserError as exc:
            if opts.distill_logits is not None:
                raise UserError(f"{exc}; or drop --distill-logits") from None
            _say(f"no identity-logit distillation: {exc}", quiet)
    if opts.distill_logits is None:
        opts = replace(opts, distill_logits=DEFAULT_LOGIT_WEIGHT if classifier is not None else 0.0)
    return classifier, opts


def _build_student(opts: TrainOptions) -> tuple[ReIDModel, str]:
    if opts.init and (opts.backbone is None or opts.backbone == json.loads(
        (Path(opts.init) / "reid_model.json").read_text())["spec"]["backbone"]
    ):
        model, _ = load_model(opts.init)
        return model, f"init:{opts.init}"
    spec = ModelSpec(backbone=opts.backbone or DEFAULT_BACKBONE, pool=opts.pool, height=opts.height, width=opts.width)
    model, source = build_model(spec, pretrained=opts.pretrained)
    if source.startswith("package") or source == "hub":
        import timm

        cfg = timm.create_model(spec.backbone, pretrained=False, num_classes=0).pretrained_cfg
        model.spec = replace(spec, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    return model, source


def _lr_factor(progress: float, step: int, warmup_steps: int) -> float:
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    return warm * max(0.01, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


class _TrainStep(nn.Module):
    """The student and the objective's trained parts as one module, whose forward gives a batch's loss terms:
    what DistributedDataParallel wraps, so that every gradient it averages comes from one forward."""

    def __init__(self, model: ReIDModel, objective: ReIDObjective) -> None:
        super().__init__()
        self.model, self.trained, self.objective = model, objective.trained, objective

    def forward(self, student_x, labels, step, teacher_x=None, attribute_labels=None) -> dict[str, torch.Tensor]:
        return self.objective(self.model, student_x, labels, step, teacher_x, attribute_labels)


def _say(message: str, quiet: bool) -> None:
    log.info(message)
    if not quiet:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


def train_reid(
    data_root: str | Path, out_dir: str | Path, options: TrainOptions, quiet: bool = False
) -> dict[str, Any]:
    """Train (or resume) a ReID model into `out_dir` and return a summary dict (times, last metrics)."""
    _validate(options)
    for folder in (options.teacher, options.init):
        if folder and not (Path(folder) / "reid_model.json").is_file():
            raise UserError(f"{folder} is not a ReID model folder; pass the --out folder of an earlier `reid train`")
    opts = options.resolved()
    torch.set_flush_denormal(True)
    torch.manual_seed(opts.seed)
    cluster = ddp.start(opts.device)
    device = cluster.device
    quiet = quiet or not cluster.leader
    out = output_folder(out_dir)
    data = read_market(data_root, need_train=True)
    samples, pids = relabel(data.train)
    if len(pids) < opts.p:
        raise UserError(
            f"{data_root} has {len(pids)} training identities; P x K batches need at least {opts.p} (lower --p)"
        )

    model, source = _build_student(opts)
    # channels_last: ~1.4x faster MobileNet/EfficientNet convolutions on CPU (oneDNN), harmless on GPU
    fmt = torch.channels_last
    model.to(device, memory_format=fmt)
    teacher = None
    if opts.teacher:
        teacher, _ = load_model(opts.teacher)
        teacher.to(device, memory_format=fmt).eval().requires_grad_(False)
    attr_targets = None
    if opts.attributes:
        table = load_attributes(opts.attributes)
        attr_targets = attribute_targets([pids[s.pid] for s in samples], table)
        if (attr_targets == -100).all():
            raise UserError(f"no training identity of {data_root} has labels in {opts.attributes}")
    heads = TrainingHeads(model.dim, len(pids), tuple(n for _, n in ATTRIBUTE_TASKS) if opts.attributes else ())
    teacher_ids, opts = _logit_teacher(opts, teacher, len(pids), quiet)
    if teacher_ids is not None:
        teacher_ids = teacher_ids.to(device)
        if model.dim == teacher.dim:  # the student's classifier starts as the teacher's
            heads.classifier.weight.data.copy_(teacher_ids)
    weights = LossWeights(label_smoothing=opts.label_smoothing, center=opts.center_weight,
                          feature=opts.distill_feature, relation=opts.distill_relation, logits=opts.distill_logits,
                          temperature=opts.distill_temperature, attributes=opts.attribute_weight)
    objective = ReIDObjective(heads, opts.metric, weights, num_ids=len(pids), dim=model.dim, teacher=teacher,
                              teacher_ids=teacher_ids, attributes=attr_targets is not None)
    extra = objective.trained.to(device)

    spec = model.spec
    # the teacher sees the clean crop normalized its own way (another backbone may expect other statistics)
    tspec = teacher.spec if teacher is not None else spec
    transform = PairedTrainTransform(spec.height, spec.width, spec.mean, spec.std, lq_prob=opts.lq_prob,
                                     teacher_mean=tspec.mean, teacher_std=tspec.std,
                                     lq_kinds=check_kinds(opts.lq_kinds) if opts.lq_kinds else None)
    dataset = TrainSet(samples, transform, attr_targets)
    sampler = PKBatchSampler([s.pid for s in samples], opts.p, opts.k, seed=opts.seed)
    if cluster.world > 1:
        sampler = ddp.RoundRobinBatches(sampler, cluster.rank, cluster.world)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=opts.workers, persistent_workers=opts.workers > 0)
    steps_per_epoch = max(1, len(sampler))
    total_steps = steps_per_epoch * opts.epochs
    warmup_steps = int(opts.warmup_epochs * steps_per_epoch)
    params = [p for p in list(model.parameters()) + list(extra.parameters()) if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=opts.lr, weight_decay=opts.weight_decay)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    out.mkdir(parents=True, exist_ok=True)  # only now: a refused teacher, attribute folder or option leaves no folder
    state = {"epoch": 0, "step": 0, "seconds": 0.0, "images": 0, "done": False, "evals": [], "processes": cluster.world}
    ckpt_path = out / CHECKPOINT_FILE
    opts_json = {k: v for k, v in asdict(opts).items() if k not in ("device", "workers")}
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        saved = {k: ckpt["options"].get(k, ADDED_OPTIONS.get(k)) for k in opts_json}
        if saved != opts_json or set(ckpt["options"]) - set(opts_json):
            raise UserError(f"{out} holds a checkpoint from other options; use a new --out or delete {ckpt_path}")
        if ckpt["state"].get("processes", 1) != cluster.world:  # the batch, and so the schedule, would differ
            n = ckpt["state"].get("processes", 1)
            raise UserError(f"{out} holds a checkpoint of training in {n} process{'es' if n > 1 else ''}, "
                            f"this run has {cluster.world}; resume with the same number "
                            f"({'torchrun --nproc-per-node ' + str(n) if n > 1 else 'without torchrun'}) or use a new --out")
        model.load_state_dict(ckpt["model"])
        extra.load_state_dict(ckpt["extra"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        _say(f"resuming {out} at epoch {state['epoch']} (step {state['step']})", quiet)
    _say(
        f"training {spec.backbone} ({source}) {spec.height}x{spec.width} on {len(samples)} crops / {len(pids)} ids, "
        f"{opts.epochs} epochs x ~{steps_per_epoch} steps, lq_prob={opts.lq_prob}, "
        f"teacher={opts.teacher}, attributes={'yes' if opts.attributes else 'no'}, device={device}"
        + (f", {cluster.world} processes" if cluster.world > 1 else ""),
        quiet,
    )
    log_file = open(out / "train_log.jsonl" if cluster.leader else os.devnull, "a")
    step_module = _TrainStep(model, objective)
    # alternating distillation and attributes leaves parts out of every other step: DDP must then look for them
    alternating = objective.distills(0) != objective.distills(1)
    net = (DistributedDataParallel(step_module, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=alternating) if cluster.world > 1 else step_module)
    budget_s = opts.max_minutes * 60 if opts.max_minutes else None

    def progress() -> float:
        return run_fraction(state["step"], total_steps, state["seconds"], budget_s)

    def run_eval(tag: str) -> dict[str, float]:
        if not data.query or not data.gallery or not cluster.leader:
            return {}
        model.eval()
        clean = evaluate_market(model, data)
        lq = evaluate_market(model, data, lq=True)
        result = {"epoch": state["epoch"], "rank1": clean["rank1"], "mAP": clean["mAP"],
                  "lq_rank1": lq["rank1"], "lq_mAP": lq["mAP"], "images_per_s": clean["images_per_s"]}
        state["evals"].append(result)
        log_file.write(json.dumps({"eval": tag, **result}) + "\n")
        log_file.flush()
        _say(f"[{tag}] epoch {state['epoch']}: rank1 {result['rank1']:.3f} mAP {result['mAP']:.3f} | "
             f"LQ rank1 {result['lq_rank1']:.3f} mAP {result['lq_mAP']:.3f}", quiet)
        return result

    while not state["done"] and state["epoch"] < opts.epochs and progress() < 1.0:
        model.train()
        extra.train()
        sampler.set_epoch(state["epoch"])
        t_epoch = time.perf_counter()
        sums: dict[str, float] = {}
        n_batches = 0
        t_mark = time.perf_counter()  # wall time, data loading included (the budget is wall time)
        for batch in loader:
            for group in optimizer.param_groups:
                group["lr"] = opts.lr * _lr_factor(progress(), state["step"], warmup_steps)
            student_x = batch["student"].to(device, memory_format=fmt, non_blocking=True)
            labels = batch["label"].to(device)
            step = state["step"]
            teacher_x = batch["teacher"].to(device) if objective.distills(step) else None
            attribute_labels = batch["attributes"].to(device) if objective.predicts_attributes(step) else None
            with torch.autocast(device.type, enabled=use_amp):
                terms = net(student_x, labels, step, teacher_x, attribute_labels)
                loss = sum(terms.values())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            # every rank acts on the same figures: the slowest rank's time, and any rank's non-finite loss
            elapsed, bad = ddp.agree_max(cluster, [time.perf_counter() - t_mark, float(not torch.isfinite(loss))])
            if bad:  # the options' fault, not a bug: one line, exit 2
                raise UserError(f"the training loss became non-finite (inf or nan) at step {step}; train again with a "
                                f"lower --lr (now {opts.lr:g}) into a new --out")
            scaler.step(optimizer)
            scaler.update()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            n_batches += 1
            state["step"] += 1
            state["images"] += len(labels) * cluster.world
            state["seconds"] += elapsed
            t_mark += elapsed
            if state["step"] % 20 == 0:
                mean = " ".join(f"{k} {v / n_batches:.3f}" for k, v in sums.items())
                _say(f"epoch {state['epoch'] + 1}/{opts.epochs} step {state['step']}/{total_steps} "
                     f"{mean} lr {optimizer.param_groups[0]['lr']:.2e} "
                     f"{state['images'] / max(state['seconds'], 1e-9):.0f} img/s", quiet)
            if progress() >= 1.0:
                break
        state["epoch"] += 1
        state["done"] = progress() >= 1.0 or state["epoch"] >= opts.epochs
        log_file.write(json.dumps({"epoch": state["epoch"], "step": state["step"], "seconds": state["seconds"],
                                   "epoch_seconds": time.perf_counter() - t_epoch,
                                   **{k: v / max(1, n_batches) for k, v in sums.items()}}) + "\n")
        log_file.flush()
        if opts.eval_every > 0 and state["epoch"] % opts.eval_every == 0 and not state["done"]:
            run_eval("dev")
        if cluster.leader:
            torch.save({"options": opts_json, "model": model.state_dict(), "extra": extra.state_dict(),
                        "optimizer": optimizer.state_dict(), "state": state}, str(ckpt_path) + ".tmp")
            Path(str(ckpt_path) + ".tmp").replace(ckpt_path)

    final = state["evals"][-1] if state["evals"] and state["evals"][-1]["epoch"] == state["epoch"] else None
    if final is None and opts.eval_every > 0:
        final = run_eval("final") or None
    log_file.close()
    summary = {
        "out": str(out),
        "backbone": spec.backbone,
        "input_size": [spec.height, spec.width],
        "weights": source,
        "teacher": opts.teacher,
        "attributes": bool(opts.attributes),
        "lq_prob": opts.lq_prob,
        "lq_kinds": list(opts.lq_kinds) if opts.lq_kinds else None,
        "distill_logits": opts.distill_logits,
        "epochs": state["epoch"],
        "steps": state["step"],
        "processes": cluster.world,
        "train_seconds": round(state["seconds"], 1),
        "train_images_per_s": round(state["images"] / max(state["seconds"], 1e-9), 1),
        **({k: v for k, v in final.items() if k != "epoch"} if final else {}),
    }
    if cluster.leader:
        model.cpu().to(memory_format=torch.contiguous_format)
        save_model(model, out, info={"options": opts_json, "summary": summary, "identities": len(pids)})
    cluster.barrier()  # the model is written before any process reports success
    ddp.stop(cluster)
    return summary
