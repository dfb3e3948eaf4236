"""A ReID model folder given where a text model goes: say so, before sentence-transformers trips on it."""

from __future__ import annotations

from pathlib import Path

from indexer.errors import UserError

__all__ = ["refuse_reid_model"]


def refuse_reid_model(model: str) -> None:
    """A one-line error when `model` is `embedkd reid train`'s output (its own error would be about a
    missing `model_type` key in config.json, which names neither the mix-up nor the fix)."""
    if (Path(model).expanduser() / "reid_model.json").is_file():
        raise UserError(f"{model!r} is a ReID model (it embeds person crops); give a sentence-transformers text "
                        "model here, and use ReID models with the `embedkd reid` commands")
