"""`embedkd distill`: train a small student from a teacher on a BEIR folder, save, evaluate, register."""

from __future__ import annotations

import argparse

from .output import emit

DEFAULT_LOSS = "cosine+kl"  # kept equal to embedkd.distill.pipeline.DEFAULT_LOSS (tested)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill", help="distil a teacher into a small bi-encoder student",
        description="Distil a teacher (sentence-transformers bi-encoder or cross-encoder) into a student "
                    "(a model, or prune:MODEL:LAYERS) on a BEIR folder with hard negatives mined from an index.")
    p.add_argument("--teacher", required=True, help="teacher model: hub name or local path")
    p.add_argument("--student", required=True, help="student model, or prune:MODEL:LAYERS (count or 0,2,5)")
    p.add_argument("--data", required=True, help="BEIR folder with corpus.jsonl, queries.jsonl, qrels/train.tsv")
    p.add_argument("--out", required=True, help="folder for the student (sentence-transformers format)")
    p.add_argument("--loss", default=DEFAULT_LOSS,
                   help="terms joined by + or , with optional weights: margin-mse, kl, mse, cosine, attention, "
                        f"labels (default {DEFAULT_LOSS})")
    p.add_argument("--teacher-kind", default="auto", choices=["auto", "bi-encoder", "cross-encoder"])
    p.add_argument("--miner", default=None,
                   help="bi-encoder that indexes the corpus for negatives (default: a bi-encoder teacher, "
                        "else the student's base model)")
    p.add_argument("--epochs", type=float, default=None,
                   help="passes over the train examples (default 4; the time budget may stop it first)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--negatives", type=int, default=3, help="mined negatives per (query, positive)")
    p.add_argument("--max-length", type=int, default=128,
                   help="token limit while training, also for the teacher's document vectors")
    p.add_argument("--time-budget", type=float, default=25.0,
                   help="minutes for the whole run: training stops early to leave time for the final "
                        "evaluation (0: no limit); default 25")
    p.add_argument("--eval-split", default="test", help="qrels split to evaluate on after training ('' to skip)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: adapt to the machine's load)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the dev split, the negatives drawn, the batch order and any fresh weights (default 0)")
    p.add_argument("--previous", default=None,
                   help="continual training: previous model version (v1) whose embeddings v2 must stay close to")
    p.add_argument("--previous-weight", type=float, default=1.0, help="weight of the --previous term")
    p.add_argument("--pseudo-queries", type=int, default=0, metavar="N",
                   help="add N unlabelled queries cut from the corpus (one sentence of a document each) for the "
                        "teacher to label; documents judged in dev/eval never give one")
    p.add_argument("--queries", default=None, metavar="FILE",
                   help="unlabelled queries (a search log: one per line, or a BEIR queries.jsonl) to train on, "
                        "each with the teacher's top document as its positive; --data then needs no train qrels")
    p.add_argument("--lexical", default="0", metavar="W|auto",
                   help="fuse BM25 over the corpus into a bi-encoder teacher's scores: cosine + W x BM25 / the "
                        "query's best BM25 ('auto': W picked on the dev split; 0: off). The student stays dense")
    p.add_argument("--mine-k", type=int, default=50, metavar="K",
                   help="negative candidates per training query from the dense miner's index (default 50)")
    p.add_argument("--mine-lexical", type=int, default=0, metavar="N",
                   help="hybrid mining: also take each training query's top-N BM25 documents as negative "
                        "candidates (filtered by the teacher like the dense ones; 0: off)")
    p.add_argument("--general-texts", default="auto", metavar="FILE|wordnet|none",
                   help="unlabelled texts (one per line, or .jsonl; 'wordnet': the packaged WordNet glosses) whose "
                        "teacher embeddings the student learns to match in a stage before distillation. "
                        "Default auto: wordnet where a bi-encoder teacher embeds in the student's dimension and --loss "
                        "distils from it (not labels alone); none: off")
    p.add_argument("--general-steps", type=int, default=None, metavar="N",
                   help="steps on the general texts alone before distillation (default 5 per planned "
                        "distillation step, at most a third of --time-budget; 0: no stage)")
    # off by default: the stage alone does the good (docs/distill.md, *A stage-only default?*)
    p.add_argument("--general-weight", type=float, default=0.0, metavar="W",
                   help="also add W x the general-text loss beside the task loss at every distillation step (default 0: off; "
                        "1 lifts questions by about one point more and costs SciFact and code-summary queries)")
    p.add_argument("--lexical-language", default="english",
                   help="with --lexical / --mine-lexical: BM25's Snowball stemmer and stop words (default english)")
    p.add_argument("--allow-weak-teacher", action="store_true",
                   help="distill even a teacher that reranks dev queries worse than the miner")
    p.add_argument("--no-register", action="store_true", help="do not register the student in the catalog")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    p.add_argument("--quiet", action="store_true",
                   help="no training progress on stderr (a bar on a terminal, else a line every 30 s)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import torch

    from embedkd.distill.pipeline import distill
    from embedkd.distill.train import TrainOptions
    from embedkd.threads import set_torch_threads
    from indexer.errors import UserError

    for name in ("batch_size", "negatives", "max_length", "mine_k"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.pseudo_queries < 0:
        raise UserError("--pseudo-queries must be 0 (none) or a positive count")
    if args.epochs is not None and args.epochs <= 0:
        raise UserError("--epochs must be positive")
    general_texts = args.general_texts
    if general_texts == "none":
        if args.general_steps or args.general_weight:
            raise UserError("--general-steps / --general-weight train on general texts, and --general-texts is none; "
                            "drop them or name the texts")
        general_texts = None
    if args.seed < 0:
        raise UserError(f"--seed must be 0 or a positive integer, got {args.seed}")
    torch.set_flush_denormal(True)
    set_torch_threads(args.threads)
    options = TrainOptions(epochs=args.epochs if args.epochs is not None else 4.0, batch_size=args.batch_size,
                           lr=args.lr, max_length=args.max_length, seed=args.seed)
    result = distill(args.teacher, args.student, args.data, args.out, args.loss, teacher_kind=args.teacher_kind,
                     miner=args.miner, options=options, negatives=args.negatives,
                     eval_split=args.eval_split or None, register=not args.no_register, progress=not args.quiet,
                     time_budget_s=args.time_budget * 60 if args.time_budget > 0 else None,
                     previous=args.previous, previous_weight=args.previous_weight,
                     allow_weak_teacher=args.allow_weak_teacher, pseudo=args.pseudo_queries,
                     lexical=args.lexical, lexical_language=args.lexical_language,
                     mine_k=args.mine_k, mine_lexical=args.mine_lexical, queries=args.queries,
                     general_texts=general_texts, general_steps=args.general_steps,
                     general_weight=args.general_weight)
    if "rank" not in result:  # under torchrun, rank 0 reports
        emit(_summary(result) if not args.json else result, args.json)
    return 0


def _summary(result: dict) -> dict:
    out = {"student": result["student"], "steps": result["steps"], "seconds": result["total_seconds"]}
    for split, m in result["metrics"].items():
        out[f"{split} ndcg@10"] = m["ndcg@10"]
        out[f"{split} recall@100"] = m["recall@100"]
    tokens = result.get("teacher_document_tokens")
    for split, m in (result.get("teacher_metrics") or {}).items():
        # the teacher as it taught: documents cut at the training length (`eval retrieval --model` gives its own)
        out[f"teacher {split} ndcg@10" + (f" ({tokens}-token documents)" if tokens else "")] = m["ndcg@10"]
    if "model_id" in result:
        out["model_id"] = result["model_id"]
    return out
