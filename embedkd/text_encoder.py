"""Text encoders: a sentence-transformers model behind the `indexer.encoder.Encoder` contract."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from indexer.encoder import ModelRecord
from indexer.errors import UserError

from .distill.prune import is_prune_spec, load_student
from .fingerprint import fingerprint_module
from .model_kind import refuse_reid_model

__all__ = ["TextEncoder", "encode_role", "role_prompts", "load_text_encoder", "default_batch_size", "default_device",
           "load_sentence_transformer", "model_source", "resolve_precision", "worker_text_encoder"]

log = logging.getLogger(__name__)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_precision(precision: str, device: str) -> str:
    """'auto' is bf16 where the hardware computes it natively (CUDA, AVX512-BF16/AMX CPUs), else fp32.

    bf16 autocast keeps normalized embeddings within cosine 0.9999 of fp32 (docs/index_benchmark.md)
    and encodes ~1.5x faster on such CPUs.
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise UserError(f"precision {precision!r} is not supported; use auto, fp32 or bf16")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    except (AttributeError, RuntimeError):
        return "fp32"


def load_sentence_transformer(model: str, device: str | None = None):
    """Load a SentenceTransformer by local path or hub name, or a prune spec `prune:MODEL:LAYERS` (the
    undistilled student, so it can be evaluated or indexed like any model), with a one-line error when
    it cannot."""
    from sentence_transformers import SentenceTransformer

    if is_prune_spec(model):
        return load_student(model, device or default_device())[0]
    path = Path(model).expanduser()
    if not path.exists() and (model.startswith((".", "/", "~")) or os.sep * 2 in model or model.endswith(os.sep)):
        raise UserError(f"model path {model!r} does not exist; give a sentence-transformers folder or a hub name")
    refuse_reid_model(model)
    source = str(path) if path.exists() else model
    try:
        return SentenceTransformer(source, device=device or default_device())
    except Exception as err:  # hub unreachable, not a model folder, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"cannot load model {model!r} ({first[:200]}); give a local sentence-transformers folder "
            "or a hub name reachable from this machine"
        ) from None


ROLE_PROMPTS = {"query": ("query",), "document": ("document", "passage", "corpus")}


def role_prompt_name(model, role: str) -> str | None:
    """Name of the model's prompt for `role`: the first non-empty one (sentence-transformers 6 fills in
    an empty "document" prompt, which would otherwise hide an e5-style "passage" one)."""
    if role not in ROLE_PROMPTS:
        raise ValueError(f"role must be 'query' or 'document', not {role!r}")
    prompts = getattr(model, "prompts", None) or {}
    return next((n for n in ROLE_PROMPTS[role] if prompts.get(n)), None)


def role_prompts(model) -> dict[str, str]:
    """The prompt the model puts before queries and before documents, for the roles that have one."""
    names = {role: role_prompt_name(model, role) for role in ROLE_PROMPTS}
    return {role: model.prompts[name] for role, name in names.items() if name is not None}


def encode_role(model, texts: Sequence[str], role: str, **kwargs):
    """`model.encode` for queries or documents: sentence-transformers' `encode_query` / `encode_document`
    add the model's own prompt for that role ("query: ", "search_document: ", ...) and route asymmetric
    models to the right branch; a model without prompts gets the same vectors as from `encode`."""
    name = role_prompt_name(model, role)
    if name is not None:
        kwargs["prompt_name"] = name
    method = getattr(model, f"encode_{role}", None)  # sentence-transformers >= 5
    return (method or model.encode)(list(texts), **kwargs)


class TextEncoder:
    """Callable `list[str] -> float32 (n, d)`, L2-normalized, plus the model's catalog record.

    Texts are sorted by length before batching so each batch pads little; results come back in
    input order.
    """

    def __init__(self, model, name: str, batch_size: int | None = None, info: dict | None = None,
                 precision: str = "auto") -> None:
        self.model = model
        self.batch_size = batch_size or default_batch_size(str(model.device))
        self.precision = resolve_precision(precision, str(model.device))
        dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else (
            model.get_sentence_embedding_dimension())
        self.record = ModelRecord(name=name, source=name, dimension=int(dim), fingerprint=fingerprint_module(model),
                                  kind="text", normalized=True, info=info or {})

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Documents: the model's document prompt ("document", "passage" or "corpus") where it has one."""
        if not len(texts):
            return np.zeros((0, self.record.dimension), np.float32)
        return self._encode(list(texts), "document")

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Queries: the model's query prompt where it has one (e5, bge, nomic-style models)."""
        if not len(texts):
            return np.zeros((0, self.record.dimension), np.float32)
        return self._encode(list(texts), "query")

    def _encode(self, texts: list[str], role: str) -> np.ndarray:
        device_type = "cuda" if str(self.model.device).startswith("cuda") else "cpu"
        with torch.inference_mode(), torch.autocast(device_type, dtype=torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            out = encode_role(self.model, texts, role, batch_size=self.batch_size, convert_to_tensor=True,
                              show_progress_bar=False)
        out = out.float()
        out = torch.nn.functional.normalize(out, dim=-1)  # after the cast: unit norm in float32
        return np.ascontiguousarray(out.cpu().numpy(), dtype=np.float32)


def default_batch_size(device: str) -> int:
    """Texts per batch when the caller gives none: 16 on a CPU, 64 on a GPU.

    On a CPU smaller batches encode faster (`benchmarks/encode_batch.py`, docs/index_benchmark.md:
    batch 16 against 64, bf16, 1.2x for all-MiniLM-L6-v2 and 2.1x for all-mpnet-base-v2 on this 2-core
    machine; 128 is slower still), most likely because a smaller batch's activations stay in cache.
    A GPU wants large batches (not measured here)."""
    return 64 if device.startswith("cuda") else 16


def load_text_encoder(model: str, device: str | None = None, batch_size: int | None = None,
                      precision: str = "auto") -> TextEncoder:
    st = load_sentence_transformer(model, device)
    return TextEncoder(st, name=model_source(model), batch_size=batch_size, precision=precision)


def model_source(model: str) -> str:
    """How a model is named in the catalog and handed to other processes (Ray workers, which need not share
    this one's working directory): a local path as its absolute path, anything else (a hub name, a prune
    spec) as given."""
    return str(Path(model).expanduser().resolve()) if os.path.exists(os.path.expanduser(model)) else model


def worker_text_encoder(model: str, device: str | None = None, batch_size: int | None = None,
                        precision: str = "auto", threads: int = 1) -> TextEncoder:
    """`load_text_encoder` on a Ray worker (`indexer.distributed.RayEncoder`'s factory, with
    functools.partial): the worker's own torch threads first, then the model."""
    from .threads import set_torch_threads

    torch.set_flush_denormal(True)  # CPU encoding is many times slower on denormals
    set_torch_threads(threads)
    return load_text_encoder(model, device=device, batch_size=batch_size, precision=precision)
