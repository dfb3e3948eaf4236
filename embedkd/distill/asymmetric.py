"""A student that encodes documents for its teacher's queries, saved as one sentence-transformers model.

A corpus is encoded once per model version and is where the cost of a search backend lies (millions
of documents); a query is one short text. `distill --query-model teacher` therefore trains the
student on documents only, against the teacher's own query vectors, and saves a sentence-transformers
`Router`: `encode_query` runs the teacher, `encode_document` (and plain `encode`) the student. Every
part of embedkd (eval, index build, search, HTTP) already encodes queries with `encode_query`, so the
saved folder is used like any other model, and anyone with sentence-transformers >= 5 can load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["query_document_model"]


def query_document_model(query_model: SentenceTransformer, document_model: SentenceTransformer) -> SentenceTransformer:
    """One model whose queries go through `query_model` and whose documents through `document_model`,
    each with its own role prompt where it has one (the modules are shared, not copied)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Router

    from embedkd.text_encoder import role_prompts

    router = Router.for_query_document(query_modules=list(query_model), document_modules=list(document_model))
    model = SentenceTransformer(modules=[router], device=str(document_model.device))
    prompts = {"query": role_prompts(query_model).get("query", ""),
               "document": role_prompts(document_model).get("document", "")}
    model.prompts = {**model.prompts, **prompts}
    return model

