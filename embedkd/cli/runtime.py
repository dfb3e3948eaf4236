"""What command handlers share: opening the catalog and loading encoders (config at the edge)."""

from __future__ import annotations

import argparse

__all__ = ["add_encoder_options", "add_search_options", "catalog_from_env", "require_text_index", "searcher_from_args",
           "text_encoder_loader"]


def catalog_from_env():
    from indexer.context import open_catalog

    return open_catalog()


def require_text_index(catalog, name: str) -> str:
    """The text index's model source; an unknown name or an index of images (a ReID gallery) is an error."""
    from indexer.catalog import check_kind, get_index

    with catalog.session() as s:
        row = get_index(s, name)
        check_kind(name, row.model.kind, "text")
        return row.model.source


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
