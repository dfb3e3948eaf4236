"""The usual ReID transforms (resize, flip, pad-crop, random erasing), optionally paired with an LQ copy.

Training for distillation needs the same geometric augmentation on the clean crop (teacher input) and
on its degraded copy (student input); `PairedTrainTransform` does the geometry once, degrades with
probability `lq_prob`, and erases the same box in both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, UnidentifiedImageError
from torchvision import transforms as T

from indexer.errors import UserError

from .degrade import random_degradation

__all__ = ["load_image", "TestTransform", "PairedTrainTransform", "MIN_SIDE"]

MIN_SIDE = 16  # smaller crops carry no usable appearance


def load_image(path: str | Path) -> Image.Image:
    """Read an image as RGB. Raises UserError when it cannot be read or is smaller than 16 px a side."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise UserError(f"cannot read image {path} ({err.__class__.__name__}); replace or remove it") from None
    if min(img.size) < MIN_SIDE:
        raise UserError(
            f"image {path} is {img.size[0]}x{img.size[1]} px; person crops need at least {MIN_SIDE} px a side"
        )
    return img


class TestTransform:
    """Resize to (height, width), to tensor, normalize."""

    def __init__(self, height: int, width: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.size = (height, width)
        self.mean, self.std = list(mean), list(std)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = img.resize(self.size[::-1], Image.Resampling.BILINEAR) if img.size != self.size[::-1] else img
        return TF.normalize(TF.to_tensor(img), self.mean, self.std)


class PairedTrainTransform:
    """Resize, flip, pad 10 px (scaled) and crop back, then maybe degrade, normalize, random-erase.

    Returns `(student, teacher, degraded)`: the student input (degraded with probability `lq_prob`, by
    1-2 of `lq_kinds`, default all),
    the clean teacher input (same geometry, same erased box) and whether it was degraded. The teacher's
    input is normalized with `teacher_mean` / `teacher_std` (default: the student's): a teacher of
    another architecture expects its own statistics (timm's tf_ EfficientNets 0.5/0.5, MobileNetV2
    ImageNet's), and fed the student's it sees shifted colours and gives worse targets.
    """

    def __init__(
        self,
        height: int,
        width: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        lq_prob: float = 0.0,
        erase_prob: float = 0.5,
        teacher_mean: tuple[float, ...] | None = None,
        teacher_std: tuple[float, ...] | None = None,
        lq_kinds: tuple[str, ...] | None = None,
    ) -> None:
        self.size = (height, width)
        self.pad = max(1, round(10 * height / 256))
        self.mean, self.std = list(mean), list(std)
        self.teacher_mean = list(teacher_mean) if teacher_mean is not None else self.mean
        self.teacher_std = list(teacher_std) if teacher_std is not None else self.std
        self.lq_prob, self.erase_prob = lq_prob, erase_prob
        self.lq_kinds = lq_kinds  # degradation kinds drawn from; None: all

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, torch.Tensor, bool]:
        # torch's RNG is seeded per DataLoader worker, so draws differ across workers.
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,))))
        h, w = self.size
        if img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            img = TF.hflip(img)
        padded = TF.pad(img, self.pad, padding_mode="constant")
        top, left = (int(rng.integers(0, 2 * self.pad + 1)) for _ in range(2))
        clean = TF.crop(padded, top, left, h, w)
        degraded = bool(self.lq_prob > 0 and rng.random() < self.lq_prob)
        student_img = random_degradation(clean, rng, kinds=self.lq_kinds) if degraded else clean
        clean_t = TF.to_tensor(clean)
        teacher = TF.normalize(clean_t, self.teacher_mean, self.teacher_std)
        student = TF.normalize(TF.to_tensor(student_img) if degraded else clean_t, self.mean, self.std)
        if rng.random() < self.erase_prob:
            i, j, eh, ew, _ = T.RandomErasing.get_params(teacher, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=[0.0])
            teacher = teacher.clone()
            teacher[:, i : i + eh, j : j + ew] = 0.0
            student[:, i : i + eh, j : j + ew] = 0.0
        return student, teacher, degraded
