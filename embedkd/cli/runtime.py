"""What command handlers share: opening the catalog and loading encoders (config at the edge)."""

from __future__ import annotations

import argparse

__all__ = ["catalog_from_env", "text_encoder_loader", "add_encoder_options"]


def catalog_from_env():
    from indexer.context import open_catalog

    return open_catalog()


def add_encoder_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=64, help="texts per encoder batch (default 64)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="encoder arithmetic; auto = bf16 where the hardware has it natively")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: all cores, or 1 when other jobs already load every core)")


def text_encoder_loader(args: argparse.Namespace):
    """A function source -> TextEncoder using the command's device/batch/precision options."""
    import torch

    from embedkd.text_encoder import load_text_encoder
    from embedkd.threads import set_torch_threads

    torch.set_flush_denormal(True)
    set_torch_threads(getattr(args, "threads", None))

    def load(source: str):
        return load_text_encoder(source, device=getattr(args, "device", None),
                                 batch_size=getattr(args, "batch_size", 64),
                                 precision=getattr(args, "precision", "auto"))

    return load
