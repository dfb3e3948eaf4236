"""What command handlers share: opening the catalog and loading encoders (config at the edge)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["add_encoder_options", "add_ray_options", "add_search_options", "catalog_from_env", "job_encoder",
           "ray_encoder", "require_text_index", "searcher_from_args", "text_encoder_loader"]


def catalog_from_env():
    from indexer.context import open_catalog

    return open_catalog()


def require_text_index(catalog, name: str) -> str:
    """The text index's model source; an unknown name or an index of images (a ReID gallery) is an error."""
    from indexer.catalog import get_index

    with catalog.session() as s:
        return get_index(s, name, kind="text").model.source


def add_encoder_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=None,
                   help="texts per encoder batch (default 16 on a CPU, where small batches encode faster, 64 on a GPU)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="encoder arithmetic; auto = bf16 where the hardware has it natively")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: all cores, or 1 when other jobs already load every core)")


def add_search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nprobe", type=int, default=None,
                   help="IVF indexes: inverted lists to visit (default: 1/16 of them, at least 16)")
    p.add_argument("--ef-search", type=int, default=None, help="HNSW indexes: candidate list size (default 128)")


def searcher_from_args(args: argparse.Namespace):
    """A Searcher over the catalog with the command's encoder and search options."""
    from indexer.search import Searcher

    return Searcher(catalog_from_env(), text_encoder_loader(args), nprobe=getattr(args, "nprobe", None),
                    ef_search=getattr(args, "ef_search", None), kind="text")


def text_encoder_loader(args: argparse.Namespace):
    """A function source -> TextEncoder using the command's device/batch/precision options."""
    import torch

    from embedkd.text_encoder import load_text_encoder
    from embedkd.threads import set_torch_threads

    torch.set_flush_denormal(True)
    set_torch_threads(getattr(args, "threads", None))

    def load(source: str):
        return load_text_encoder(source, device=getattr(args, "device", None),
                                 batch_size=getattr(args, "batch_size", None),
                                 precision=getattr(args, "precision", "auto"))

    return load


def add_ray_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("encoding on a Ray cluster (pip install 'embedkd[ray]')")
    g.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="encode on Ray workers: 'local' starts Ray here, 'auto' joins the cluster RAY_ADDRESS names, "
                        "or the head's address; checkpoints, the index file and the catalog stay with this process")
    g.add_argument("--workers", type=int, default=None, help="Ray workers, each with its own copy of the model (default 2)")
    g.add_argument("--worker-cpus", type=float, default=None, help="CPUs per worker; its torch threads (default 1)")
    g.add_argument("--worker-gpus", type=float, default=None, help="GPUs per worker (default 0; 1 puts each on a GPU)")


@contextmanager
def ray_encoder(args: argparse.Namespace, factory_for: Callable[[int], Callable]) -> Iterator:
    """Ray workers placed by the command's --ray options, each building its encoder with
    `factory_for(threads)`; None without --ray."""
    from indexer.errors import UserError

    workers, cpus, gpus = args.workers, args.worker_cpus, args.worker_gpus
    if not args.ray:
        if (workers, cpus, gpus) != (None, None, None):
            raise UserError("--workers, --worker-cpus and --worker-gpus place Ray workers; add --ray local (or a cluster)")
        yield None
        return
    from indexer.distributed import RayEncoder

    cpus = 1.0 if cpus is None else cpus
    with RayEncoder(factory_for(max(1, int(cpus))), workers=2 if workers is None else workers, cpus_per_worker=cpus,
                    gpus_per_worker=gpus or 0.0, address=args.ray) as encoder:
        yield encoder


@contextmanager
def job_encoder(args: argparse.Namespace, source: str) -> Iterator:
    """The text encoder of a write job (build, add, backfill): in this process, or on Ray workers with --ray."""
    from functools import partial

    from embedkd.text_encoder import model_source, worker_text_encoder

    def factory(threads: int):
        return partial(worker_text_encoder, model_source(source), device=args.device, batch_size=args.batch_size,
                       precision=args.precision, threads=args.threads or threads)

    with ray_encoder(args, factory) as remote:
        yield remote if remote is not None else text_encoder_loader(args)(source)
