"""`embedkd upgrade`: fit a query-drift adapter so a new model's queries search an index built by the old.

    embedkd upgrade fit --index NAME --model MODEL [--kind auto|mean-shift|procrustes|affine|low-rank|mlp|rank|score-map]
                        [--corpus PATH ...] [--sample-docs N] [--queries FILE] [--eval-data BEIR_DIR [--eval-split S]]
                        [--no-blend] [--json]
    embedkd upgrade report --index NAME --model MODEL --data BEIR_DIR [--out DIR] [--json]
    embedkd upgrade add --index NAME --model MODEL --corpus PATH [--json]   (new docs into v1's space)
    embedkd upgrade backfill --index NAME --model MODEL [--corpus PATH ...] [--dry-run] [--json]

`fit` prints the held-out figures and registers the adapter as the index's active one for MODEL; it
exits 2 with a one-line reason (and registers nothing) when the safety gate refuses. With `--eval-data`
it also tries v1's own query blended with a share of the mapped one (kind "procrustes+v1@0.6"), kept only
when the labelled queries find it clearly better than v1 and than the plain adapter; such an adapter needs
the index's model at query time too (`query_models` in the output; `--no-blend` forbids it).
"""

from __future__ import annotations

import argparse

from indexer.errors import UserError

from .output import emit
from .runtime import add_encoder_options, add_ray_options, catalog_from_env, job_encoder, require_text_index, text_encoder_loader

__all__ = ["register"]

_KINDS = ("auto", "mean-shift", "procrustes", "affine", "low-rank", "mlp", "rank", "score-map")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upgrade", help="use a new model's queries on an index built by the old model")
    usub = p.add_subparsers(dest="upgrade_command", required=True, parser_class=type(p))

    f = usub.add_parser("fit", help="fit, check and register a v2 -> v1 query adapter for an index")
    f.add_argument("--index", required=True, help="index name in the catalog")
    f.add_argument("--model", required=True, help="the new query model (sentence-transformers name or path)")
    f.add_argument("--kind", default="auto", choices=_KINDS, help="adapter kind; auto keeps the best held-out")
    f.add_argument("--corpus", action="append", metavar="PATH",
                   help="a file of the index's documents, repeatable (default: every file its build and adds read; the "
                        "texts the server kept of HTTP writes are read either way)")
    f.add_argument("--sample-docs", type=int, default=None,
                   help="documents sampled for fitting (default: 0.5%% of the index, at least 250, at most 2000)")
    f.add_argument("--queries", metavar="FILE",
                   help="optional query log (one query per line, or a BEIR queries.jsonl), added to the fitting pairs")
    f.add_argument("--eval-data", help="BEIR folder with labelled queries: the gate then checks nDCG@10 too")
    f.add_argument("--eval-split", default="test", help="qrels split of --eval-data to check on (default test)")
    f.add_argument("--no-activate", action="store_true", help="register the adapter but leave it inactive")
    f.add_argument("--no-blend", action="store_true",
                   help="with --eval-data: never blend the index model's query with the mapped one (a blend is kept "
                        "only when clearly better on the labelled queries, and encodes each query twice)")
    f.add_argument("--seed", type=int, default=0)
    add_encoder_options(f)
    f.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    f.set_defaults(handler=_fit)

    r = usub.add_parser("report", help="compatibility matrix v1/v1, v2/v2, v2+adapters/v1 with a PNG plot")
    r.add_argument("--index", required=True)
    r.add_argument("--model", required=True)
    r.add_argument("--data", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    r.add_argument("--split", default="test")
    r.add_argument("--corpus", help="corpus the index was built from (default: --data)")
    r.add_argument("--out", default="docs", help="folder for upgrade_compat_<index>.json/.png (default docs)")
    r.add_argument("--sample-docs", type=int, default=None)
    add_encoder_options(r)
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=_report)

    a = usub.add_parser("add", help="add documents encoded by MODEL into the index's space via its adapter")
    a.add_argument("--index", required=True)
    a.add_argument("--model", required=True, help="the new model with an active adapter for this index")
    a.add_argument("--corpus", required=True, help="BEIR folder or JSONL with id and text")
    a.add_argument("--chunk-size", type=int, default=4096)
    add_encoder_options(a)
    a.add_argument("--json", action="store_true")
    a.set_defaults(handler=_add)

    b = usub.add_parser("backfill", help="re-embed the index with MODEL (resumable), then switch atomically")
    b.add_argument("--index", required=True)
    b.add_argument("--model", required=True)
    b.add_argument("--corpus", action="append", metavar="PATH",
                   help="a file of the index's documents, repeatable, newest first (default: every file its build "
                        "and adds read; the texts the server kept of HTTP writes are read either way)")
    b.add_argument("--chunk-size", type=int, default=4096, help="documents per checkpoint")
    b.add_argument("--dry-run", action="store_true",
                   help="read the index's files and say whether every document can be re-embedded; encode nothing "
                        "(exit 1, naming them, when some cannot)")
    add_encoder_options(b)
    add_ray_options(b)
    b.add_argument("--json", action="store_true")
    b.set_defaults(handler=_backfill)


def _fit(args: argparse.Namespace) -> int:
    from embedkd.upgrade.run import fit_upgrade

    catalog = catalog_from_env()
    try:
        require_text_index(catalog, args.index)
        result = fit_upgrade(catalog, args.index, args.model, args.kind, corpus=args.corpus,
                             sample_docs=args.sample_docs, queries=args.queries, eval_data=args.eval_data,
                             eval_split=args.eval_split, seed=args.seed, activate=not args.no_activate,
                             encoder_for=text_encoder_loader(args), blend=not args.no_blend)
    finally:
        catalog.close()
    emit(result, args.json)
    if not result["accepted"]:
        raise UserError(f"safety gate refused the {result['kind']} adapter: {result['reason']}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from embedkd.upgrade.report import compatibility_report

    catalog = catalog_from_env()
    try:
        require_text_index(catalog, args.index)
        result = compatibility_report(catalog, args.index, args.model, args.data, split=args.split,
                                      corpus=args.corpus or args.data, out_dir=args.out,
                                      sample_docs=args.sample_docs, encoder_for=text_encoder_loader(args))
    finally:
        catalog.close()
    emit(result, args.json)
    return 0


def _add(args: argparse.Namespace) -> int:
    from embedkd.upgrade.adapted_encoder import adapted_encoder_for_index
    from indexer.build import add_documents
    from indexer.corpus import read_corpus

    catalog = catalog_from_env()
    require_text_index(catalog, args.index)
    docs = read_corpus(args.corpus)
    encoder = adapted_encoder_for_index(catalog, args.index, text_encoder_loader(args)(args.model))
    emit(add_documents(catalog, args.index, encoder, docs, chunk_size=args.chunk_size, progress=False), args.json)
    return 0


def _backfill(args: argparse.Namespace) -> int:
    import sys

    from embedkd.upgrade.backfill import backfill, backfill_corpora, check_covered, coverage, not_covered

    catalog = catalog_from_env()
    require_text_index(catalog, args.index)
    with backfill_corpora(catalog, args.index, args.corpus) as docs:
        if args.dry_run:
            found = coverage(catalog, args.index, docs)
            emit({**found, "missing_ids": found["missing_ids"][:100]}, args.json)
            if found["missing"]:
                raise not_covered(found, docs)
            return 0
        check_covered(catalog, args.index, docs)  # before loading the model
        with job_encoder(args, args.model) as encoder:
            result = backfill(catalog, args.index, encoder, docs, chunk_size=args.chunk_size,
                              progress=sys.stderr.isatty(), checked=True)
    emit(result, args.json)
    return 0
