"""`embedkd index build|add|delete|compact|drop|search|list|jobs|cancel|gc|verify|export|import`."""

from __future__ import annotations

import argparse
import sys

from .output import emit
from .runtime import (
    add_encoder_options,
    add_ray_options,
    add_search_options,
    catalog_from_env,
    job_encoder,
    require_text_index,
    searcher_from_args,
)

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build, update and search FAISS indexes")
    isub = p.add_subparsers(dest="index_command", required=True, parser_class=type(p))

    b = isub.add_parser("build", help="embed a corpus and write a new index (resumes after a crash)")
    b.add_argument("--index", required=True, help="name of the new index")
    b.add_argument("--model", required=True, help="sentence-transformers model: hub name or local path")
    b.add_argument("--corpus", required=True, help="BEIR folder or corpus.jsonl / JSONL with id and text")
    b.add_argument("--factory", default="Flat", help="FAISS index factory string (Flat, HNSW32, IVF1024,PQ64 ...)")
    b.add_argument("--metric", default="ip", choices=["ip", "l2"])
    b.add_argument("--chunk-size", type=int, default=4096, help="documents per checkpoint")
    b.add_argument("--shard-size", type=int, default=None,
                   help="vectors per FAISS file (default 1,000,000): an add or delete rewrites only the shards it touches")
    add_encoder_options(b)
    add_ray_options(b)
    b.add_argument("--json", action="store_true")
    b.set_defaults(handler=_build)

    a = isub.add_parser("add", help="add or update documents in an index")
    a.add_argument("--index", required=True)
    a.add_argument("--corpus", required=True)
    a.add_argument("--model", default=None, help="default: the index's model")
    a.add_argument("--chunk-size", type=int, default=4096)
    a.add_argument("--delete-missing", action="store_true",
                   help="the corpus is a full snapshot: delete the items it lacks, in the same generation as the add")
    a.add_argument("--max-delete", type=float, default=0.1, metavar="SHARE",
                   help="with --delete-missing, refuse to delete more than this share of the index (default 0.1): "
                        "a truncated snapshot must not empty it")
    add_encoder_options(a)
    add_ray_options(a)
    a.add_argument("--json", action="store_true")
    a.set_defaults(handler=_add)

    d = isub.add_parser("delete", help="delete items by id")
    d.add_argument("--index", required=True)
    d.add_argument("ids", nargs="*", help="item ids to delete")
    d.add_argument("--ids-file", default=None, metavar="PATH", help="more ids to delete, one per line")
    d.add_argument("--purge", action="store_true",
                   help="remove the vectors from the index files now (by default a large shard keeps them, skipped, "
                        "until enough deletes gather to rewrite it)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(handler=_delete)

    k = isub.add_parser("compact", help="rewrite an index's shards without deleted vectors, small shards merged "
                                        "(writes go on meanwhile)")
    which = k.add_mutually_exclusive_group(required=True)
    which.add_argument("--index")
    which.add_argument("--all", action="store_true",
                       help="every index that needs it, as `serve --compact-every` does (e.g. from cron)")
    k.add_argument("--deleted", type=float, default=0.05, metavar="SHARE",
                   help="with --all: compact an index once this share of the vectors in its files is deleted "
                        "(default 0.05; or when 12 of its shards would fold away)")
    k.add_argument("--texts", action="store_true",
                   help="with --index: also rewrite the texts it keeps (of HTTP writes, and corpus copies an import "
                        "carried) without those of documents it no longer holds: what --purge would have removed "
                        "of documents deleted without it")
    k.add_argument("--json", action="store_true")
    k.set_defaults(handler=_compact)

    r = isub.add_parser("drop", help="remove an index, its items and files")
    r.add_argument("--index", required=True)
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=_drop)

    s = isub.add_parser("search", help="search an index with a text query")
    s.add_argument("--index", required=True)
    s.add_argument("--query", required=True)
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--query-model", default=None, help="model for the query (through the index's adapter)")
    s.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE",
                   help="only items whose FIELD passes: metadata.year=2020, tag=[a,b] (either), lang!=de, year>=2019; repeatable")
    add_encoder_options(s)
    add_search_options(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=_search)

    ls = isub.add_parser("list", help="list indexes")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=_list)

    j = isub.add_parser("jobs", help="list build, add and compaction jobs: progress, failures, chunks kept for resuming")
    j.add_argument("--index", default=None, help="only this index's jobs")
    j.add_argument("--state", default=None, help="running, interrupted, failed, done, superseded or cancelled")
    j.add_argument("--limit", type=int, default=20, help="newest jobs shown (default 20)")
    j.add_argument("--json", action="store_true")
    j.set_defaults(handler=_jobs)

    c = isub.add_parser("cancel", help="forget a failed or interrupted job and delete its encoded chunks")
    c.add_argument("job", type=int, help="job id (from `embedkd index jobs`)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(handler=_cancel)

    g = isub.add_parser("gc", help="delete files no catalog row needs (left by killed processes)")
    g.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    g.add_argument("--json", action="store_true")
    g.set_defaults(handler=_gc)

    v = isub.add_parser("verify", help="check indexes against the catalog: files, checksums, ids (exit 1 on a problem)")
    v.add_argument("--index", default=None, help="this index only (default: every index)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(handler=_verify)

    x = isub.add_parser("export", help="write an index (files, items, model, adapters; a gallery's uploaded crops) to a "
                                       "folder: a backup, or a move")
    x.add_argument("--index", required=True)
    x.add_argument("--out", required=True, help="a new folder")
    x.add_argument("--with-corpora", action="store_true",
                   help="copy the files its documents came from too (only the lines of the documents it holds), so "
                        "that it can be upgraded (backfilled) where those files are not (another machine)")
    x.add_argument("--json", action="store_true")
    x.set_defaults(handler=_export)

    m = isub.add_parser("import", help="add an exported index to this catalog (e.g. SQLite -> PostgreSQL), no re-embedding")
    m.add_argument("--from", dest="src", required=True, help="a folder written by `embedkd index export`")
    m.add_argument("--index", default=None, help="its name here (default: the exported name)")
    m.add_argument("--json", action="store_true")
    m.set_defaults(handler=_import)


def _check_positive(name: str, value: int | None) -> None:
    from indexer.errors import UserError

    if value is not None and value <= 0:
        raise UserError(f"--{name} must be a positive integer, got {value}")


def _build(args: argparse.Namespace) -> int:
    from indexer.build import build_index
    from indexer.corpus import read_corpus
    from indexer.shards import DEFAULT_SHARD_SIZE

    _check_positive("chunk-size", args.chunk_size)
    _check_positive("shard-size", args.shard_size)
    _check_positive("batch-size", args.batch_size)
    catalog = catalog_from_env()
    docs = read_corpus(args.corpus)
    with job_encoder(args, args.model) as encoder:
        result = build_index(catalog, args.index, encoder, docs, factory=args.factory, metric=args.metric,
                             chunk_size=args.chunk_size, progress=sys.stderr.isatty() or not args.json,
                             shard_size=args.shard_size or DEFAULT_SHARD_SIZE)
    emit(result, args.json)
    return 0


def _add(args: argparse.Namespace) -> int:
    from indexer.build import add_documents
    from indexer.corpus import read_corpus
    from indexer.errors import UserError

    _check_positive("chunk-size", args.chunk_size)
    if not 0 <= args.max_delete <= 1:  # before the model loads
        raise UserError(f"--max-delete is a share of the index between 0 and 1, got {args.max_delete}")
    catalog = catalog_from_env()
    source = require_text_index(catalog, args.index)
    source = args.model or source
    docs = read_corpus(args.corpus)
    with job_encoder(args, source) as encoder:
        result = add_documents(catalog, args.index, encoder, docs, chunk_size=args.chunk_size,
                               progress=sys.stderr.isatty(), delete_missing=args.delete_missing,
                               max_delete=args.max_delete)
    emit(result, args.json)
    return 0


def _delete(args: argparse.Namespace) -> int:
    from indexer.build import delete_items

    catalog = catalog_from_env()
    require_text_index(catalog, args.index)  # a gallery's crops go with `reid gallery remove`, uploads included
    emit(delete_items(catalog, args.index, list(args.ids) + _ids_file(args.ids_file), purge=args.purge), args.json)
    return 0


def _compact(args: argparse.Namespace) -> int:
    from indexer.auto_compact import compact_where_needed
    from indexer.compaction import compact_index
    from indexer.errors import UserError

    catalog = catalog_from_env()
    if not args.all:
        out = compact_index(catalog, args.index)  # any index, galleries too: no model needed
        if args.texts:
            from indexer.purges import drop_unheld

            out["texts"] = drop_unheld(catalog, args.index)
        emit(out, args.json)
        return 0
    if args.texts:
        raise UserError("--texts needs --index NAME: it reads every text an index keeps")
    if not 0 < args.deleted <= 1:
        raise UserError(f"--deleted is a share of an index's vectors in (0, 1], got {args.deleted}")
    out = compact_where_needed(catalog, args.deleted)
    emit(out, args.json)
    return 1 if out["failed"] else 0


def _ids_file(path: str | None) -> list[str]:
    from indexer.errors import UserError

    if path is None:
        return []
    try:
        text = open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as err:
        why = getattr(err, "strerror", None) or err
        raise UserError(f"--ids-file {path}: {why}; give a UTF-8 file with one id per line") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _drop(args: argparse.Namespace) -> int:
    from indexer.build import drop_index

    catalog = catalog_from_env()
    require_text_index(catalog, args.index)  # a gallery goes with `reid gallery drop`, its uploaded crops too
    emit(drop_index(catalog, args.index), args.json)
    return 0


def _search(args: argparse.Namespace) -> int:
    from indexer.where import parse_where

    where = parse_where(args.where)  # bad filters fail before a model loads
    searcher = searcher_from_args(args)
    hits = searcher.search(args.index, [args.query], k=args.k, query_model=args.query_model, where=where)[0]
    if args.json:
        emit({"results": [h.as_dict() for h in hits]}, True)
    else:
        for rank, h in enumerate(hits, 1):
            title = (h.info or {}).get("title", "")
            sys.stdout.write(f"{rank:>3}  {h.score:.4f}  {h.id}  {title[:80]}\n")
    return 0


def _list(args: argparse.Namespace) -> int:
    from indexer.overview import index_overview

    rows = index_overview(catalog_from_env())
    if args.json:
        emit({"indexes": rows}, True)
    else:
        for r in rows:
            files = f"{r['shards']} shards, {r['deleted_listed']} deleted in files"
            files += f", compacting ({r['compacting']})" if r["compacting"] else (
                f", compact: {r['compaction_need']}" if r["compaction_need"] else "")
            if r["kept_texts"]["files"]:
                files += f", texts kept of HTTP writes: {r['kept_texts']['bytes'] / 1e6:.1f} MB"
            sys.stdout.write(f"{r['name']}\t{r['count']}\t{r['factory']}\t{r['dimension']}d\t{r['model']}\t{files}\n")
    return 0


def _jobs(args: argparse.Namespace) -> int:
    from indexer.jobs import list_jobs

    rows = list_jobs(catalog_from_env(), target=args.index, state=args.state, limit=args.limit)
    if args.json:
        emit({"jobs": rows}, True)
        return 0
    if rows:
        sys.stdout.write("job\tkind\tindex\tstate\tdone/total\ttime\n")
    for r in rows:
        total = "?" if r["total"] is None else r["total"]
        line = f"{r['id']}\t{r['kind']}\t{r['index']}\t{r['state']}\t{r['progress']}/{total}\t{r['seconds']:.0f}s"
        if r["eta_s"] is not None:
            line += f"\tabout {r['eta_s']:.0f}s left"
        if r["writer"]:
            line += f"\tby {r['writer']}"
        if r["stored_bytes"]:
            line += f"\t{r['stored_bytes'] / 2**20:.1f} MiB kept"
        if r["state"] in ("failed", "interrupted"):  # what to do about it, where it shows
            line += f"\trerun its command to resume, or `embedkd index cancel {r['id']}`"
        if r["error"]:
            line += f"\t{r['error'].splitlines()[0][:200]}"
        sys.stdout.write(line + "\n")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from indexer.jobs import cancel

    emit(cancel(catalog_from_env(), args.job), args.json)
    return 0


def _gc(args: argparse.Namespace) -> int:
    from indexer.cleanup import collect_garbage
    from reid.uploads import collect_uploads

    out = collect_garbage(catalog_from_env(), dry_run=args.dry_run, also=[collect_uploads])
    if args.json:
        emit(out, True)
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for f in out["removed" if not args.dry_run else "would_remove"]:
        sys.stdout.write(f"{verb}\t{f['path']}\t{f['bytes'] / 2**20:.1f} MiB\t{f['why']}\n")
    for name in out["skipped_being_written"]:
        sys.stdout.write(f"skipped\t{name}\tbeing written now; run gc again later\n")
    sys.stdout.write(f"{verb} {out['bytes'] / 2**20:.1f} MiB in all\n")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from indexer.catalog import get_index, list_indexes
    from indexer.verify import verify_index

    catalog = catalog_from_env()
    with catalog.session() as s:
        names = [get_index(s, args.index).name] if args.index else [i.name for i in list_indexes(s)]
    rows = [verify_index(catalog, name) for name in names]
    bad = [r for r in rows if not r["ok"]]
    if args.json:
        emit({"ok": not bad, "indexes": rows}, True)
    else:
        for r in rows:
            state = "ok" if r["ok"] else "PROBLEMS"
            sys.stdout.write(f"{r['index']}\t{state}\t{r['vectors']} vectors\t{r['items']} items\t{r['shards']} shards\n")
            for problem in r["problems"]:
                sys.stdout.write(f"  - {problem}\n")
    if bad:  # what an alert or a script checks: the exit status, and one line
        first = bad[0]
        sys.stderr.write(f"embedkd: error: {len(bad)} of {len(rows)} indexes failed verification; {first['index']}: "
                         f"{first['problems'][0]}\n")
        return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    from indexer.transfer import export_index
    from reid.uploads import upload_dir

    catalog = catalog_from_env()
    # a gallery's crops uploaded over HTTP live in EMBEDKD_HOME, not in the user's folders: they go with it
    emit(export_index(catalog, args.index, args.out, attached=upload_dir(catalog, args.index),
                      with_corpora=args.with_corpora), args.json)
    return 0


def _import(args: argparse.Namespace) -> int:
    from indexer.transfer import import_index
    from reid.uploads import upload_dir

    catalog = catalog_from_env()
    emit(import_index(catalog, args.src, args.index, attach_to=lambda name: upload_dir(catalog, name)), args.json)
    return 0
