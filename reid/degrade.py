"""Low-quality (LQ) degradations of person crops, as CCTV produces them: pixelation, defocus blur,
motion blur, JPEG compression, downscale-upscale. Each takes a PIL image, a severity 1..5 and a
numpy Generator, and returns a new PIL image of the same size. Pixel sizes scale with the image
height relative to Market-1501's native 128 px, so a severity means the same at 128x64 and 256x128.

`lq_protocol` is the fixed, seeded evaluation protocol behind `embedkd reid eval --lq`:
each query crop gets exactly one degradation, its kind and severity drawn uniformly (5 kinds x
severities 1..5) from a generator seeded by (seed=0, CRC-32 of the file name). The result depends
only on the file name and pixels, never on the order in which crops are read.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = [
    "DEGRADATIONS",
    "SEVERITIES",
    "pixelate",
    "defocus_blur",
    "motion_blur",
    "jpeg",
    "downscale",
    "degrade",
    "random_degradation",
    "lq_protocol",
    "LQ_PROTOCOL_SEED",
]

LQ_PROTOCOL_SEED = 0
SEVERITIES = (1, 2, 3, 4, 5)

# Per severity 1..5, at an image height of 128 px.
_PIXEL_BLOCK = (2.0, 3.0, 4.0, 5.0, 6.0)  # pixelation block size (px)
_DEFOCUS_RADIUS = (1.0, 1.5, 2.0, 2.5, 3.0)  # disk kernel radius (px)
_MOTION_LENGTH = (3.0, 5.0, 7.0, 9.0, 11.0)  # line kernel length (px)
_JPEG_QUALITY = (40, 25, 15, 10, 6)  # JPEG quality (not scaled)
_DOWNSCALE = (1.5, 2.0, 3.0, 4.0, 5.0)  # downscale factor before bilinear upscale


def _check(severity: int) -> int:
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")
    return severity - 1


def _scale(img: Image.Image) -> float:
    return img.height / 128.0


def _resample_down_up(img: Image.Image, factor: float, up: Image.Resampling) -> Image.Image:
    w, h = img.size
    small = img.resize((max(1, round(w / factor)), max(1, round(h / factor))), Image.Resampling.BOX)
    return small.resize((w, h), up)


def _convolve(img: Image.Image, kernel: np.ndarray) -> Image.Image:
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    kernel = (kernel / kernel.sum()).astype(np.float32)
    out = np.stack([ndimage.convolve(arr[..., c], kernel, mode="reflect") for c in range(3)], axis=-1)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def pixelate(img: Image.Image, severity: int, rng: np.random.Generator | None = None) -> Image.Image:
    """Average over blocks, then show each block as one colour (nearest-neighbour upscale)."""
    block = max(1.0, _PIXEL_BLOCK[_check(severity)] * _scale(img))
    return _resample_down_up(img.convert("RGB"), block, Image.Resampling.NEAREST)


def defocus_blur(img: Image.Image, severity: int, rng: np.random.Generator | None = None) -> Image.Image:
    """Convolve with a disk (out-of-focus lens)."""
    radius = _DEFOCUS_RADIUS[_check(severity)] * _scale(img)
    r = int(np.ceil(radius))
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    kernel = (x**2 + y**2 <= radius**2 + 1e-6).astype(np.float32)
    return _convolve(img, kernel)


def motion_blur(img: Image.Image, severity: int, rng: np.random.Generator | None = None) -> Image.Image:
    """Convolve with a line of the severity's length at a random angle (drawn from `rng`)."""
    rng = rng or np.random.default_rng(0)
    length = _MOTION_LENGTH[_check(severity)] * _scale(img)
    angle = rng.uniform(0.0, np.pi)
    r = int(np.ceil(length / 2))
    size = 2 * r + 1
    kernel = np.zeros((size, size), dtype=np.float32)
    for t in np.linspace(-length / 2, length / 2, num=max(2, int(length * 4))):
        kernel[int(round(r + t * np.sin(angle))), int(round(r + t * np.cos(angle)))] = 1.0
    return _convolve(img, kernel)


def jpeg(img: Image.Image, severity: int, rng: np.random.Generator | None = None) -> Image.Image:
    """Re-encode as JPEG at a low quality."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=_JPEG_QUALITY[_check(severity)])
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


def downscale(img: Image.Image, severity: int, rng: np.random.Generator | None = None) -> Image.Image:
    """Downscale (a far-away, low-resolution camera) and upscale back with bilinear interpolation."""
    return _resample_down_up(img.convert("RGB"), _DOWNSCALE[_check(severity)], Image.Resampling.BILINEAR)


DEGRADATIONS: dict[str, Callable[[Image.Image, int, np.random.Generator | None], Image.Image]] = {
    "pixelate": pixelate,
    "defocus_blur": defocus_blur,
    "motion_blur": motion_blur,
    "jpeg": jpeg,
    "downscale": downscale,
}


def degrade(img: Image.Image, kind: str, severity: int, rng: np.random.Generator | None = None) -> Image.Image:
    """Apply one named degradation. Raises ValueError on an unknown kind or severity."""
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}; choose from {sorted(DEGRADATIONS)}")
    return DEGRADATIONS[kind](img, severity, rng)


def check_kinds(kinds: Sequence[str] | None) -> tuple[str, ...]:
    """The degradation kinds to draw from (all five when None), in DEGRADATIONS' order.
    Raises ValueError naming the unknown ones."""
    if kinds is None:
        return tuple(DEGRADATIONS)
    unknown = sorted(set(kinds) - set(DEGRADATIONS))
    if unknown or not kinds:
        raise ValueError(f"unknown degradation kind(s) {unknown or '(none given)'}; choose from {list(DEGRADATIONS)}")
    return tuple(k for k in DEGRADATIONS if k in set(kinds))


def random_degradation(img: Image.Image, rng: np.random.Generator, max_ops: int = 2,
                       kinds: Sequence[str] | None = None) -> Image.Image:
    """Training-time LQ augmentation: 1..max_ops distinct degradations (of `kinds`, default all) in random
    order, each with a severity drawn uniformly from 1..5."""
    pool = check_kinds(kinds)
    n = int(rng.integers(1, min(max_ops, len(pool)) + 1))
    for kind in rng.choice(list(pool), size=n, replace=False):
        img = degrade(img, str(kind), int(rng.integers(1, 6)), rng)
    return img


def lq_protocol(img: Image.Image, key: str, seed: int = LQ_PROTOCOL_SEED,
                kinds: Sequence[str] | None = None) -> Image.Image:
    """The fixed evaluation degradation of one crop; `key` is its file name (not the full path).
    `kinds` restricts the kind drawn (default all five: the `--lq` protocol); severity is drawn as always."""
    pool = check_kinds(kinds)
    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])
    kind = pool[int(rng.integers(0, len(pool)))]
    severity = int(rng.integers(1, 6))
    return degrade(img, kind, severity, rng)
