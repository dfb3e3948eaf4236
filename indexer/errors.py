"""Errors that reach the user as one line: what was wrong and how to fix it."""

from __future__ import annotations

__all__ = ["UserError", "NotFound", "Conflict"]


class UserError(Exception):
    """Bad input. The CLI prints the message on one line and exits 2; HTTP answers 400."""

    status_code = 400


class NotFound(UserError):
    """A named thing (index, model, item, adapter) is not in the catalog. HTTP 404."""

    status_code = 404


class Conflict(UserError):
    """The request clashes with the catalog's state (duplicate name, dimension mismatch). HTTP 409."""

    status_code = 409
