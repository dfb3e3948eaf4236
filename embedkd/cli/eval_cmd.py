"""`embedkd eval retrieval`: nDCG@10, Recall@100, MRR@10 of a model or an index on BEIR data."""

from __future__ import annotations

import argparse

from .output import emit
from .runtime import add_encoder_options, catalog_from_env, text_encoder_loader

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate retrieval quality")
    esub = p.add_subparsers(dest="eval_command", required=True, parser_class=type(p))
    r = esub.add_parser("retrieval", help="nDCG@10, Recall@100, MRR@10 on a BEIR-format folder")
    r.add_argument("--data", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    r.add_argument("--split", default="test")
    who = r.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help="encode the corpus with this model and search exactly")
    who.add_argument("--index", help="search this index (its model, or --query-model through its adapter)")
    r.add_argument("--query-model", default=None, help="with --index: model that encodes the queries")
    add_encoder_options(r)
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=_retrieval)


def _retrieval(args: argparse.Namespace) -> int:
    from embedkd.evaluation import evaluate_index, evaluate_model, load_beir
    from indexer.errors import UserError

    if args.query_model and not args.index:
        raise UserError("--query-model goes with --index; with --model the same model encodes queries and corpus")
    data = load_beir(args.data, args.split)
    if args.model:
        result = evaluate_model(text_encoder_loader(args)(args.model), data)
    else:
        from indexer.search import Searcher

        searcher = Searcher(catalog_from_env(), text_encoder_loader(args))
        result = evaluate_index(searcher, args.index, data, query_model=args.query_model)
    emit(result, args.json)
    return 0
