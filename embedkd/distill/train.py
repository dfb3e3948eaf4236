"""The training loop: one student forward per step, a weighted `DistillObjective`, AdamW with linear
warmup/decay, a wall-clock budget, and resumable checkpoints. Runs on CUDA when present.

Under `torchrun` (`embedkd.ddp`) each process takes every world-th batch of the one-process sequence and
DistributedDataParallel averages the gradients: the effective batch is batch_size x processes, and in-batch
negatives come from each process's own batch. Rank 0 alone writes checkpoints."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import ddp
from ..progress import StepProgress
from ..schedule import run_fraction
from .general import GeneralTexts, embedding_loss
from .losses import DistillObjective, StepTensors

__all__ = ["Example", "RelationTap", "TrainOptions", "train_student"]

log = logging.getLogger(__name__)


@dataclass
class Example:
    """One query with its candidates (positive first) and the teacher's score of each."""

    query: str
    docs: list[str]
    scores: list[float]


@dataclass
class TrainOptions:
    epochs: float = 1.0
    batch_size: int = 16
    lr: float = 1e-4
    warmup: float = 0.1
    max_length: int = 128  # token limit while training (inference keeps the model's own)
    time_budget_s: float | None = None
    checkpoint_every: int = 50
    freeze_word_embeddings: bool = True
    seed: int = 0
    extra: dict = field(default_factory=dict)  # lineage that should invalidate a checkpoint when changed

    def total_steps(self, n_examples: int) -> int:
        return max(1, math.ceil(self.epochs * n_examples / self.batch_size))


class RelationTap:
    """Forward hooks on the last transformer layer's query/key/value projections (BERT-like)."""

    def __init__(self, st_model) -> None:
        from .prune import transformer_layers

        _, blocks, _ = transformer_layers(st_model)
        last = blocks[-1]
        self.out: dict[str, Tensor] = {}
        self.handles = []
        found = {}
        for name, module in last.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("query", "key", "value", "q_lin", "k_lin", "v_lin") and isinstance(module, torch.nn.Linear):
                found[{"q_lin": "query", "k_lin": "key", "v_lin": "value"}.get(leaf, leaf)] = module
        if set(found) != {"query", "key", "value"}:
            from indexer.errors import UserError

            raise UserError("attention distillation needs BERT-like layers with query/key/value projections; "
                            "choose another --loss for this model")
        for key, module in found.items():
            self.handles.append(module.register_forward_hook(self._hook(key)))

    def _hook(self, key: str):
        def fn(_module, _inputs, output):
            self.out[key] = output
        return fn

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _encode(model, texts: Sequence[str], device, role: str = "document") -> tuple[Tensor, dict]:
    """The model's embedding of `texts` as queries or documents (with its own prompt for that role)."""
    from sentence_transformers.util import batch_to_device

    from embedkd.text_encoder import role_prompts

    # sentence-transformers prepends the prompt itself and, for poolings that exclude prompt tokens,
    # records its length: training then pools exactly as `encode` will
    features = batch_to_device(model.preprocess(list(texts), prompt=role_prompts(model).get(role)), device)
    out = model(dict(features))
    return out["sentence_embedding"], features


class _DistillStep(torch.nn.Module):
    """One step's loss from a batch: the student's forwards, the teacher's where attention is distilled, the
    objective. One module (the student, and the objective's own parameters) with one forward per step, so that
    DistributedDataParallel averages every gradient the step makes."""

    def __init__(self, model, objective: DistillObjective, targets: dict, taps: tuple | None,
                 general_weight: float, max_lengths: tuple[int, int]) -> None:
        super().__init__()
        self.model, self.objective = model, objective
        self.targets, self.taps, self.general_weight, self.max_lengths = targets, taps, general_weight, max_lengths

    def forward(self, batch: list[Example], general_batch: tuple | None) -> tuple[Tensor, dict[str, float]]:
        model = self.model
        tensors, d_features = _batch_tensors(model, batch, self.objective, **self.targets)
        if self.taps is not None:
            student_tap, teacher_tap, teacher_model = self.taps
            with torch.no_grad():
                teacher_model[0].auto_model(**{k: v for k, v in d_features.items()
                                               if k in ("input_ids", "attention_mask", "token_type_ids")})
            tensors.student_relations = dict(student_tap.out)
            tensors.teacher_relations = dict(teacher_tap.out)
            tensors.relation_mask = d_features["attention_mask"]
        loss, parts = self.objective(tensors)
        if general_batch is not None:
            task_length, general_length = self.max_lengths
            model.max_seq_length = general_length
            g_loss = embedding_loss(model, *general_batch)
            model.max_seq_length = task_length
            loss = loss + self.general_weight * g_loss
            parts = {**parts, "general": g_loss.item()}
        return loss, parts


def _config_hash(options: TrainOptions, n_examples: int, weights: dict) -> str:
    opts = {k: v for k, v in asdict(options).items() if k != "time_budget_s"}
    blob = json.dumps({"options": opts, "n": n_examples, "weights": weights}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_student(model, examples: Sequence[Example], objective: DistillObjective, options: TrainOptions,
                  workdir: Path, teacher_vectors: Callable[[list[str]], np.ndarray] | None = None,
                  teacher_model=None, previous_model=None, progress: bool = True,
                  teacher_query_vectors: Callable[[list[str]], np.ndarray] | None = None,
                  teacher_lexical: Callable[[list[str], list[str]], np.ndarray | None] | None = None,
                  general: GeneralTexts | None = None, general_weight: float = 0.0,
                  general_max_length: int = 64, cluster: ddp.Cluster | None = None) -> dict:
    """Train `model` in place; returns {"steps", "planned_steps", "seconds", "loss", "resumed_from", ...}.

    `teacher_vectors(texts)` gives a bi-encoder teacher's embeddings (for mse/cosine/kl in-batch), of
    documents, and `teacher_query_vectors` of queries where they differ (a teacher with a query prompt);
    `teacher_lexical(queries, docs)` is what a fused teacher adds to those in-batch cosines (BM25);
    `teacher_model` is the teacher SentenceTransformer (for attention distillation);
    `previous_model` is a frozen previous model version whose embeddings of the same texts the
    `previous` term (continual training, QDC) keeps the student close to.
    `general` adds `general_weight` x (1 - cosine to the teacher) on a batch of its texts each step
    (`general.py`), so that task distillation does not narrow the student to the task's data.
    Checkpoints go to `workdir/checkpoint`; a rerun with the same settings resumes from there.
    `cluster` (`embedkd.ddp.start`): the processes training together under torchrun; one by default.
    """
    cluster = cluster or ddp.Cluster(0, 1, model.device)
    if not examples:
        from indexer.errors import UserError

        raise UserError("no training examples: the train qrels name no query with a positive in the corpus")
    device = model.device
    cands = len(examples[0].docs)
    if any(len(e.docs) != cands or len(e.scores) != cands for e in examples):
        raise ValueError("every example needs the same number of candidates and scores")
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    n = len(examples)
    batches = options.total_steps(n)  # of the one-process run; each process takes every world-th one
    steps = max(1, batches // cluster.world)
    per_epoch = math.ceil(n / options.batch_size)
    orders = [rng.permutation(n) for _ in range(math.ceil(max(batches, steps * cluster.world) / per_epoch))]

    if options.freeze_word_embeddings:
        for name, p in model.named_parameters():
            if "word_embeddings" in name:
                p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad] + objective.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=options.lr, weight_decay=0.01)
    t0 = time.perf_counter()
    # every process acts on rank 0's budget and the slowest one's clock, so that all stop at the same step
    budget = ddp.from_leader(cluster, [options.time_budget_s or 0.0])[0] or None
    elapsed = 0.0

    def progress_fraction(s: int) -> float:
        return run_fraction(s, steps, elapsed, budget)

    def lr_factor(s: int) -> float:  # linear warmup, then linear decay to 0 at the end of steps or budget
        frac = progress_fraction(s)
        return min(1.0, frac / options.warmup) if frac < options.warmup else max(0.0, (1 - frac) / (1 - options.warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(lr_factor(s), 1e-3))

    ckpt_dir = Path(workdir) / "checkpoint"
    key = _config_hash(options, n, objective.weights) + (f"-x{cluster.world}" if cluster.world > 1 else "")
    start = 0
    if (ckpt_dir / "state.pt").is_file():
        state = torch.load(ckpt_dir / "state.pt", map_location=device, weights_only=False)
        if state.get("key") == key:
            model.load_state_dict(state["model"])
            objective.load_state_dict(state["objective"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start = int(state["step"])
            if general is not None and general_weight > 0:
                general.skip(start)  # the term drew one batch per step
            log.info("resuming from checkpoint at step %d of %d", start, steps)
        else:
            log.info("ignoring a checkpoint made with other settings")

    student_tap = teacher_tap = None
    if objective.needs_relations:
        if teacher_model is None:
            from indexer.errors import UserError

            raise UserError("the attention loss needs a bi-encoder (transformer) teacher; choose another --loss")
        student_tap, teacher_tap = RelationTap(model), RelationTap(teacher_model)
        teacher_model.eval()

    saved_len = model.max_seq_length
    model.max_seq_length = min(saved_len, options.max_length)
    model.train()
    targets = {"teacher_vectors": teacher_vectors, "teacher_query_vectors": teacher_query_vectors,
               "teacher_lexical": teacher_lexical, "previous_model": previous_model}
    step_module = _DistillStep(model, objective, targets,
                               (student_tap, teacher_tap, teacher_model) if student_tap is not None else None,
                               general_weight, (model.max_seq_length, min(saved_len, general_max_length)))
    # loss terms that are off leave their parameters (a projection, a score scale) out of every step
    net = (torch.nn.parallel.DistributedDataParallel(step_module, find_unused_parameters=True)
           if cluster.world > 1 else step_module)
    bar = StepProgress(steps, "distill", enabled=progress and cluster.leader, initial=start)
    running: dict[str, float] = {}
    step = start
    stopped = "done"
    try:
        for step in range(start, steps):
            elapsed = ddp.agree_max(cluster, [time.perf_counter() - t0])[0]
            if budget is not None and elapsed > budget:
                stopped = "time budget"
                break
            g = step * cluster.world + cluster.rank  # this process's batch of the one-process sequence
            order = orders[g // per_epoch]
            idx = order[(g % per_epoch) * options.batch_size:(g % per_epoch + 1) * options.batch_size]
            batch = [examples[i] for i in idx]
            general_batch = general.next(device) if general is not None and general_weight > 0 else None
            loss, parts = net(batch, general_batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            for k, v in parts.items():
                running[k] = 0.9 * running.get(k, v) + 0.1 * v
            bar.update(running)
            if (cluster.leader and options.checkpoint_every and (step + 1) % options.checkpoint_every == 0
                    and step + 1 < steps):
                _save_checkpoint(ckpt_dir, key, step + 1, model, objective, opt, sched)
        else:
            step = steps
    finally:
        bar.close()
        model.max_seq_length = saved_len
        model.eval()
        for tap in (student_tap, teacher_tap):
            if tap is not None:
                tap.close()
    if stopped == "time budget":
        log.warning("time budget of %.0f s reached after %d of %d steps", options.time_budget_s, step, steps)
    return {"steps": step, "planned_steps": steps, "processes": cluster.world, "stopped": stopped, "resumed_from": start,
            "seconds": round(time.perf_counter() - t0, 1), "loss": {k: round(v, 5) for k, v in running.items()}}


def _batch_tensors(model, batch: list[Example], objective, teacher_vectors, teacher_query_vectors, teacher_lexical,
                   previous_model) -> tuple[StepTensors, dict]:
    """The student's embeddings of a batch's queries and candidates with the targets the objective's terms
    compare them to, and the documents' tokenizer features (the attention term runs the teacher on the
    same tokens)."""
    device, cands = model.device, len(batch[0].docs)
    queries = [e.query for e in batch]
    docs = [d for e in batch for d in e.docs]
    q_emb, _ = _encode(model, queries, device, "query")
    d_emb, d_features = _encode(model, docs, device)
    tensors = StepTensors(
        query=q_emb, docs=d_emb.view(len(batch), cands, -1),
        teacher_scores=torch.tensor([e.scores for e in batch], dtype=torch.float32, device=device))
    if teacher_vectors is not None and (objective.needs_teacher_embeddings or "kl" in objective.weights):
        tq = torch.from_numpy((teacher_query_vectors or teacher_vectors)(queries)).to(device)
        td = torch.from_numpy(teacher_vectors(docs)).to(device)
        tensors.teacher_query, tensors.teacher_docs = tq, td.view(len(batch), cands, -1)
        extra = teacher_lexical(queries, docs) if teacher_lexical is not None else None
        if extra is not None:
            tensors.teacher_lexical = torch.from_numpy(extra).to(device)
    if previous_model is not None and "previous" in objective.weights:
        with torch.no_grad():
            pq, _ = _encode(previous_model, queries, device, "query")
            pd, _ = _encode(previous_model, docs, device)
        tensors.previous_query, tensors.previous_docs = pq, pd.view(len(batch), cands, -1)
    return tensors, d_features


def _save_checkpoint(ckpt_dir: Path, key: str, step: int, model, objective, opt, sched) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / "state.pt.tmp"
    torch.save({"key": key, "step": step, "model": model.state_dict(), "objective": objective.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp)
    os.replace(tmp, ckpt_dir / "state.pt")
