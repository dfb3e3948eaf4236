"""MiniLM (Wang et al. 2020) last-layer distillation: self-attention distributions and value relations.

Both are KL(teacher || student) between row-wise softmaxes of scaled dot products inside each head,
so teacher and student may differ in hidden size as long as both split into the same number of
relation heads (MiniLMv2's trick). Padded key positions are masked; padded query rows are ignored.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["attention_relation_loss", "relation_kl", "value_relation_loss"]


def _relation_logits(a: Tensor, b: Tensor, heads: int) -> Tensor:
    """(B, L, H) x (B, L, H) -> (B, heads, L, L) scaled dot products per head."""
    bsz, length, hidden = a.shape
    if hidden % heads:
        raise ValueError(f"hidden size {hidden} does not split into {heads} relation heads; pick a divisor")
    dh = hidden // heads
    a = a.view(bsz, length, heads, dh).transpose(1, 2)
    b = b.view(bsz, length, heads, dh).transpose(1, 2)
    return a @ b.transpose(-1, -2) / math.sqrt(dh)


def relation_kl(student_a: Tensor, student_b: Tensor, teacher_a: Tensor, teacher_b: Tensor,
                attention_mask: Tensor, heads: int) -> Tensor:
    """Mean over heads and real query tokens of KL(softmax(teacher a·b) || softmax(student a·b))."""
    if student_a.shape[:2] != teacher_a.shape[:2]:
        raise ValueError(
            f"student and teacher see different token sequences ({tuple(student_a.shape[:2])} vs "
            f"{tuple(teacher_a.shape[:2])}); attention distillation needs the same tokenizer and inputs"
        )
    mask = attention_mask.bool()
    key_mask = mask[:, None, None, :]
    neg_inf = torch.finfo(student_a.dtype).min
    s = _relation_logits(student_a, student_b, heads).masked_fill(~key_mask, neg_inf)
    t = _relation_logits(teacher_a.detach(), teacher_b.detach(), heads).to(s.dtype).masked_fill(~key_mask, neg_inf)
    log_q = torch.log_softmax(s, dim=-1)
    log_p = torch.log_softmax(t, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).masked_fill(~key_mask, 0.0).sum(-1)  # (B, heads, L)
    rows = mask[:, None, :].expand_as(kl)
    return kl[rows].mean()


def attention_relation_loss(student: dict[str, Tensor], teacher: dict[str, Tensor], attention_mask: Tensor,
                            heads: int) -> Tensor:
    """Self-attention distributions: relation of queries to keys."""
    return relation_kl(student["query"], student["key"], teacher["query"], teacher["key"], attention_mask, heads)


def value_relation_loss(student: dict[str, Tensor], teacher: dict[str, Tensor], attention_mask: Tensor,
                        heads: int) -> Tensor:
    """Value relations: scaled dot products of the values with themselves."""
    return relation_kl(student["value"], student["value"], teacher["value"], teacher["value"], attention_mask, heads)
