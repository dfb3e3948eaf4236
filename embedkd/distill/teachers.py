"""Teachers: a sentence-transformers CrossEncoder or SentenceTransformer behind one scoring interface.

`teacher.score(query, documents)` returns one relevance score per document. Pair scores are cached
on disk (one SQLite file per teacher fingerprint, keyed by the query and document text), so a second
run does not re-score. A bi-encoder teacher also gives embeddings (`encode`), which embedding and
attention distillation use; its score is the cosine of normalized embeddings.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from indexer.errors import UserError

from .cache import ScoreCache, cached_embeddings, texts_key

__all__ = ["BiEncoderTeacher", "CrossEncoderTeacher", "Teacher", "detect_kind", "load_teacher"]

log = logging.getLogger(__name__)

KINDS = ("auto", "bi-encoder", "cross-encoder")


@runtime_checkable
class Teacher(Protocol):
    name: str
    kind: str
    fingerprint: str

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray: ...

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray: ...


class _Cached:
    """Shared pair-score caching; subclasses implement `_compute(pairs)`."""

    name: str
    fingerprint: str
    cache: ScoreCache | None = None

    def use_cache(self, cache_dir: Path | None) -> None:
        self.cache = ScoreCache(Path(cache_dir), self.fingerprint) if cache_dir is not None else None

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        return self.score_pairs([(query, d) for d in documents])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros(0, np.float32)
        if self.cache is None:
            return self._compute(list(pairs))
        keys = [ScoreCache.key(q, d) for q, d in pairs]
        known = self.cache.get_many(sorted(set(keys)))
        todo = sorted({k: i for i, k in enumerate(keys) if k not in known}.items(), key=lambda kv: kv[1])
        if todo:
            scores = self._compute([pairs[i] for _, i in todo])
            fresh = {k: float(s) for (k, _), s in zip(todo, scores)}
            self.cache.put_many(fresh)
            known.update(fresh)
        return np.asarray([known[k] for k in keys], dtype=np.float32)

    def _compute(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        raise NotImplementedError


class BiEncoderTeacher(_Cached):
    kind = "bi-encoder"

    def __init__(self, model, name: str, batch_size: int | None = None) -> None:
        from embedkd.fingerprint import fingerprint_module
        from embedkd.text_encoder import default_batch_size

        self.model = model
        self.name = name
        self.batch_size = batch_size or default_batch_size(str(model.device))
        self.fingerprint = fingerprint_module(model)
        self.embedding_cache: Path | None = None
        self._known: dict[str, dict[str, np.ndarray]] = {"query": {}, "document": {}}
        self.disk_cache_min = 256  # fewer new texts than this are not worth a cache file
        self.lexical = None  # a LexicalScorer fused into every score (`fuse_lexical`)
        self.lexical_weight = 0.0
        self.document_tokens: int | None = None  # `truncate_documents`

    def truncate_documents(self, tokens: int) -> None:
        """Encode documents from their first `tokens` tokens only (the student's training length), so the
        teacher's targets come from the text the student sees; it also halves a long corpus's encoding."""
        tokens = min(int(tokens), self.model.max_seq_length)
        if tokens != self.document_tokens:
            self.document_tokens = tokens
            self._known["document"] = {}

    def fuse_lexical(self, scorer, weight: float) -> None:
        """Score = cosine + weight x normalised BM25 (`lexical.py`); embeddings stay the dense model's."""
        self.lexical, self.lexical_weight = (scorer, float(weight)) if weight > 0 else (None, 0.0)

    def lexical_matrix(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray | None:
        """What fusion adds to every (query, document) cosine of a batch, or None without fusion."""
        if self.lexical is None:
            return None
        return self.lexical_weight * self.lexical.matrix(queries, documents)

    def use_cache(self, cache_dir: Path | None) -> None:
        super().use_cache(cache_dir)
        self.embedding_cache = Path(cache_dir) if cache_dir is not None else None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Normalized float32 document embeddings (the model's document prompt, if it has one). Texts
        seen before come from memory; a large batch of new texts (a corpus) is cached on disk by
        teacher fingerprint and texts."""
        return self._encode_role(texts, "document")

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Like `encode`, for queries (the model's query prompt, if it has one)."""
        return self._encode_role(texts, "query")

    def _encode_role(self, texts: Sequence[str], role: str) -> np.ndarray:
        from embedkd.text_encoder import role_prompts

        texts, known = list(texts), self._known[role]
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            def run(batch: list[str]) -> np.ndarray:
                return self._run(batch, role)

            prompt = role_prompts(self.model).get(role)
            if self.embedding_cache is not None and len(missing) >= self.disk_cache_min:
                # a prompt or a token limit changes the vectors, so it is part of the key; keys without
                # either stay as they were
                extra = [role, prompt] if prompt else []
                if role == "document" and self.document_tokens is not None:
                    extra += ["tokens", str(self.document_tokens)]
                key = self.fingerprint if not extra else f"{self.fingerprint[:8]}{texts_key(extra)[:8]}"
                vectors = cached_embeddings(self.embedding_cache, key, missing, run)
            else:
                vectors = run(missing)
            known.update(zip(missing, vectors))
        if not texts:
            return np.zeros((0, self.model.get_embedding_dimension()), np.float32)
        return np.stack([known[t] for t in texts]).astype(np.float32, copy=False)

    def _run(self, batch: list[str], role: str) -> np.ndarray:
        import torch

        from embedkd.text_encoder import encode_role

        saved = self.model.max_seq_length
        if role == "document" and self.document_tokens is not None:
            self.model.max_seq_length = self.document_tokens
        try:
            with torch.inference_mode():
                out = encode_role(self.model, batch, role, batch_size=self.batch_size, convert_to_numpy=True,
                                  normalize_embeddings=True, show_progress_bar=len(batch) > 2000)
        finally:
            self.model.max_seq_length = saved
        return np.asarray(out, dtype=np.float32)

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Cosines from (cached) embeddings; cheaper than the pair-score cache, so that is skipped."""
        return self._compute(list(pairs)) if pairs else np.zeros(0, np.float32)

    def _compute(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        queries = self.encode_queries([q for q, _ in pairs])
        docs = self.encode([d for _, d in pairs])
        scores = (queries * docs).sum(axis=1).astype(np.float32)
        if self.lexical is not None:
            scores += self.lexical_weight * np.asarray([self.lexical.score(q, [d])[0] for q, d in pairs], np.float32)
        return scores


class CrossEncoderTeacher(_Cached):
    kind = "cross-encoder"

    def __init__(self, model, name: str, batch_size: int = 32) -> None:
        from embedkd.fingerprint import fingerprint_module

        self.model = model
        self.name = name
        self.batch_size = batch_size
        self.fingerprint = fingerprint_module(model)
        labels = getattr(getattr(model, "config", None), "num_labels", 1)
        if labels != 1:
            raise UserError(
                f"teacher {name!r} is a classifier with {labels} outputs per pair, not a relevance scorer; "
                "give a cross-encoder with one output (train one with `embedkd teacher train`)"
            )

    def _compute(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model.predict(list(pairs), batch_size=self.batch_size, convert_to_numpy=True,
                                     show_progress_bar=len(pairs) > 2000, activation_fn=torch.nn.Identity())
        return np.asarray(out, dtype=np.float32).reshape(len(pairs))


def detect_kind(name: str) -> str:
    """'cross-encoder' for a sequence-classification checkpoint, else 'bi-encoder'."""
    path = Path(name).expanduser()
    if path.is_dir():
        config = path / "config.json"
        archs: list[str] = []
        if config.is_file():
            archs = json.loads(config.read_text()).get("architectures") or []
        if any("ForSequenceClassification" in a for a in archs):
            return "cross-encoder"
        if (path / "modules.json").is_file() or config.is_file():
            return "bi-encoder"
        raise UserError(f"teacher {name!r} is a folder without a model (no config.json or modules.json)")
    lowered = name.lower()
    return "cross-encoder" if ("cross-encoder" in lowered or "rerank" in lowered) else "bi-encoder"


def load_teacher(name: str, kind: str = "auto", device: str | None = None, cache_dir: Path | None = None) -> Teacher:
    """Load a teacher by hub name or local path; check it can score one pair."""
    if kind not in KINDS:
        raise UserError(f"teacher kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
    kind = detect_kind(name) if kind == "auto" else kind
    resolved = str(Path(name).expanduser().resolve()) if Path(name).expanduser().exists() else name
    teacher: BiEncoderTeacher | CrossEncoderTeacher
    try:
        if kind == "cross-encoder":
            from sentence_transformers import CrossEncoder

            teacher = CrossEncoderTeacher(CrossEncoder(resolved, device=device, num_labels=None), resolved)
        else:
            from embedkd.text_encoder import load_sentence_transformer

            teacher = BiEncoderTeacher(load_sentence_transformer(resolved, device), resolved)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - any load/score failure becomes one line for the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot load teacher {name!r} as a {kind} ({first[:200]}); give a local path or hub name") from None
    try:
        probe = teacher._compute([("probe query", "probe document")])
    except Exception as err:  # noqa: BLE001 - any load/score failure becomes one line for the user
        raise UserError(f"teacher {name!r} cannot score a (query, document) pair: {str(err).splitlines()[0][:200]}") from None
    if probe.shape != (1,) or not np.isfinite(probe).all():
        raise UserError(f"teacher {name!r} gave {probe!r} for one pair; a teacher must give one finite score per pair")
    teacher.use_cache(cache_dir)
    return teacher
