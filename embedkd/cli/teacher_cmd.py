"""`embedkd teacher train`: fine-tune a cross-encoder teacher on BEIR train qrels with mined negatives."""

from __future__ import annotations

import argparse

from .output import emit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teacher", help="make teachers for distillation")
    tsub = p.add_subparsers(dest="teacher_command", required=True, parser_class=type(p))
    t = tsub.add_parser("train", help="fine-tune a cross-encoder from a base model on BEIR train qrels",
                        description="Fine-tune a one-logit cross-encoder from --base on BEIR train qrels with "
                                    "negatives mined from an index of the corpus; report its reranking nDCG@10.")
    t.add_argument("--base", required=True, help="base model (hub name or local path), e.g. all-MiniLM-L6-v2")
    t.add_argument("--data", required=True, help="BEIR folder with qrels/train.tsv")
    t.add_argument("--out", required=True, help="folder for the cross-encoder")
    t.add_argument("--epochs", type=float, default=1.0)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=3e-5)
    t.add_argument("--negatives", type=int, default=3)
    t.add_argument("--max-length", type=int, default=256)
    t.add_argument("--rerank-depth", type=int, default=20, help="first-stage candidates reranked when evaluating")
    t.add_argument("--eval-split", default="test")
    t.add_argument("--time-budget", type=float, default=0, help="minutes before training stops (0: no limit)")
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--json", action="store_true")
    t.add_argument("--quiet", action="store_true",
                   help="no training progress on stderr (a bar on a terminal, else a line every 30 s)")
    t.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    import torch

    from embedkd.distill.cross_encoder import train_cross_encoder
    from embedkd.threads import set_torch_threads
    from indexer.errors import UserError

    for name in ("batch_size", "negatives", "max_length", "rerank_depth"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    torch.set_flush_denormal(True)
    set_torch_threads(args.threads)
    result = train_cross_encoder(args.base, args.data, args.out, epochs=args.epochs, negatives=args.negatives,
                                 batch_size=args.batch_size, lr=args.lr, max_length=args.max_length,
                                 eval_split=args.eval_split or None, rerank_depth=args.rerank_depth,
                                 time_budget_s=args.time_budget * 60 if args.time_budget > 0 else None,
                                 progress=not args.quiet)
    if not args.json:
        result = {"cross_encoder": result["cross_encoder"], "steps": result["steps"],
                  **{f"{k} ndcg@10": v["ndcg@10"] for k, v in result["metrics"].items()}}
    emit(result, args.json)
    return 0
