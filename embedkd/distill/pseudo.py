"""Pseudo-queries: unlabelled training queries cut from the corpus, for the teacher to label.

What distillation has that label-only fine-tuning does not is a teacher that can score any
(query, document) pair, so the student can learn from queries nobody judged. Each pseudo-query is one
sentence of a sampled document (the Inverse Cloze Task's query, Lee et al. 2019); its source
document is the anchor positive, the miner's top candidates are its negatives, and the teacher's
scores over all of them (and the batch's other documents) are what the KL and Margin-MSE terms
transfer. Seeded; a document without a sentence of 4+ words gives none.
"""

from __future__ import annotations

import numpy as np

from embedkd.upgrade.sampling import split_sentences

__all__ = ["PREFIX", "pseudo_queries"]

PREFIX = "pseudo:"  # query ids of pseudo-queries: never collide with a dataset's own ids


def pseudo_queries(corpus: dict[str, str], count: int, seed: int = 0, exclude: set[str] | None = None
                   ) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Up to `count` (query id -> sentence, query id -> {source doc: 1}) from documents not in `exclude`
    (e.g. the evaluation split's relevant documents, so nothing is learnt about them from their text)."""
    if count <= 0:
        return {}, {}
    ids = sorted(d for d in corpus if not exclude or d not in exclude)
    rng = np.random.default_rng(seed)
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for pos in rng.permutation(len(ids)):
        doc = ids[int(pos)]
        sentences = split_sentences(corpus[doc])
        if not sentences:
            continue
        qid = f"{PREFIX}{doc}"
        queries[qid] = sentences[int(rng.integers(len(sentences)))]
        qrels[qid] = {doc: 1}
        if len(queries) >= count:
            break
    return queries, qrels
