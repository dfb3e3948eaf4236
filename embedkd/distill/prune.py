"""Minitron-style depth pruning: a student made from a trained model by keeping some of its layers.

A prune spec reads `prune:MODEL:LAYERS`. LAYERS is either a count (`3`: keep that many layers,
chosen by `default_layers`) or an explicit comma list of 0-based layer indices (`0,2,5`).

Which layers to keep: `default_layers` keeps evenly spaced layers that always include the first and
the last. The first layer turns token embeddings into contextual ones and the last one is what the
pooling head was trained on; dropping either moves the embedding space furthest. Measured on
all-MiniLM-L6-v2 and 300 SciFact passages before any training (mean cosine to the teacher's
embedding / correlation of the doc-doc similarity matrices): 0,3,5 -> 0.54 / 0.78, 0,2,5 -> 0.43 /
0.74, 3,4,5 -> 0.44 / 0.69, 1,3,5 -> 0.35 / 0.62, 0,1,2 -> 0.18 / 0.64; so halves round up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from indexer.errors import UserError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "PruneSpec",
    "default_layers",
    "load_student",
    "parse_prune_spec",
    "prune_model",
    "transformer_layers",
]

_PREFIX = "prune:"


@dataclass(frozen=True)
class PruneSpec:
    model: str
    count: int | None  # keep this many layers, chosen by default_layers
    layers: tuple[int, ...] | None  # or exactly these

    def __str__(self) -> str:
        keep = str(self.count) if self.layers is None else ",".join(map(str, self.layers))
        return f"{_PREFIX}{self.model}:{keep}"


def is_prune_spec(text: str) -> bool:
    return text.startswith(_PREFIX)


def parse_prune_spec(text: str) -> PruneSpec:
    """Parse `prune:MODEL:LAYERS`; the model part may itself contain ':' (e.g. a Windows path)."""
    if not is_prune_spec(text):
        raise UserError(f"'{text}' is not a prune spec; write prune:MODEL:LAYERS, e.g. prune:all-MiniLM-L6-v2:3")
    body = text[len(_PREFIX):]
    model, sep, keep = body.rpartition(":")
    if not sep or not model or not keep:
        raise UserError(f"prune spec '{text}' needs a model and layers: prune:MODEL:LAYERS, e.g. prune:MODEL:3")
    if re.fullmatch(r"\d+", keep):
        return PruneSpec(model=model, count=int(keep), layers=None)
    if re.fullmatch(r"\d+(,\d+)*", keep):
        layers = tuple(int(x) for x in keep.split(","))
        if len(set(layers)) != len(layers) or list(layers) != sorted(layers):
            raise UserError(f"prune spec '{text}': layer indices must be distinct and increasing, e.g. 0,2,5")
        return PruneSpec(model=model, count=None, layers=layers)
    raise UserError(f"prune spec '{text}': LAYERS must be a count (3) or 0-based indices (0,2,5)")


def default_layers(total: int, keep: int) -> list[int]:
    """`keep` evenly spaced layer indices out of `total`, always including the first and the last."""
    if not 1 <= keep <= total:
        raise UserError(f"cannot keep {keep} layers of a model with {total}; choose 1 to {total}")
    if keep == 1:
        return [total - 1]
    step = (total - 1) / (keep - 1)
    return sorted({int(i * step + 0.5) for i in range(keep)})  # halves round up: 6 -> 3 keeps 0,3,5


def transformer_layers(model: SentenceTransformer):
    """The nn.ModuleList of transformer blocks inside a sentence-transformers model (BERT-like)."""
    backbone = model[0].auto_model
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        obj = backbone
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return backbone, obj, path
    raise UserError(f"cannot prune {type(backbone).__name__}: no encoder layer list found; use a BERT-like model")


def prune_model(model: SentenceTransformer, layers: list[int]) -> SentenceTransformer:
    """Keep only `layers` (0-based) of the model's transformer blocks, in place; returns the model."""
    import torch

    backbone, blocks, path = transformer_layers(model)
    total = len(blocks)
    bad = [i for i in layers if not 0 <= i < total]
    if bad or not layers:
        raise UserError(f"layers {bad or layers} are out of range for a model with {total} layers (0..{total - 1})")
    kept = torch.nn.ModuleList([blocks[i] for i in layers])
    for new_idx, block in enumerate(kept):  # some attention modules index caches by layer
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    owner = backbone
    parts = path.split(".")
    for part in parts[:-1]:
        owner = getattr(owner, part)
    setattr(owner, parts[-1], kept)
    for attr in ("num_hidden_layers", "n_layers", "num_layers"):
        if hasattr(backbone.config, attr):
            setattr(backbone.config, attr, len(layers))
    return model


def load_student(spec_or_model: str, device: str | None = None) -> tuple[SentenceTransformer, dict]:
    """A student from a model name/path or a prune spec; returns (model, lineage info)."""
    from sentence_transformers import SentenceTransformer

    if not is_prune_spec(spec_or_model):
        return _load(spec_or_model, device), {"student_base": spec_or_model}
    spec = parse_prune_spec(spec_or_model)
    model = _load(spec.model, device)
    _, blocks, _ = transformer_layers(model)
    total = len(blocks)
    if spec.layers is None:
        layers = default_layers(total, spec.count)
    else:
        layers = list(spec.layers)
    prune_model(model, layers)
    assert isinstance(model, SentenceTransformer)
    return model, {"student_base": spec.model, "pruned_from_layers": total, "kept_layers": layers}


def _load(name: str, device: str | None) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    from embedkd.model_kind import refuse_reid_model

    refuse_reid_model(name)
    try:
        return SentenceTransformer(name, device=device)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load model '{name}': {str(err).splitlines()[0]}; give a local path or hub name") from err
