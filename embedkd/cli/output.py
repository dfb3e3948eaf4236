"""How commands report: a human summary on stdout, or one JSON object on the last line with --json."""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["emit"]


def _default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, default=_default) + "\n")
        return
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif isinstance(value, (list, dict)):
            value = json.dumps(value, default=_default)
        sys.stdout.write(f"{key}: {value}\n")
