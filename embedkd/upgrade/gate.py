"""The safety gate: activate an adapter only where the held-out check says search gets no worse.

Held-out, query-like pieces (from documents the fit never saw) are searched three ways over the same
sampled documents: v1 query among v1 vectors (today), adapted v2 query among v1 vectors (the upgrade),
and v2 query among v2 vectors (what a full reindex would give). The gate refuses when

1. the adapted queries agree with the reindex's top-k *less* than v1's queries do (the adapter moves
   search away from v2 instead of toward it), or
2. the adapted queries find the pieces' own documents (nDCG@10) worse than v1 does, by more than
   `tolerance` (the adapter makes a label-free retrieval task worse): among the whole index's stored
   vectors where the fit could read them (`self_*_index`), else among the sampled documents, or
3. with labelled queries (`--eval-data`), adapted nDCG@10 is below v1's by more than `tolerance`.

A blend (v1's query mixed with the mapped v2 query, `fit.blend_candidates`; offered only with labelled
queries) must beat v1 by more than two standard errors of the paired gain, on held-out pieces' agreement
(rule 1) and on the labelled queries (rule 3): a blend no better than v1 costs a second encoding of every
query for nothing, and its weight is picked on those same queries.
Rule 1 is the one the design asks for; rules 2 and 3 guard "never worse than v1" when v2 itself is
worse than v1, where agreeing with the reindex is no virtue. With labelled queries, rule 3 replaces
rule 2: a piece finding its own document is a label-free stand-in for relevance, and it can disagree
with real queries (measured on SciFact: a fine-tuned v2 that is +10 nDCG@10 on labelled queries is
0.8 points *worse* than v1 at it), so where the real measurement exists the stand-in does not veto it.
Rule 2 is a partial guard: a v2 fine-tuned on other data that forgot some of the index's kind (-0.8
nDCG@10 on 3,000 real queries) found the pieces' documents as well as v1 did, and its adapter passed
at -0.9; with 300 labelled queries, rule 3 refused it (docs/upgrade.md, *A second seed*).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TOLERANCE", "GateDecision", "decide"]

TOLERANCE = 0.005


@dataclass(frozen=True)
class GateDecision:
    accepted: bool
    reason: str


def decide(figures: dict[str, float], tolerance: float = TOLERANCE) -> GateDecision:
    """Decide from held-out figures (`heldout.adapter_figures`, plus `ndcg_v1`/`ndcg_adapted` with labels)."""
    a, v = figures["agree_adapted"], figures["agree_v1"]
    if a < v:
        return GateDecision(False, (
            f"the adapted queries agree with a reindex on {a:.3f} of their top-10 held-out neighbours, "
            f"less than v1 itself does ({v:.3f}), so the adapter would not bring search closer to the new "
            "model; keep v1, or run a backfill to re-embed the index with the new model"))
    if "blend" in figures and a - v <= 2 * figures.get("agree_gain_se", 0.0):
        return GateDecision(False, (
            f"blending with v1's query agrees with a reindex on {a:.3f} of top-10, not clearly more than v1 "
            f"itself ({v:.3f}), which does not pay for encoding each query twice; keep v1, or run a backfill"))
    labelled = "ndcg_adapted" in figures and "ndcg_v1" in figures
    suffix = "_index" if "self_adapted_index" in figures else ""
    sa, sv = figures["self_adapted" + suffix], figures["self_v1" + suffix]
    if not labelled and sa < sv - tolerance:
        where = " among the index's documents" if suffix else ""
        return GateDecision(False, (
            f"the adapted queries find held-out pieces' own documents{where} worse than v1 (nDCG@10 {sa:.3f} "
            f"vs {sv:.3f}), so search would get worse; keep v1, or run a backfill to re-embed the index"))
    if labelled:
        na, nv = figures["ndcg_adapted"], figures["ndcg_v1"]
        if "blend" in figures and na - nv <= 2 * figures.get("ndcg_gain_se", 0.0):
            return GateDecision(False, (
                f"on the labelled queries the best blend scores nDCG@10 {na:.4f}, not clearly above v1's {nv:.4f} "
                "(by two standard errors), which does not pay for encoding each query twice; keep v1, or run a "
                "backfill"))
        if na < nv - tolerance:
            return GateDecision(False, (
                f"on the labelled queries the adapter scores nDCG@10 {na:.4f}, below v1's {nv:.4f}; keep v1, "
                "or run a backfill to re-embed the index with the new model"))
    return GateDecision(True, f"adapted queries agree with a reindex on {a:.3f} of top-10 (v1: {v:.3f})")
