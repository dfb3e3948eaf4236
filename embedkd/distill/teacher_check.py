"""Is the teacher worth copying? Rerank the miner's dev candidates with it and compare.

A student learns the teacher's orderings, good or bad: a cross-encoder trained too briefly reranked
SciFact to nDCG@10 0.339 against the first stage's 0.645, and its student collapsed to 0.019 (see
docs/distill.md). So before training, the teacher reranks the miner's top-`depth` for held-out dev
queries (labelled, never trained on) and the run refuses a teacher that orders them clearly worse
than the miner does: by more than 0.01 nDCG@10 and more than two standard errors of the paired
per-query difference, so a teacher merely level with the miner is not refused on dev-set noise.
Costs `max_queries x depth` teacher scores (cached like any other).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from embedkd.evaluation.metrics import per_query_metrics
from indexer.errors import UserError

__all__ = ["TeacherCheck", "check_teacher", "teacher_verdict"]

TOLERANCE = 0.01  # nDCG@10 a teacher may always trail the miner by


@dataclass
class TeacherCheck:
    teacher_ndcg: float
    miner_ndcg: float
    queries: int
    depth: int
    diff_se: float = 0.0  # standard error of the mean per-query difference (teacher - miner)

    def as_dict(self) -> dict:
        return {"teacher_ndcg@10": self.teacher_ndcg, "miner_ndcg@10": self.miner_ndcg,
                "diff_se": self.diff_se, "queries": self.queries, "depth": self.depth}


def check_teacher(score: Callable[[str, list[str]], Sequence[float]], queries: dict[str, str],
                  corpus: dict[str, str], candidates: dict[str, list[str]], qrels: dict[str, dict[str, int]],
                  depth: int = 20, max_queries: int = 64) -> TeacherCheck:
    """nDCG@10 of the miner's order and of the teacher's rerank of the same top-`depth` candidates.

    `candidates` are the miner's ranked ids per query; `score(query, documents)` is the teacher's.
    Queries are taken in sorted id order, so the check is the same on every run.
    """
    qids = sorted(q for q in qrels if q in queries and candidates.get(q))[:max_queries]
    if not qids:
        raise UserError("no dev queries with mined candidates to check the teacher on; "
                        "the data's train qrels need more queries")
    miner_run, teacher_run = {}, {}
    for q in qids:
        docs = candidates[q][:depth]
        miner_run[q] = {d: float(depth - i) for i, d in enumerate(docs)}
        scores = score(queries[q], [corpus[d] for d in docs])
        teacher_run[q] = {d: float(s) for d, s in zip(docs, scores)}
    judged = {q: qrels[q] for q in qids}
    t = {q: v["ndcg@10"] for q, v in per_query_metrics(teacher_run, judged).items()}
    m = {q: v["ndcg@10"] for q, v in per_query_metrics(miner_run, judged).items()}
    diff = np.array([t[q] - m[q] for q in t])
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("inf")
    return TeacherCheck(float(np.mean(list(t.values()))), float(np.mean(list(m.values()))), len(qids), depth, se)


def teacher_verdict(check: TeacherCheck, tolerance: float = TOLERANCE) -> str | None:
    """None when the teacher may be distilled, else the reason to refuse it (one line)."""
    if check.teacher_ndcg >= check.miner_ndcg - max(tolerance, 2 * check.diff_se):
        return None
    return (f"the teacher reranks {check.queries} held-out dev queries worse than the first-stage miner it would "
            f"improve on (nDCG@10 {check.teacher_ndcg:.3f} vs {check.miner_ndcg:.3f}), so the student would learn "
            "worse orderings; train the teacher longer (embedkd teacher train --epochs ...), name a stronger one, "
            "or pass --allow-weak-teacher to distill it anyway")
