"""One error shape for every answer that is not a success: `{"error": {code, message, details}}`.

Routes raise `ApiError` (or let a `ProfileError` of the profile store through); the handlers
installed by `install_error_handlers` render those, and also FastAPI's own 404/405/422 and any
unexpected exception, so no client ever sees another shape. `error_response` is the one place
that body is built.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from providers.profiles import ProfileError

log = logging.getLogger("segstream.api")

_CODE_OF_STATUS = {
    400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
    406: "not_acceptable", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
    422: "invalid_request", 503: "unavailable",
}
# pydantic's wording where the API has said it plainer since before there were models
_MESSAGE_OF_TYPE = {"extra_forbidden": "unknown field"}


class ApiError(Exception):
    """An answer with `status` and the error body; `details` is JSON-able (often a list)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details if details is not None else []


class Error(BaseModel):
    code: str
    message: str
    details: list[Any]


class ErrorBody(BaseModel):
    """The body of every error answer (for the OpenAPI document)."""

    error: Error


_WHEN = {
    400: "a malformed request: invalid JSON, an invalid cursor, invalid events",
    401: "no valid bearer token",
    404: "no such resource",
    409: "the request conflicts with the stored state",
    413: "the body is larger than 4 MiB, or holds too many events",
    415: "the body is declared as something other than JSON",
    422: "the request breaks a rule; `details` name each problem by path",
    502: "the auto-responder provider failed",
    503: "Kafka or Redis is unreachable; retry after `Retry-After` seconds",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, each with the error body."""
    return {status: {"model": ErrorBody, "description": _WHEN[status]} for status in statuses}


def error_response(
    status: int, code: str, message: str, details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message,
                      "details": details if details is not None else []}}
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


def invalid_request(
    errors: Sequence[Mapping[str, Any]], body_code: str = "invalid_request"
) -> ApiError:
    """The 422 for pydantic's `errors`. When the body is at fault the error takes `body_code`,
    the code its route uses for the domain's own verdict on that body (`invalid_definition`),
    so a client sees one code whichever of the two refused it."""
    in_body = any(tuple(e.get("loc", ()))[:1] == ("body",) for e in errors)
    return ApiError(422, body_code if in_body else "invalid_request",
                    "the request does not match the API; details name each problem by path",
                    [_detail(e) for e in errors])


def _detail(error: Mapping[str, Any]) -> dict[str, str]:
    """`path` as the contract writes it: a body's fields without FastAPI's `body` in front and
    list positions in brackets (`groups[1].conditions[0].op`); parameters as `query.limit`.
    The rejected input is left out: it may be a credential."""
    loc = tuple(error.get("loc", ()))
    path = ""
    for part in loc[1:] if loc[:1] == ("body",) else loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    message = _MESSAGE_OF_TYPE.get(error.get("type", ""), error.get("msg", ""))
    return {"path": path, "message": message}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ProfileError, _profile_error)
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


async def _profile_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProfileError)
    return error_response(exc.status, exc.code, exc.message, exc.details)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODE_OF_STATUS.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return await _api_error(request, invalid_request(exc.errors()))


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.warning("a backing service failed: %r", exc)
    return error_response(503, "unavailable",
                          f"a backing service is unavailable ({exc.__class__.__name__}); retry",
                          headers={"Retry-After": "1"})


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error in the HTTP API", exc_info=exc)
    return error_response(500, "internal_error", "unexpected server error")
