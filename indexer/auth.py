"""A bearer token in front of the HTTP service: with one set, every route but the health check, the metrics
and the API docs needs `Authorization: Bearer TOKEN` (document and gallery routes add and delete data)."""

from __future__ import annotations

import hmac

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

__all__ = ["require_token", "OPEN_PATHS"]

OPEN_PATHS = frozenset({"/health", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def require_token(app: FastAPI, token: str) -> None:
    expected = f"Bearer {token}".encode()

    @app.middleware("http")
    async def check(request: Request, call_next):
        if request.url.path in OPEN_PATHS:
            return await call_next(request)
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):  # constant time: no timing oracle on the token
            detail = ("missing or wrong bearer token; send the header 'Authorization: Bearer TOKEN' with the token "
                      "the server was started with (EMBEDKD_API_TOKEN)")
            return JSONResponse(status_code=401, content={"detail": detail}, headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)
