"""`distill`: teacher scores + mined hard negatives -> trained student, saved, evaluated, registered.

One function that the CLI calls; every step it composes lives in its own module.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedkd import ddp
from embedkd.bm25 import LexicalScorer, bm25_run, check_language
from embedkd.out_dir import output_folder
from indexer.encoder import ModelRecord
from indexer.errors import UserError

from .data import BeirData, load_beir, split_dev
from .general import applies_by_default, read_general_texts, resumable_stage, teacher_stream
from .lexical import fused_run
from .log_queries import PREFIX as LOG_PREFIX
from .log_queries import read_log_queries, teacher_positives
from .losses import DistillObjective, parse_loss_spec
from .losses.objective import EMBEDDING_TERMS
from .negatives import (
    VectorLookupEncoder,
    ensure_mining_index,
    sample_negatives_lazily,
    search_candidates,
    select_negatives,
)
from .prune import is_prune_spec, load_student, parse_prune_spec
from .pseudo import pseudo_queries
from .retrieval import encode_texts, evaluate_vectors, ir_metrics
from .teacher_check import check_teacher, teacher_verdict
from .teachers import BiEncoderTeacher, Teacher, load_teacher
from .train import Example, TrainOptions, train_student

__all__ = ["DEFAULT_LOSS", "add_lexical_candidates", "build_examples", "distill", "evaluate_student",
           "mining_candidates"]

log = logging.getLogger(__name__)

DEFAULT_LOSS = "cosine+kl"
# `--lexical auto` tries these BM25 weights on the dev split (0: the teacher alone)
LEXICAL_GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


class _VectorTable:
    """text -> row of a stacked embedding matrix (a bi-encoder teacher's cached vectors)."""

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self.rows = {t: i for i, t in enumerate(texts)}
        self.vectors = vectors

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.vectors[[self.rows[t] for t in texts]]


def mining_candidates(catalog, data: BeirData, miner: BiEncoderTeacher, query_ids: list[str], k: int,
                      table: _VectorTable, query_table: _VectorTable) -> dict[str, list[str]]:
    """Top-k corpus ids per query from an `indexer` FAISS index of the corpus built with the miner."""
    doc_texts = list(data.corpus.values())
    record = ModelRecord(name=miner.name, source=miner.name, dimension=table.vectors.shape[1],
                         fingerprint=miner.fingerprint, info={"role": "distillation miner"})
    encoder = VectorLookupEncoder(record, doc_texts, table(doc_texts), miner.encode)
    name = f"distill-mine-{miner.fingerprint[:12]}-{data.fingerprint[:12]}"
    if miner.document_tokens is not None:  # other vectors than a full-length miner's: another index
        name += f"-t{miner.document_tokens}"
    ensure_mining_index(catalog, name, encoder, data.corpus, fingerprint=data.fingerprint)
    qvecs = query_table([data.queries[q] for q in query_ids])
    hits = search_candidates(catalog, name, qvecs, k)
    return {q: [d for d, _ in row] for q, row in zip(query_ids, hits)}


def build_examples(data: BeirData, qrels: dict[str, dict[str, int]], candidates: dict[str, list[str]],
                   teacher: Teacher, negatives: int, seed: int = 0, margin: float = 0.0) -> tuple[list[Example], dict]:
    """One example per (query, positive): the positive + `negatives` mined negatives, teacher-scored."""
    rng = np.random.default_rng(seed)
    doc_ids = list(data.corpus)
    examples: list[Example] = []
    dropped = filled = 0
    for qid in sorted(qrels):
        positives = {d for d, g in qrels[qid].items() if g > 0}
        if not positives:
            continue
        query = data.queries[qid]
        cands = [d for d in candidates.get(qid, []) if d not in positives]
        # A bi-encoder scores every candidate from cached vectors for free; a cross-encoder pays a
        # forward pass per pair, so it scores candidates in random order only until enough pass.
        lazy = teacher.kind == "cross-encoder"
        cand_scores = None if lazy else teacher.score(query, [data.corpus[d] for d in cands])
        scored: dict[str, float] = {}
        for pos in sorted(positives):
            pos_score = float(teacher.score(query, [data.corpus[pos]])[0])
            if lazy:
                negs, n_dropped = sample_negatives_lazily(
                    cands, lambda ds: teacher.score(query, [data.corpus[d] for d in ds]), pos_score, negatives,
                    rng, margin, scored)
                dropped += n_dropped
            else:
                negs = select_negatives(cands, cand_scores, pos_score, positives, negatives, rng, margin)
                dropped += int((cand_scores >= pos_score - margin).sum())
            while len(negs) < negatives:  # too few left after filtering: random corpus documents
                d = doc_ids[int(rng.integers(len(doc_ids)))]
                if d not in positives and d not in negs:
                    negs.append(d)
                    filled += 1
            docs = [data.corpus[pos]] + [data.corpus[d] for d in negs]
            scores = [pos_score] + [float(s) for s in teacher.score(query, docs[1:])]
            examples.append(Example(query=query, docs=docs, scores=scores))
    return examples, {"false_negatives_dropped": dropped, "random_fill": filled}


def evaluate_student(model, data: BeirData, splits: dict[str, dict[str, dict[str, int]]],
                     doc_vecs: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Metrics per split from one corpus encoding (pass `doc_vecs` to reuse one)."""
    doc_ids = list(data.corpus)
    if doc_vecs is None:
        doc_vecs = encode_texts(model, list(data.corpus.values()))
    out = {}
    for split, qrels in splits.items():
        qids = [q for q in qrels if q in data.queries]
        qvecs = encode_texts(model, [data.queries[q] for q in qids], role="query")
        out[split] = evaluate_vectors(qids, qvecs, doc_ids, doc_vecs, qrels)
    return out


def distill(teacher: str, student: str, data: str, out: str, loss: str = DEFAULT_LOSS, *,
            teacher_kind: str = "auto", miner: str | None = None, options: TrainOptions | None = None,
            negatives: int = 3, mine_k: int = 50, temperature: float = 0.05, eval_split: str | None = "test",
            dev_fraction: float = 0.1, device: str | None = None, settings=None, register: bool = True,
            progress: bool = True, time_budget_s: float | None = None, previous: str | None = None,
            previous_weight: float = 1.0, allow_weak_teacher: bool = False, pseudo: int = 0,
            lexical: float | str = 0.0, lexical_language: str = "english", mine_lexical: int = 0,
            queries: str | None = None, general_texts: str | None = None, general_steps: int | None = None,
            general_weight: float = 0.0, general_max_length: int = 64) -> dict:
    """Distill `teacher` into `student` on the BEIR folder `data`; save to `out`; evaluate; register.

    `time_budget_s` bounds the whole run: training stops early enough to leave time for the final
    evaluation, estimated from the student's measured encoding speed.
    `previous` (a model path, issue 4's continual training) adds the `previous` term: embedding
    distillation from that frozen model, with `previous_weight`.
    A teacher other than the miner (a cross-encoder) must not rerank the miner's dev candidates
    clearly worse than the miner orders them, unless `allow_weak_teacher` (`teacher_check`).
    `pseudo` adds that many unlabelled pseudo-queries cut from the corpus (`pseudo.py`) for the
    teacher to label; documents judged in the dev or evaluation split never give one.
    `lexical` (a weight, or "auto" to pick one on the dev split) fuses BM25 over the corpus into a
    bi-encoder teacher's scores (`lexical.py`), tokenised for `lexical_language`; the student stays dense.
    `mine_lexical` adds each training query's top-N BM25 documents to its negative candidates (hybrid
    mining: lexically hard negatives that a dense miner ranks low), filtered by the teacher like the rest.
    `queries` is a file of unlabelled queries (a search log, `log_queries.py`): each is trained on with
    the teacher's top document as its positive; with it (or `pseudo`) `data` needs no train qrels.
    `general_texts` (`general.py`: a file of unlabelled texts, or a packaged set's name such as "wordnet")
    trains the student to match the teacher's embeddings of them: `general_steps` steps before task
    distillation (None: GENERAL_STEPS_PER_STEP per planned task step; at most a third of the time
    budget), then `general_weight` x that loss beside the task loss at every step. "auto" is the
    packaged WordNet texts where a bi-encoder teacher embeds in the student's dimension and the loss
    distils from it (not `labels` alone), else none.
    """
    from embedkd.text_encoder import default_device
    from indexer.context import open_catalog
    from indexer.settings import load_settings

    t_start = time.perf_counter()
    options = options or TrainOptions()
    cluster = ddp.start(device or default_device())  # under torchrun: this process's rank and GPU
    device = str(cluster.device)
    settings = settings or load_settings()
    cache_dir = settings.cache_dir / "distill"
    weights = parse_loss_spec(loss)
    if previous is not None:
        weights["previous"] = previous_weight
    out_dir = output_folder(out)
    if general_texts == "auto" and general_steps == 0 and not general_weight:
        general_texts = None  # no stage and no term: the packaged default has nothing to do
    lexical = _check_arguments(out_dir, student, lexical, mine_lexical, lexical_language, general_texts,
                               general_steps, general_weight)
    if not cluster.leader:  # rank 0 prepares first (teacher vectors and scores, the mining index); the rest read
        ddp.wait_for_leader(cluster)  # its caches, so every rank trains on the same examples
    log_texts = read_log_queries(queries) if queries else []
    general_auto = general_texts == "auto"
    # a user's file is read now, so that a bad one fails before any model loads; "auto" once it applies
    general_list = read_general_texts(general_texts) if general_texts and not general_auto else []
    beir = load_beir(data)
    train_qrels, dev_qrels, eval_split, log_ids, n_pseudo = _training_queries(
        beir, log_texts, str(queries), pseudo, dev_fraction, eval_split, options.seed)
    t, model, lineage, previous_model = _load_models(teacher, teacher_kind, student, previous, weights, bool(lexical),
                                                     device, cache_dir)
    lineage["seed"] = options.seed  # with the data, the loss and the steps: enough to retrain the same student
    if device.startswith("cpu"):  # CPU float sums round by thread count: at another count the same seed differs
        lineage["threads"] = torch.get_num_threads()  # in the last bits (docs/distill.md, Seed)
    if general_auto and applies_by_default(t, model, weights):
        general_list = read_general_texts("wordnet")
    general = teacher_stream(general_list, t, model, general_max_length, options.seed) if general_list else None

    mine_with = _miner(t, miner or lineage["student_base"], device, cache_dir, options.max_length)
    doc_texts = list(beir.corpus.values())
    log.info("encoding the corpus with %s (cached after the first run)", mine_with.name)
    query_ids = sorted(q for q in train_qrels if q in beir.queries) + log_ids
    all_qids = sorted(set(query_ids) | set(dev_qrels) | set(beir.qrels.get(eval_split or "", {})))
    table = _VectorTable(doc_texts, mine_with.encode(doc_texts))
    qtexts = [beir.queries[q] for q in all_qids]
    qtable = _VectorTable(qtexts, mine_with.encode_queries(qtexts))

    catalog = open_catalog(settings)
    try:
        # dev queries are mined too when the teacher is checked on them (one search for both)
        check_ids = sorted(q for q in dev_qrels if q in beir.queries) if t is not mine_with else []
        candidates = mining_candidates(catalog, beir, mine_with, query_ids + check_ids, mine_k, table,
                                       qtable)
        if t is not mine_with and not check_ids:
            log.warning("no labelled dev queries: the teacher is not checked against the miner before training")
        teacher_check = _check_teacher(t, beir, candidates, dev_qrels, allow_weak_teacher) if check_ids else None
        lexical_info = None
        scorer = LexicalScorer(doc_texts, language=lexical_language) if lexical or mine_lexical else None
        if isinstance(t, BiEncoderTeacher) and lexical:
            lexical_info = _fuse_lexical(t, beir, lexical, table, qtable, dev_qrels, scorer)
            lineage["lexical"] = lexical_info
        if log_ids:  # the teacher's top document is each logged query's positive
            train_qrels = {**train_qrels, **teacher_positives(log_ids, beir.queries, candidates, beir.corpus,
                                                              t.score)}
        added = 0
        if mine_lexical:
            candidates, added = add_lexical_candidates(candidates, beir, query_ids, scorer, mine_lexical)
            lineage["mine_lexical"] = {"per_query": mine_lexical, "language": lexical_language,
                                       "candidates_added": added}
        examples, mining = build_examples(beir, train_qrels, candidates, t, negatives, options.seed)
        mining["lexical_candidates_added"] = added
        teacher_dim = table.vectors.shape[1] if isinstance(t, BiEncoderTeacher) else None
        # from here the run draws random numbers (a projection's init, the general stage's dropout): seeded,
        # so that the lineage's seed retrains the same student
        torch.manual_seed(options.seed)
        objective = DistillObjective(
            model, weights, temperature=temperature if isinstance(t, BiEncoderTeacher) else 1.0,
            score_scale=1.0 if isinstance(t, BiEncoderTeacher) else 20.0,
            learn_scale=not isinstance(t, BiEncoderTeacher), teacher_dim=teacher_dim,
            relation_heads=_heads(model)).to(device)
        general_info = None
        if general is not None:
            if general_steps is None:
                general_steps = GENERAL_STEPS_PER_STEP * options.total_steps(len(examples))
            general_info = {"file": "wordnet" if general_auto else str(general_texts), "texts": len(general.texts),
                            "fingerprint": general.fingerprint, "steps": general_steps,
                            "weight": general_weight, "max_length": general_max_length}
            if general_steps:
                cap = time_budget_s / 3 if time_budget_s else None
                general_info["stage"] = resumable_stage(model, general, general_steps, cap, general_info, options.seed,
                                                        options.lr, out_dir / "checkpoint", progress)
            lineage["general_texts"] = general_info
        if time_budget_s is not None:
            _set_training_budget(options, model, beir, 1 + int(bool(eval_split)), time_budget_s, t_start)
        options.extra = {"teacher": t.fingerprint, "data": beir.fingerprint, "student": student,
                         "negatives": negatives, "mine_k": mine_k, "pseudo_queries": n_pseudo,
                         "lexical": lexical_info and lexical_info["weight"]}
        if log_ids:  # only when set, so checkpoints from before the option still resume
            options.extra["log_queries"] = len(log_ids)
            lineage["log_queries"] = {"file": str(queries), "count": len(log_ids)}
        if mine_lexical:  # only when set, so checkpoints from before the option still resume
            options.extra["mine_lexical"] = mine_lexical
        if general_info:
            options.extra["general"] = {k: general_info[k] for k in ("fingerprint", "steps", "weight")}
        out_dir.mkdir(parents=True, exist_ok=True)
        if cluster.leader:
            ddp.wait_for_leader(cluster)  # prepared: the other ranks may go
        training = train_student(model, examples, objective, options, out_dir,
                                 teacher_vectors=table if isinstance(t, BiEncoderTeacher) else None,
                                 teacher_query_vectors=qtable if isinstance(t, BiEncoderTeacher) else None,
                                 teacher_model=t.model if isinstance(t, BiEncoderTeacher) else None,
                                 teacher_lexical=t.lexical_matrix if isinstance(t, BiEncoderTeacher) else None,
                                 previous_model=previous_model, progress=progress,
                                 general=general, general_weight=general_weight,
                                 general_max_length=general_max_length, cluster=cluster)
        if not cluster.leader:  # rank 0 saves, evaluates and registers the student
            return {"rank": cluster.rank, **training}
        model.save(str(out_dir))
        shutil.rmtree(out_dir / "checkpoint", ignore_errors=True)

        splits = {"dev": dev_qrels} if dev_qrels else {}
        if eval_split:
            splits[eval_split] = beir.require(eval_split)
        metrics = evaluate_student(model, beir, splits)
        teacher_metrics = _teacher_metrics(t, beir, splits, table, qtable) if isinstance(t, BiEncoderTeacher) else None
        result = {
            "student": str(out_dir),
            "teacher": t.name,
            "teacher_kind": t.kind,
            "student_spec": student,
            "data": str(beir.path),
            "loss": weights,
            "train_examples": len(examples),
            "pseudo_queries": n_pseudo,
            "log_queries": len(log_ids),
            "negatives": negatives,
            **mining,
            **{k: v for k, v in training.items() if k != "loss"},
            "final_loss": training["loss"],
            "options": {k: v for k, v in asdict(options).items() if k != "extra"},
            "lineage": lineage,
            "metrics": metrics,
            "teacher_metrics": teacher_metrics,  # documents at teacher_document_tokens, as it taught
            "teacher_document_tokens": t.document_tokens if isinstance(t, BiEncoderTeacher) else None,
            "teacher_check": teacher_check,
            "lexical": lexical_info,
            "general_texts": general_info,
            "total_seconds": round(time.perf_counter() - t_start, 1),
        }
        if register:
            result["model_id"] = _register(catalog, out_dir, result, beir)
        (out_dir / "distill.json").write_text(json.dumps(result, indent=2, default=str))
        return result
    finally:
        catalog.close()
        ddp.stop(cluster)


def _training_queries(beir: BeirData, log_texts: list[str], log_source: str, pseudo: int, dev_fraction: float,
                      eval_split: str | None, seed: int) -> tuple[dict, dict, str | None, list[str], int]:
    """(train qrels, dev qrels, evaluation split or None, logged query ids, pseudo-query count): train qrels
    split into train and dev, plus logged queries and pseudo-queries (added to `beir.queries`); documents
    judged in the dev or evaluation split never give a pseudo-query."""
    if beir.qrels.get("train") or not (log_texts or pseudo):
        labelled = beir.require("train", alternative="without labels, give unlabelled queries with --queries FILE "
                                "for the teacher to label")
        train_qrels, dev_qrels = split_dev(labelled, dev_fraction, seed)
    else:  # unlabelled: the teacher labels logged queries / pseudo-queries; nothing to hold out as dev
        train_qrels, dev_qrels = {}, {}
        log.warning("%s has no train qrels: training on teacher-labelled queries only, no dev split", beir.path)
    if eval_split and not beir.qrels.get(eval_split):
        log.warning("%s has no qrels/%s.tsv; evaluating on the dev split only", beir.path, eval_split)
        eval_split = None
    held_out = (dev_qrels, beir.qrels.get(eval_split or "", {}))  # never trained on, nor their documents' text
    log_ids = _add_log_queries(beir, log_texts, held_out, log_source) if log_texts else []
    n_pseudo = 0
    if pseudo:
        judged = {d for qrels in held_out for rel in qrels.values() for d in rel}
        pq, pqrels = pseudo_queries(beir.corpus, pseudo, seed, exclude=judged)
        beir.queries.update(pq)
        train_qrels = {**train_qrels, **pqrels}
        n_pseudo = len(pq)
        log.info("added %d pseudo-queries from the corpus", n_pseudo)
    return train_qrels, dev_qrels, eval_split, log_ids, n_pseudo


def _load_models(teacher: str, teacher_kind: str, student: str, previous: str | None, weights: dict[str, float],
                 lexical: bool, device: str, cache_dir: Path) -> tuple[Teacher, Any, dict[str, Any], Any]:
    """(teacher, student, the student's lineage, the previous model or None), each checked against the loss."""
    from embedkd.text_encoder import load_sentence_transformer, role_prompts

    t = load_teacher(teacher, teacher_kind, device, cache_dir)
    if t.kind == "cross-encoder" and set(weights) & set(EMBEDDING_TERMS):
        raise UserError(f"loss terms {sorted(set(weights) & set(EMBEDDING_TERMS))} need a bi-encoder teacher's "
                        "embeddings; with a cross-encoder teacher use margin-mse, kl or labels")
    if lexical and t.kind != "bi-encoder":
        raise UserError("--lexical fuses BM25 into a bi-encoder teacher's cosine; a cross-encoder teacher "
                        "reads the words itself, so drop --lexical")
    model, lineage = load_student(student, device)
    # Role prompts (e5's "query: "/"passage: ") are used as the models use them at search time: the
    # teacher's for its targets, the student's (a prune keeps its base's) in its own forward passes.
    prompted = {who: p for who, p in (("teacher", role_prompts(t.model) if t.kind == "bi-encoder" else {}),
                                      ("student", role_prompts(model))) if p}
    if prompted:
        lineage["prompts"] = prompted
    previous_model = None
    if previous is not None:
        previous_model = load_sentence_transformer(previous, device).eval()
        if previous_model.get_embedding_dimension() != model.get_embedding_dimension():
            raise UserError(f"previous model {previous!r} embeds in {previous_model.get_embedding_dimension()} "
                            f"dimensions, the student in {model.get_embedding_dimension()}; they must match")
        lineage["previous"] = previous
    if "attention" in weights:
        _check_same_tokenizer(model, t)
    return t, model, lineage, previous_model


def _miner(t: Teacher, base: str, device: str, cache_dir: Path, max_length: int) -> BiEncoderTeacher:
    """The bi-encoder that mines negatives: the teacher itself, else `base` (the student's full, unpruned base
    unless the user names one)."""
    from embedkd.text_encoder import load_sentence_transformer

    if isinstance(t, BiEncoderTeacher):
        mine_with = t
    else:
        mine_with = BiEncoderTeacher(load_sentence_transformer(base, device), base)
        mine_with.use_cache(cache_dir)
    # Documents are encoded at the student's training length: the targets come from the text the
    # student sees, and a corpus of long documents costs half (SciFact at 128 instead of 256 tokens).
    mine_with.truncate_documents(max_length)
    return mine_with


# general-text stage steps per planned task step by default: 1,045 for SciFact's 209, which took 65% of the
# task stage's time on a 2-core CPU (WordNet's texts are short); docs/distill.md, *General text inside the default*
GENERAL_STEPS_PER_STEP = 5


def _add_log_queries(beir: BeirData, log_texts: list[str], held_out: tuple[dict, ...], source: str) -> list[str]:
    """Adds the logged queries to `beir.queries` under new ids (returned), leaving out any that is also a
    dev or evaluation query: training on it would make the reported figures a test on training data."""
    held = {" ".join(beir.queries[q].split()) for qrels in held_out for q in qrels if q in beir.queries}
    kept = [q for q in log_texts if q not in held]
    if len(kept) < len(log_texts):
        log.warning("%d logged queries are also dev/evaluation queries and were left out of training",
                    len(log_texts) - len(kept))
    if not kept:
        raise UserError(f"every query of --queries {source} is a dev or evaluation query of {beir.path}; "
                        "give queries that the evaluation does not use")
    log_ids = [f"{LOG_PREFIX}{i}" for i in range(len(kept))]
    beir.queries.update(zip(log_ids, kept))
    log.info("added %d logged queries for the teacher to label", len(log_ids))
    return log_ids


def _teacher_metrics(t: BiEncoderTeacher, beir: BeirData, splits: dict[str, dict[str, dict[str, int]]],
                     table: _VectorTable, qtable: _VectorTable) -> dict[str, dict[str, float]]:
    """The teacher's figures from its cached vectors; a BM25-fused teacher is what the student learnt from,
    so that is what is reported."""
    doc_vecs = table(list(beir.corpus.values()))
    out = {}
    for split, qrels in splits.items():
        qids = [q for q in qrels if q in beir.queries]
        qtexts = [beir.queries[q] for q in qids]
        if t.lexical is None:
            out[split] = evaluate_vectors(qids, qtable(qtexts), list(beir.corpus), doc_vecs, qrels)
        else:
            out[split] = ir_metrics(fused_run(qids, qtexts, qtable(qtexts), list(beir.corpus), doc_vecs,
                                              t.lexical, t.lexical_weight, qrels=qrels), qrels)
    return out


def _check_arguments(out_dir: Path, student: str, lexical: float | str | None, mine_lexical: int,
                     lexical_language: str, general_texts: str | None, general_steps: int | None,
                     general_weight: float) -> float | str:
    """Checks that need no model or data, so that a bad command fails at once; returns `lexical` parsed."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "checkpoint").is_dir():
        raise UserError(f"output folder {out_dir} exists and is not empty; choose a new --out")
    if is_prune_spec(student):
        parse_prune_spec(student)
    lexical = _parse_lexical(lexical)
    if mine_lexical < 0:
        raise UserError(f"--mine-lexical takes a count of BM25 candidates per query (0: off), got {mine_lexical}")
    if lexical or mine_lexical:
        check_language(lexical_language)
    elif lexical_language != "english":
        raise UserError("--lexical-language goes with --lexical or --mine-lexical; without them BM25 is not used")
    if (general_steps or 0) < 0 or general_weight < 0:
        raise UserError("--general-steps and --general-weight must be >= 0")
    if general_texts and general_steps == 0 and not general_weight:
        raise UserError("--general-texts is used by --general-steps N (a stage before distillation) and/or "
                        "--general-weight W (a term beside it; 0 unless given); both are 0, so give one or drop --general-texts")
    return lexical


def _parse_lexical(lexical: float | str | None) -> float | str:
    """'auto', or a weight in [0, 100] (0: no fusion)."""
    if lexical is None or lexical == "auto":
        return lexical or 0.0
    try:
        weight = float(lexical)
    except ValueError:
        raise UserError(f"--lexical takes a weight (e.g. 0.5) or 'auto', not {lexical!r}") from None
    if not 0 <= weight <= 100:
        raise UserError(f"--lexical weight must be between 0 and 100 (cosine units), got {weight}")
    return weight


def add_lexical_candidates(candidates: dict[str, list[str]], data: BeirData, query_ids: list[str],
                           scorer: LexicalScorer, per_query: int) -> tuple[dict[str, list[str]], int]:
    """Each query's dense candidates followed by those of its top-`per_query` BM25 documents the dense
    miner did not return; other queries' candidates unchanged. Returns them and how many were added."""
    doc_ids = list(data.corpus)
    bm25 = bm25_run(query_ids, [data.queries[q] for q in query_ids], doc_ids, scorer, k=per_query,
                    drop_identical=False)
    merged = dict(candidates)
    added = 0
    for q in query_ids:
        dense = candidates.get(q, [])
        seen = set(dense)
        extra = [d for d in bm25[q] if d not in seen]
        merged[q] = dense + extra
        added += len(extra)
    return merged, added


def _fuse_lexical(teacher: BiEncoderTeacher, beir: BeirData, lexical: float | str, table: _VectorTable,
                  qtable: _VectorTable, dev_qrels: dict[str, dict[str, int]], scorer: LexicalScorer) -> dict:
    """Fuse BM25 into `teacher`; with "auto", the weight of LEXICAL_GRID that ranks dev queries best."""
    doc_ids, doc_texts = list(beir.corpus), list(beir.corpus.values())
    info: dict = {"kind": "bm25", "language": scorer.language,
                  "normalised": "by the query's best score over the corpus"}
    if lexical == "auto":
        dev_ids = sorted(q for q in dev_qrels if q in beir.queries)
        if not dev_ids:
            raise UserError("--lexical auto picks its weight on the dev split, which is empty here; "
                            "give a weight instead (e.g. --lexical 0.5)")
        texts = [beir.queries[q] for q in dev_ids]
        qvecs, doc_vecs = qtable(texts), table(doc_texts)
        figures = {w: ir_metrics(fused_run(dev_ids, texts, qvecs, doc_ids, doc_vecs, scorer, w, qrels=dev_qrels),
                                 dev_qrels)["ndcg@10"] for w in LEXICAL_GRID}
        lexical = max(LEXICAL_GRID, key=lambda w: (round(figures[w], 6), -w))  # ties: the smaller weight
        info["dev_ndcg@10"] = {str(w): round(v, 4) for w, v in figures.items()}
        log.info("lexical weight %.2f picked on %d dev queries (%s)", lexical, len(dev_ids), info["dev_ndcg@10"])
    info["weight"] = float(lexical)
    teacher.fuse_lexical(scorer, float(lexical))
    return info


def _check_teacher(t: Teacher, beir: BeirData, candidates: dict[str, list[str]], dev_qrels: dict[str, dict[str, int]],
                   allow_weak_teacher: bool) -> dict:
    """A teacher other than the miner must not rerank the miner's dev candidates clearly worse than the miner
    orders them (`teacher_check`); refused unless `allow_weak_teacher`. Returns the check's figures."""
    check = check_teacher(t.score, beir.queries, beir.corpus, candidates, dev_qrels)
    log.info("teacher check on dev: teacher rerank nDCG@10 %.3f, miner %.3f (%d queries)",
             check.teacher_ndcg, check.miner_ndcg, check.queries)
    reason = teacher_verdict(check)
    if reason and not allow_weak_teacher:
        raise UserError(reason)
    if reason:
        log.warning("%s (continuing: --allow-weak-teacher)", reason)
    return check.as_dict()


def _set_training_budget(options: TrainOptions, model, beir: BeirData, eval_splits: int, time_budget_s: float,
                         t_start: float) -> None:
    """Training stops early enough to leave the final evaluation its estimated time, but never gets less than
    40% of the budget: on a crowded machine the run overshoots rather than training too little to be useful."""
    eval_s = _estimate_eval_seconds(model, beir, eval_splits)
    left = max(0.4 * time_budget_s, time_budget_s - (time.perf_counter() - t_start) - 1.1 * eval_s - 30)
    options.time_budget_s = left if options.time_budget_s is None else min(left, options.time_budget_s)
    log.info("training budget %.0f s (evaluation estimated at %.0f s)", options.time_budget_s, eval_s)


def _estimate_eval_seconds(model, beir: BeirData, splits: int) -> float:
    """Seconds to encode the corpus (+ queries) with `model`, from a timed sample of 64 documents."""
    texts = list(beir.corpus.values())
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), size=min(64, len(texts)), replace=False)]
    encode_texts(model, sample[:2])  # the first call pays one-off setup
    t0 = time.perf_counter()
    encode_texts(model, sample)
    per_doc = (time.perf_counter() - t0) / len(sample)
    return per_doc * (len(texts) + 0.2 * splits * len(beir.queries))


def _heads(model) -> int:
    return int(getattr(model[0].auto_model.config, "num_attention_heads", 12))


def _check_same_tokenizer(model, teacher: Teacher) -> None:
    if not isinstance(teacher, BiEncoderTeacher):
        raise UserError("the attention loss needs a bi-encoder teacher; choose margin-mse or kl for a cross-encoder")
    s_tok = getattr(model, "tokenizer", None)
    t_tok = getattr(teacher.model, "tokenizer", None)
    if s_tok is None or t_tok is None or s_tok.get_vocab() != t_tok.get_vocab():
        raise UserError("the attention loss compares token-by-token attention, but the student's tokenizer differs "
                        "from the teacher's; use a student from the teacher's family or drop 'attention' from --loss")


def _register(catalog, out_dir: Path, result: dict, beir: BeirData) -> int:
    from embedkd.text_encoder import load_text_encoder
    from indexer.catalog import ensure_model

    record = load_text_encoder(str(out_dir), device="cpu").record
    info = {
        "role": "distilled student",
        "teacher": result["teacher"],
        "teacher_kind": result["teacher_kind"],
        "teacher_document_tokens": result["teacher_document_tokens"],  # what the teacher read of each document
        "student_spec": result["student_spec"],
        "data": result["data"],
        "data_fingerprint": beir.fingerprint,
        "loss": result["loss"],
        "steps": result["steps"],
        "lineage": result["lineage"],
        "metrics": result["metrics"],
    }
    with catalog.session() as s:
        row = ensure_model(s, ModelRecord(**{**record.__dict__, "info": info}))
        row.info = info
        s.flush()
        return int(row.id)
