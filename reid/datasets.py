"""torch Dataset over `(path, label, camid)` samples for training (with paired clean/LQ views)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .data import Sample
from .transforms import PairedTrainTransform, load_image

__all__ = ["TrainSet"]


class TrainSet(Dataset):
    """Items are dicts: `student` (maybe degraded), `teacher` (clean, same geometry), `label`,
    `degraded` (bool) and `attributes` ((tasks,) int64; empty when none are given).

    Images are decoded once and kept in memory: Market crops are 64x128 (9,173 crops ~ 225 MB as
    RGB), and decoding every epoch costs more than the transforms on a small CPU.
    """

    def __init__(
        self,
        samples: list[Sample],
        transform: PairedTrainTransform,
        attributes: np.ndarray | None = None,
        cache: bool = True,
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.attributes = attributes
        self._cache: dict[int, object] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def _image(self, index: int):
        if self._cache is None:
            return load_image(self.samples[index].path)
        if index not in self._cache:
            self._cache[index] = load_image(self.samples[index].path)
        return self._cache[index]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        student, teacher, degraded = self.transform(self._image(index))
        attrs = self.attributes[index] if self.attributes is not None else np.zeros(0, dtype=np.int64)
        return {
            "student": student,
            "teacher": teacher,
            "label": torch.tensor(self.samples[index].pid, dtype=torch.long),
            "degraded": torch.tensor(degraded),
            "attributes": torch.as_tensor(attrs, dtype=torch.long),
        }
