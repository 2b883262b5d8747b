"""One error shape for every answer that is not a success: `{"error": {code, message, details}}`.

`ApiError` is raised by the routes; the handlers installed by `install_error_handlers` also turn
FastAPI's own 404/405/422 and any unexpected exception into that shape, so no client ever sees
another one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("segstream.api")

_CODE_OF_STATUS = {
    400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
    406: "not_acceptable", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
    422: "invalid_request", 503: "unavailable",
}


class ApiError(Exception):
    """An answer with `status` and the error body; `details` is JSON-able (often a list)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details if details is not None else []


def error_response(
    status: int, code: str, message: str, details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message,
                      "details": details if details is not None else []}}
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(KafkaError, _unavailable)
    app.add_exception_handler(RedisConnectionError, _unavailable)
    app.add_exception_handler(RedisTimeoutError, _unavailable)
    app.add_exception_handler(Exception, _unexpected)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return error_response(exc.status, exc.code, exc.message, exc.details, headers)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODE_OF_STATUS.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [{"path": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
               for e in exc.errors()]
    return error_response(422, "invalid_request", "the request does not match the API", details)


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.warning("a backing service failed: %r", exc)
    return error_response(503, "unavailable",
                          f"a backing service is unavailable ({exc.__class__.__name__}); retry",
                          headers={"Retry-After": "1"})


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error in the HTTP API", exc_info=exc)
    return error_response(500, "internal_error", "unexpected server error")
