"""`embedkd reid train|eval|gallery`: person re-identification robust to low-quality crops."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from contextlib import ExitStack

from .output import emit
from .runtime import add_ray_options

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reid", help="person ReID: train, evaluate, index galleries")
    rsub = p.add_subparsers(dest="reid_command", required=True, parser_class=type(p))

    t = rsub.add_parser("train", help="train a ReID model on a Market-1501 folder")
    t.add_argument("--data", required=True, help="Market-1501 folder (bounding_box_train/, query/, bounding_box_test/)")
    t.add_argument("--out", required=True, help="model folder to write (rerun to resume)")
    t.add_argument("--backbone", help="timm model name (default mobilenetv2_100, or the teacher's)")
    t.add_argument("--teacher", help="trained model folder: HQ->LQ distillation into a student (RLQ)")
    t.add_argument("--init", help="trained model folder to start from (default: the teacher)")
    t.add_argument("--attributes", help="Market-1501 attribute folder: coarse attribute prediction (RLQ)")
    t.add_argument("--distill-logits", type=float,
                   help="with --teacher: weight of KD on the teacher's identity logits (default 1 when the "
                        "teacher folder has the checkpoint.pt of its training on these identities, else 0)")
    t.add_argument("--distill-temperature", type=float, default=4.0, help="temperature of --distill-logits")
    t.add_argument("--epochs", type=int, help="default 20 from ImageNet, 8 from a trained model")
    t.add_argument("--lq-prob", type=float,
                   help="share of degraded training crops (default 0.5 with --teacher, else 0)")
    t.add_argument("--lq-kinds", metavar="KIND[,KIND]",
                   help="degradations those crops get (default all: pixelate,defocus_blur,motion_blur,jpeg,"
                        "downscale); train on some and evaluate on the others with `reid eval --lq-kinds`")
    t.add_argument("--height", type=int, default=128, help="input height (default 128, native Market size)")
    t.add_argument("--width", type=int, default=64, help="input width (default 64)")
    t.add_argument("--pool", choices=("gem", "avg"), default="gem")
    t.add_argument("--metric", choices=("triplet", "circle"), default="triplet")
    t.add_argument("--center-weight", type=float, default=0.0, help="center loss weight (0: off; BoT uses 5e-4)")
    t.add_argument("--lr", type=float, default=3.5e-4)
    # the long names also pass through torchrun, whose own parser takes `--p` for its `--print-completion`
    t.add_argument("--p", "--ids-per-batch", dest="p", type=int, default=16, help="identities per batch")
    t.add_argument("--k", "--crops-per-id", dest="k", type=int, default=4, help="crops per identity in a batch")
    t.add_argument("--eval-every", type=int, default=5, help="epochs between dev evaluations (0: none)")
    t.add_argument("--max-minutes", type=float, default=40.0,
                   help="training time budget; the LR schedule ends on time (default 40, 0: none)")
    t.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, or 1 when the CPU is already fully loaded)")
    t.add_argument("--no-pretrained", action="store_true", help="start the backbone from random weights")
    t.add_argument("--workers", type=int, default=0, help="data loader processes")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    t.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    t.set_defaults(handler=_train)

    e = rsub.add_parser("eval", help="Market-1501 evaluation: rank-1/5 and mAP on query vs gallery")
    e.add_argument("--model", required=True, help="model folder from `reid train`")
    e.add_argument("--data", required=True, help="Market-1501 folder with query/ and bounding_box_test/")
    e.add_argument("--lq", action="store_true", help="degrade the queries with the fixed, seeded LQ protocol")
    e.add_argument("--lq-kinds", metavar="KIND[,KIND]",
                   help="with --lq: draw each query's degradation from these kinds only (severity as the protocol)")
    e.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    e.add_argument("--tracklet", type=int, default=1, metavar="N",
                   help="query with up to N crops of the person (the query and its same-camera gallery crops, which "
                        "the protocol excludes from its ranking), fused as `gallery query --fuse` does (default 1)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(handler=_eval)

    _register_gallery(rsub)


def _register_gallery(rsub: argparse._SubParsersAction) -> None:
    g = rsub.add_parser("gallery", help="galleries of person crops in the index: build, query, add, remove, drop, upgrade")
    gsub = g.add_subparsers(dest="gallery_command", required=True, parser_class=type(g))

    b = gsub.add_parser("build", help="embed crops with a ReID model and write a new gallery index")
    b.add_argument("--gallery", required=True, help="name of the new gallery (an index name)")
    b.add_argument("--model", required=True, help="model folder from `reid train`")
    b.add_argument("--images", required=True, nargs="+", help="image files and/or folders of crops")
    b.add_argument("--factory", default="Flat", help="FAISS factory string (default Flat)")
    b.add_argument("--shard-size", type=int, default=None,
                   help="vectors per FAISS file (default 1,000,000): adding or removing crops rewrites only the shards touched")
    add_ray_options(b)
    b.add_argument("--json", action="store_true")
    b.set_defaults(handler=_gallery_build)

    q = gsub.add_parser("query", help="find the gallery crops most like a query crop")
    q.add_argument("--gallery", required=True)
    q.add_argument("--image", required=True, nargs="+", help="query crop file(s)")
    q.add_argument("-k", type=int, default=10)
    q.add_argument("--model", help="query with this model folder (through the gallery's adapter)")
    q.add_argument("--fuse", action="store_true",
                   help="the images are one person's crops (a tracklet): one search by the mean of their embeddings")
    q.add_argument("--lq", action="store_true", help="degrade the query by the fixed LQ protocol first")
    q.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE",
                   help="only crops whose FIELD passes: camid=3, camid=[1,2], camid!=3 (other cameras); repeatable")
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=_gallery_query)

    a = gsub.add_parser("add", help="add crops (a changed crop with a known id is re-embedded)")
    a.add_argument("--gallery", required=True)
    a.add_argument("--images", required=True, nargs="+")
    add_ray_options(a)
    a.add_argument("--json", action="store_true")
    a.set_defaults(handler=_gallery_add)

    r = gsub.add_parser("remove", help="remove crops by id (file name without extension)")
    r.add_argument("--gallery", required=True)
    r.add_argument("ids", nargs="+")
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=_gallery_remove)

    d = gsub.add_parser("drop", help="remove a gallery: its index and the crops uploaded to it over HTTP")
    d.add_argument("--gallery", required=True)
    d.add_argument("--json", action="store_true")
    d.set_defaults(handler=_gallery_drop)

    u = gsub.add_parser("upgrade", help="fit and register an adapter so a new model queries the old gallery")
    u.add_argument("--gallery", required=True)
    u.add_argument("--model", required=True, help="the new model folder")
    u.add_argument("--sample", type=int, default=2000, help="gallery crops used to fit and check the adapter")
    u.add_argument("--check", choices=("lq", "clean"), default="lq",
                   help="gate on held-out queries degraded by the LQ protocol (default) or clean ones")
    u.add_argument("--json", action="store_true")
    u.set_defaults(handler=_gallery_upgrade)


def _catalog():
    from .runtime import catalog_from_env

    return catalog_from_env()


def _image_encoders(args: argparse.Namespace, stack: ExitStack) -> Callable:
    """source -> image encoder: in this process, or on Ray workers with --ray (closed with `stack`)."""
    from functools import partial

    from embedkd.text_encoder import model_source
    from reid.encoder import load_image_encoder, worker_image_encoder

    from .runtime import ray_encoder

    def encoder_for(source: str):
        def factory(threads: int):
            return partial(worker_image_encoder, model_source(source), threads)

        remote = stack.enter_context(ray_encoder(args, factory))
        return remote if remote is not None else load_image_encoder(source)

    return encoder_for


def _gallery_build(args: argparse.Namespace) -> int:
    from reid.gallery import build_gallery

    with ExitStack() as stack:
        result = build_gallery(_catalog(), args.gallery, args.model, args.images, factory=args.factory,
                               encoder_for=_image_encoders(args, stack), shard_size=args.shard_size)
    emit(result, args.json)
    return 0


def _gallery_query(args: argparse.Namespace) -> int:
    from indexer.search import check_k
    from indexer.where import parse_where
    from reid.gallery import query_gallery

    check_k(args.k)
    where = parse_where(args.where)
    rows = query_gallery(_catalog(), args.gallery, args.image, k=args.k, model_dir=args.model, lq=args.lq, where=where,
                         fuse=args.fuse)
    if len(rows) == 1:
        emit({"results": rows[0]}, args.json)
    else:
        emit({"queries": [{"image": img, "results": r} for img, r in zip(args.image, rows)]}, args.json)
    return 0


def _gallery_add(args: argparse.Namespace) -> int:
    from reid.gallery import add_to_gallery

    with ExitStack() as stack:
        result = add_to_gallery(_catalog(), args.gallery, args.images, encoder_for=_image_encoders(args, stack))
    emit(result, args.json)
    return 0


def _gallery_remove(args: argparse.Namespace) -> int:
    from reid.gallery import remove_from_gallery

    emit(remove_from_gallery(_catalog(), args.gallery, args.ids), args.json)
    return 0


def _gallery_drop(args: argparse.Namespace) -> int:
    from reid.gallery import drop_gallery

    emit(drop_gallery(_catalog(), args.gallery), args.json)
    return 0


def _gallery_upgrade(args: argparse.Namespace) -> int:
    from reid.gallery import upgrade_gallery

    emit(upgrade_gallery(_catalog(), args.gallery, args.model, sample=args.sample, check=args.check),
         args.json)
    return 0


def _kinds(text: str | None) -> tuple[str, ...] | None:
    """`--lq-kinds a,b` checked against the known degradations (a one-line error names the unknown)."""
    from indexer.errors import UserError
    from reid.degrade import check_kinds

    if text is None:
        return None
    try:
        return check_kinds([k.strip() for k in text.split(",") if k.strip()])
    except ValueError as e:
        raise UserError(f"--lq-kinds: {e}") from None


def _train(args: argparse.Namespace) -> int:
    from embedkd.threads import set_torch_threads
    from reid.training import TrainOptions, train_reid

    set_torch_threads(args.threads)

    opts = TrainOptions(
        backbone=args.backbone, pool=args.pool, height=args.height, width=args.width,
        pretrained=not args.no_pretrained, epochs=args.epochs, p=args.p, k=args.k, lr=args.lr,
        metric=args.metric, center_weight=args.center_weight, lq_prob=args.lq_prob, teacher=args.teacher,
        init=args.init, attributes=args.attributes, distill_logits=args.distill_logits,
        distill_temperature=args.distill_temperature, eval_every=args.eval_every, max_minutes=args.max_minutes or None,
        seed=args.seed, workers=args.workers, lq_kinds=_kinds(args.lq_kinds),
    )
    summary = train_reid(args.data, args.out, opts, quiet=args.quiet)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one process reports
        emit(summary, args.json)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from reid.evaluation import evaluate_model

    kinds = _kinds(args.lq_kinds)
    if kinds and not args.lq:
        from indexer.errors import UserError

        raise UserError("--lq-kinds restricts the --lq protocol's degradations; add --lq")
    result = evaluate_model(args.model, args.data, lq=args.lq, rerank=args.rerank, lq_kinds=kinds,
                            tracklet=args.tracklet)
    tracklet = {"tracklet": args.tracklet, "mean_crops": result["mean_crops"]} if args.tracklet > 1 else {}
    emit({"rank1": result["rank1"], "rank5": result["rank5"], "mAP": result["mAP"],
          "rank10": result["rank10"], "queries": result["queries"], "lq": args.lq,
          **({"lq_kinds": list(kinds)} if kinds else {}), "rerank": args.rerank, **tracklet},
         args.json)
    return 0
