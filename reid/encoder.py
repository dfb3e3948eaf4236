"""A ReID model as an `indexer` image encoder: `encoder(items) -> float32 (n, dim)`, plus `.record`.

Items may be image paths, `ImageRef`s (path + content hash, what gallery documents hold), PIL images
or encoded image bytes (HTTP uploads). `indexer` never sees torch: it calls the encoder.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from embedkd.fingerprint import fingerprint_module
from indexer.encoder import ModelRecord
from indexer.errors import UserError
from indexer.hashing import sha256_file as file_sha256

from .transforms import MIN_SIDE, load_image

__all__ = ["ImageRef", "ImageEncoder", "load_image_encoder", "file_sha256", "fingerprint_model", "to_image"]


def fingerprint_model(module) -> str:
    """The model's weight fingerprint (shared with text models)."""
    return fingerprint_module(module)


@dataclass(frozen=True)
class ImageRef:
    """An image file and the sha256 of its bytes. `str()` is the hash, so the index's content key
    changes when the crop's pixels change, not when the file moves."""

    path: str
    sha256: str

    def __str__(self) -> str:
        return f"image-sha256:{self.sha256}"


def to_image(item: Any) -> Image.Image:
    """An RGB PIL image from a path, ImageRef, PIL image or encoded bytes. UserError when unusable."""
    if isinstance(item, ImageRef):
        return load_image(item.path)
    if isinstance(item, (str, Path)):
        return load_image(item)
    if isinstance(item, Image.Image):
        img = item.convert("RGB")
    elif isinstance(item, (bytes, bytearray)):
        try:
            with Image.open(io.BytesIO(item)) as raw:
                img = raw.convert("RGB")
        except (OSError, UnidentifiedImageError):
            raise UserError("the uploaded data is not a readable image; send a JPEG or PNG person crop") from None
    else:
        raise UserError(f"cannot use a {type(item).__name__} as an image; give a path, PIL image or image bytes")
    if min(img.size) < MIN_SIDE:
        raise UserError(f"the image is {img.size[0]}x{img.size[1]} px; person crops need at least {MIN_SIDE} px a side")
    return img


class ImageEncoder:
    """Wraps a loaded `ReIDModel`. With `lq`, inputs are degraded by the fixed LQ protocol first
    (keyed by file name; images without a name use the key "upload") — for tests of LQ queries."""

    def __init__(self, model, source: str, batch_size: int | None = None, lq: bool = False) -> None:
        self.model = model.eval()
        self.batch_size = batch_size
        self.lq = lq
        spec = model.spec
        self.record = ModelRecord(
            name=f"reid:{Path(source).name}",
            source=source,
            dimension=int(model.dim),
            fingerprint=fingerprint_model(model),
            kind="image",
            normalized=True,
            info={"backbone": spec.backbone, "input_size": [spec.height, spec.width]},
        )

    def __call__(self, items: Sequence[Any]) -> np.ndarray:
        from .degrade import lq_protocol
        from .evaluation import embed_images

        images = []
        for item in items:
            img = to_image(item)
            if self.lq:
                name = Path(item.path if isinstance(item, ImageRef) else str(item)).name if isinstance(
                    item, (ImageRef, str, Path)) else "upload"
                img = lq_protocol(img, name)
            images.append(img)
        if not images:
            return np.zeros((0, self.record.dimension), dtype=np.float32)
        return embed_images(self.model, images, self.batch_size)


def load_image_encoder(model_dir: str | Path, batch_size: int | None = None, lq: bool = False) -> ImageEncoder:
    """The encoder of a model folder written by `embedkd reid train`; its record's source is the
    folder's absolute path (what the index remembers to load it again)."""
    from .model import load_model

    torch.set_flush_denormal(True)
    folder = Path(model_dir).expanduser().resolve()
    model, _ = load_model(folder)
    return ImageEncoder(model, str(folder), batch_size=batch_size, lq=lq)


def worker_image_encoder(model_dir: str, threads: int = 1) -> ImageEncoder:
    """`load_image_encoder` on a Ray worker (`indexer.distributed.RayEncoder`'s factory, with
    functools.partial): the worker's own torch threads first. The crops' paths must be readable there."""
    from embedkd.threads import set_torch_threads

    set_torch_threads(threads)
    return load_image_encoder(model_dir)
