"""`embedkd eval retrieval`: nDCG@10, Recall@100, MRR@10 of a model or an index on BEIR data;
`embedkd eval compare`: whether one run beats another beyond query noise."""

from __future__ import annotations

import argparse

from .output import emit
from .runtime import add_encoder_options, add_search_options, searcher_from_args, text_encoder_loader

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
    who.add_argument("--bm25", action="store_true",
                     help="rank by BM25 over the corpus (bm25s; the lexical baseline to compare a model with)")
    r.add_argument("--language", default="english",
                   help="with --bm25: Snowball stemmer and stop words (default english)")
    r.add_argument("--query-model", default=None, help="with --index: model that encodes the queries")
    r.add_argument("--run", metavar="FILE", help="also write the ranking as a TREC run file (for `eval compare`, "
                   "trec_eval or ranx)")
    r.add_argument("--keep-identical-ids", action="store_true",
                   help="keep a document whose id is the query's id in its ranking (BEIR, and so this command, "
                   "drop it by default: ArguAna and Quora store each query in the corpus under its own id)")
    add_encoder_options(r)
    add_search_options(r)
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=_retrieval)

    c = esub.add_parser("compare", help="paired comparison of two TREC runs on the same judged queries")
    c.add_argument("--data", required=True, help="BEIR folder whose qrels judge both runs")
    c.add_argument("--split", default="test")
    c.add_argument("run_a", help="baseline run (TREC format, e.g. from `eval retrieval --run`)")
    c.add_argument("run_b", help="run compared with the baseline")
    c.add_argument("--confidence", type=float, default=0.95)
    c.add_argument("--json", action="store_true")
    c.set_defaults(handler=_compare)


def _retrieval(args: argparse.Namespace) -> int:
    from embedkd.evaluation import index_run, load_beir, model_run, retrieval_metrics, write_trec_run
    from embedkd.out_dir import output_file
    from indexer.errors import UserError

    if args.query_model and not args.index:
        raise UserError("--query-model goes with --index; with --model the same model encodes queries and corpus")
    if args.language != "english" and not args.bm25:
        raise UserError("--language goes with --bm25 (a model reads text its own way)")
    if args.run:
        output_file(args.run, "--run")  # before encoding, not after it
    data = load_beir(args.data, args.split)
    if args.bm25:
        run = _bm25_run(data, args.language, not args.keep_identical_ids)
    elif args.model:
        run = model_run(text_encoder_loader(args)(args.model), data, ignore_identical_ids=not args.keep_identical_ids)
    else:
        run = index_run(searcher_from_args(args), args.index, data, query_model=args.query_model,
                        ignore_identical_ids=not args.keep_identical_ids)
    result = retrieval_metrics(run, data.qrels)
    if args.run:
        result["run"] = str(write_trec_run(run, args.run, tag=args.model or args.index or "bm25"))
    emit(result, args.json)
    return 0


def _bm25_run(data, language: str, ignore_identical_ids: bool) -> dict[str, dict[str, float]]:
    from embedkd.bm25 import LexicalScorer, bm25_run

    docs = list(data.corpus)
    scorer = LexicalScorer([d.content for d in docs], language=language)  # checks the language before indexing
    qids = list(data.queries)
    return bm25_run(qids, [data.queries[q] for q in qids], [d.id for d in docs], scorer,
                    qrels=data.qrels if ignore_identical_ids else None, drop_identical=ignore_identical_ids)


def _compare(args: argparse.Namespace) -> int:
    import numpy as np

    from embedkd.evaluation import METRICS, load_beir, paired_comparison, per_query_metrics, read_trec_run
    from indexer.errors import UserError

    if not 0.5 <= args.confidence < 1.0:
        raise UserError(f"--confidence {args.confidence} must be in [0.5, 1), e.g. 0.95")
    data = load_beir(args.data, args.split, check_corpus=False)  # runs are judged by qrels alone
    runs = {name: read_trec_run(path) for name, path in (("a", args.run_a), ("b", args.run_b))}
    for name, run in runs.items():
        if not set(run) & set(data.qrels):
            path = args.run_a if name == "a" else args.run_b
            raise UserError(f"{path} ranks none of the {len(data.qrels)} judged queries of {args.data} "
                            f"split {args.split}: was it made on other data or another split?")
    per = {name: per_query_metrics(run, data.qrels) for name, run in runs.items()}
    qids = sorted(per["a"])
    result: dict[str, object] = {"run_a": args.run_a, "run_b": args.run_b, "queries": len(qids)}
    for metric in METRICS:
        a = np.array([per["a"][q][metric] for q in qids])
        b = np.array([per["b"][q][metric] for q in qids])
        result[metric] = paired_comparison(a, b, args.confidence)
    if not args.json:  # one readable line per metric
        for metric in METRICS:
            r = result[metric]
            result[metric] = (f"A {r['mean_a']:.4f}  B {r['mean_b']:.4f}  B-A {r['diff']:+.4f} "
                              f"({r['confidence']:.0%} CI {r['ci_low']:+.4f} .. {r['ci_high']:+.4f}, "
                              f"p = {r['p_value']:.3g}; B better on {r['b_better']}, A on {r['a_better']})")
    emit(result, args.json)
    return 0
