"""A weighted sum of distillation terms, computed from one student forward per step.

Terms (names users give in `--loss`, e.g. `cosine+margin-mse` or `cosine=1,kl=0.5`):
- `margin-mse`: Margin-MSE (Hofstätter et al. 2020), sentence-transformers' MarginMSELoss.
- `kl`: listwise KL over positive + mined negatives + in-batch documents, with a temperature
  (`listwise_kl`); in-batch pairs are used when the teacher's embeddings score them (bi-encoder teacher).
- `mse` / `cosine`: embedding distillation to a bi-encoder teacher, sentence-transformers'
  EmbedDistillLoss (a learned projection when the dimensions differ).
- `attention`: MiniLM's last-layer self-attention + value-relation distillation.
- `labels`: label-only contrastive fine-tuning (MultipleNegativesRankingLoss), the baseline.
- `previous`: embedding distillation from a previous model version (issue 4's QDC stability term).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from indexer.errors import UserError

from .listwise_kl import listwise_kl
from .minilm import attention_relation_loss, value_relation_loss
from .previous import previous_model_loss

__all__ = ["EMBEDDING_TERMS", "TERMS", "DistillObjective", "StepTensors", "parse_loss_spec"]

TERMS = ("margin-mse", "kl", "mse", "cosine", "attention", "labels", "previous")
EMBEDDING_TERMS = ("mse", "cosine", "attention")  # need a bi-encoder teacher


def parse_loss_spec(spec: str) -> dict[str, float]:
    """`cosine+margin-mse` or `cosine=1,kl=0.5` -> {term: weight}."""
    weights: dict[str, float] = {}
    for part in re.split(r"[+,]", spec.strip()):
        part = part.strip()
        if not part:
            continue
        name, _, weight = part.partition("=")
        name = name.strip().lower()
        if name not in TERMS or name == "previous":
            raise UserError(f"loss term {name!r} is unknown; use {', '.join(t for t in TERMS if t != 'previous')}")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise UserError(f"loss weight {weight!r} for {name} is not a number; write e.g. {name}=0.5") from None
        if w < 0 or not math.isfinite(w):
            raise UserError(f"loss weight for {name} must be a finite non-negative number, got {weight}")
        weights[name] = weights.get(name, 0.0) + w
    if not weights:
        raise UserError(f"loss spec {spec!r} names no term; e.g. --loss cosine+margin-mse")
    return weights


@dataclass
class StepTensors:
    """What one training step gives the objective. B queries, C candidates each (positive first)."""

    query: Tensor  # (B, d) student query embeddings (normalized)
    docs: Tensor  # (B, C, d) student document embeddings
    teacher_scores: Tensor | None = None  # (B, C) teacher scores of each query's own candidates
    teacher_query: Tensor | None = None  # (B, dt) bi-encoder teacher embeddings
    teacher_docs: Tensor | None = None  # (B, C, dt)
    teacher_lexical: Tensor | None = None  # (B, B*C) added to the teacher's in-batch cosines (fused BM25)
    student_relations: dict[str, Tensor] | None = None  # last-layer query/key/value (n, L, h)
    teacher_relations: dict[str, Tensor] | None = None
    relation_mask: Tensor | None = None  # (n, L) attention mask of the texts behind the relations
    previous_query: Tensor | None = None  # (B, d) previous-model embeddings, for the `previous` term
    previous_docs: Tensor | None = None  # (B, C, d)


class DistillObjective(nn.Module):
    """Weighted sum of terms. Parameters it owns (projection, score scale) train with the student."""

    def __init__(self, model, weights: dict[str, float], temperature: float = 0.05,
                 score_scale: float = 1.0, learn_scale: bool = False, teacher_dim: int | None = None,
                 relation_heads: int = 12, previous_metric: str = "cosine") -> None:
        super().__init__()
        from sentence_transformers.sentence_transformer.losses import (
            EmbedDistillLoss,
            MarginMSELoss,
            MultipleNegativesRankingLoss,
        )

        unknown = set(weights) - set(TERMS)
        if unknown:
            raise UserError(f"unknown loss terms {sorted(unknown)}; use {', '.join(TERMS)}")
        self.weights = {k: float(v) for k, v in weights.items() if v > 0}
        self.temperature = temperature
        self.relation_heads = relation_heads
        self.previous_metric = previous_metric
        # Student scores are cosines; `score_scale` maps them onto the teacher's score range
        # (1 for a bi-encoder teacher, learned for a cross-encoder's logits).
        self.log_scale = nn.Parameter(torch.tensor(math.log(score_scale)), requires_grad=learn_scale)
        self.margin_mse = MarginMSELoss(model)
        self.mnrl = MultipleNegativesRankingLoss(model)
        student_dim = model.get_embedding_dimension()
        projection = teacher_dim if teacher_dim is not None and teacher_dim != student_dim else None
        self.embed_mse = EmbedDistillLoss(model, distance_metric="mse", projection_dim=projection)
        self.embed_cos = EmbedDistillLoss(model, distance_metric="cosine", projection_dim=projection)
        if projection is not None:  # one projection shared by both metrics
            self.embed_cos.projection = self.embed_mse.projection
        for loss in (self.margin_mse, self.mnrl, self.embed_mse, self.embed_cos):
            loss._modules.pop("model", None)  # keep the student out of this module's parameters
            object.__setattr__(loss, "model", model)

    @property
    def needs_teacher_embeddings(self) -> bool:
        return any(t in self.weights for t in ("mse", "cosine"))

    @property
    def needs_relations(self) -> bool:
        return "attention" in self.weights

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, step: StepTensors) -> tuple[Tensor, dict[str, float]]:
        parts: dict[str, Tensor] = {}
        bsz, cands, _ = step.docs.shape
        columns = [step.query] + [step.docs[:, i] for i in range(cands)]
        scale = self.log_scale.exp()
        for name in self.weights:
            if name == "margin-mse":
                parts[name] = self.margin_mse.compute_loss_from_embeddings(
                    [step.query * scale] + columns[1:], _need(step.teacher_scores, name))
            elif name == "kl":
                parts[name] = self._kl(step, scale)
            elif name in ("mse", "cosine"):
                tq, td = _need(step.teacher_query, name), _need(step.teacher_docs, name)
                teacher_cols = [tq] + [td[:, i] for i in range(cands)]
                loss = self.embed_mse if name == "mse" else self.embed_cos
                parts[name] = loss.compute_loss_from_embeddings(columns, teacher_cols)
            elif name == "attention":
                s, t = _need(step.student_relations, name), _need(step.teacher_relations, name)
                mask = _need(step.relation_mask, name)
                parts[name] = (attention_relation_loss(s, t, mask, self.relation_heads)
                               + value_relation_loss(s, t, mask, self.relation_heads))
            elif name == "labels":
                parts[name] = self.mnrl.compute_loss_from_embeddings(columns, torch.zeros(bsz))
            elif name == "previous":
                pq, pd = _need(step.previous_query, name), _need(step.previous_docs, name)
                parts[name] = (previous_model_loss(step.query, pq, self.previous_metric)
                               + previous_model_loss(step.docs.flatten(0, 1), pd.flatten(0, 1), self.previous_metric)) / 2
        total = sum(self.weights[k] * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def _kl(self, step: StepTensors, scale: Tensor) -> Tensor:
        bsz, cands, _ = step.docs.shape
        all_docs = step.docs.reshape(bsz * cands, -1)
        student = (step.query * scale) @ all_docs.T  # (B, B*C): own candidates and in-batch documents
        if step.teacher_query is not None and step.teacher_docs is not None:
            teacher = step.teacher_query @ step.teacher_docs.reshape(bsz * cands, -1).T
            if step.teacher_lexical is not None:
                teacher = teacher + step.teacher_lexical
            return listwise_kl(student, teacher.to(student.dtype), self.temperature)
        scores = _need(step.teacher_scores, "kl")  # only own candidates were scored: mask the rest
        own = torch.zeros(bsz, bsz * cands, dtype=torch.bool, device=student.device)
        teacher = torch.zeros_like(student)
        for i in range(bsz):
            own[i, i * cands:(i + 1) * cands] = True
            teacher[i, i * cands:(i + 1) * cands] = scores[i].to(student.dtype)
        return listwise_kl(student, teacher, self.temperature, mask=own)


def _need(value, term: str):
    if value is None:
        raise UserError(f"loss term {term!r} needs inputs this run does not have (e.g. a bi-encoder teacher's "
                        "embeddings for mse/cosine/attention); choose another --loss")
    return value
