"""How a request body becomes a value a route sees: read, parsed as JSON, validated by its model.

Every router of the API is an `api_router()`, whose routes are `JsonBodyRoute`s. Such a route
reads its body itself, before FastAPI validates it against the route's request model:

    more than MAX_BODY_BYTES            413 too_large (read no further)
    Content-Type declared, not JSON     415 unsupported_media_type
    not JSON (an empty body included)   400 invalid_json
    refused by the request model        422 with the model's `invalid_code`, paths as the
                                        contract writes them (`groups[1].conditions[0]`)

JSON is parsed with orjson, as the processor does, so a body means the same here as on a topic
(no NaN, no integers beyond 64 bits).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, ClassVar, Final, get_args, get_origin

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict
from starlette.types import Receive, Scope

from streams.api.errors import ApiError, invalid_request

MAX_BODY_BYTES: Final = 4 << 20

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class RequestBody(BaseModel):
    """A JSON object body: unknown keys are refused (422 naming each). `invalid_code` is the
    error code of that 422, the same as the domain's for the same body."""

    model_config = ConfigDict(extra="forbid")

    invalid_code: ClassVar[str] = "invalid_request"


def api_router(**options: Any) -> APIRouter:
    """An `APIRouter` (`options` as its) whose routes are `JsonBodyRoute`s."""
    return APIRouter(route_class=JsonBodyRoute, **options)


class JsonBodyRoute(APIRoute):
    """A route that reads its JSON body as the module docstring says."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        # A body without Content-Type is read as JSON. FastAPI refuses it by default to stop
        # cross-site form posts; here every route needs a bearer token, which no browser adds
        # on its own.
        options["strict_content_type"] = False
        self.invalid_body_code = _invalid_code(endpoint)  # before: __init__ builds the handler
        super().__init__(path, endpoint, **options)

    def get_route_handler(self) -> Handler:
        handle = super().get_route_handler()
        if self.body_field is None:
            return handle
        code = self.invalid_body_code

        async def handle_json(request: Request) -> Response:
            parsed = await ParsedRequest.read(request)
            try:
                return await handle(parsed)
            except RequestValidationError as exc:
                raise invalid_request(exc.errors(), code) from None

        return handle_json


class ParsedRequest(Request):
    """A request whose body was read and parsed once; FastAPI's `body()` and `json()` answer
    from that."""

    def __init__(self, scope: Scope, receive: Receive, raw: bytes, parsed: Any) -> None:
        super().__init__(scope, receive)
        self._raw = raw
        self._parsed = parsed

    @classmethod
    async def read(cls, request: Request) -> ParsedRequest:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type and media_type != "application/json" and not (
                media_type.startswith("application/") and media_type.endswith("+json")):
            raise ApiError(415, "unsupported_media_type",
                           f"the body must be JSON (application/json), not {media_type}")
        raw = await _read_at_most(request, MAX_BODY_BYTES)
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
        return cls(request.scope, request.receive, raw, parsed)

    async def body(self) -> bytes:
        return self._raw

    async def json(self) -> Any:
        return self._parsed


async def _read_at_most(request: Request, limit: int) -> bytes:
    too_large = ApiError(413, "too_large", f"the body is larger than {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _invalid_code(endpoint: Callable[..., Any]) -> str:
    """The `invalid_code` of the endpoint's request model, if it takes one."""
    for parameter in inspect.signature(endpoint, eval_str=True).parameters.values():
        kind = parameter.annotation
        if get_origin(kind) is Annotated:
            kind = get_args(kind)[0]
        if isinstance(kind, type) and issubclass(kind, RequestBody):
            return kind.invalid_code
    return "invalid_request"
