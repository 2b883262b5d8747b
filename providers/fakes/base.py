"""What every fake provider shares: an ASGI app with auth, limits and fault injection.

A ``FakeProvider`` is itself an ASGI app. Each request goes through, in order:
drop (before), authentication, the provider's own limit (``admit``), latency,
injected 429 / 5xx, the routes (Starlette), drop (after). ``faults`` may be changed
between requests; ``stats`` counts what happened so tests can check a storm really
took place, and ``calls`` logs ``(method, path)`` of recent requests.

A "drop" sends response headers then closes the connection: the client sees the
connection cut mid-answer. With ``drop_after_apply`` the request has already taken
effect, as when an answer is lost on the way back: the retry must be harmless.
"""

from __future__ import annotations

import abc
import asyncio
import random
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

import orjson
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CALL_LOG_SIZE = 100_000  # bounded so a long demo run does not grow without end


@dataclass
class Faults:
    """Fault-injection knobs, read on every request."""

    rate_429: float = 0.0
    rate_5xx: float = 0.0
    latency: float = 0.0
    latency_jitter: float = 0.0
    drop_rate: float = 0.0
    drop_after_apply: bool = True


class InjectedDrop(Exception):
    """Raised inside the server to cut a connection on purpose (see ``serve_fake``)."""


class Problem(Exception):
    """A handler's error answer, rendered in the provider's error shape."""

    def __init__(self, status: int, title: str, detail: str = "", **extra: Any) -> None:
        super().__init__(f"{status} {title}")
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra


def json_response(
    data: Any, status: int = 200, *, headers: Mapping[str, str] | None = None,
    media_type: str = "application/json",
) -> Response:
    """A JSON answer serialised with orjson."""
    return Response(orjson.dumps(data), status, headers=dict(headers or {}), media_type=media_type)


async def read_json(request: Request) -> Any:
    """The request body as JSON, or a 400 ``Problem``."""
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "JSON Parse Error", "We encountered an unspecified JSON error.") from exc


def int_param(request: Request, name: str, default: int) -> int:
    """An integer query parameter, or a 400 ``Problem``."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise Problem(400, "Invalid Resource", f"{name} must be an integer") from exc


async def _swallow(message: Message) -> None:
    """A ``send`` that discards the answer (the connection is about to be cut)."""


class FakeProvider(abc.ABC):
    """An ASGI fake of one provider's API under ``api_prefix``."""

    api_prefix: ClassVar[str]

    def __init__(self, faults: Faults | None = None, *, seed: int | None = None) -> None:
        self.faults = faults if faults is not None else Faults()
        self.stats: Counter[str] = Counter()
        self.calls: deque[tuple[str, str]] = deque(maxlen=CALL_LOG_SIZE)
        self.in_flight = 0
        self.peak_in_flight = 0
        self._rng = random.Random(seed)
        self._app: ASGIApp = Starlette(
            routes=[Mount(self.api_prefix, routes=self.routes())],
            exception_handlers={
                HTTPException: self._http_exception,
                Problem: self._problem,
            },
        )

    @abc.abstractmethod
    def routes(self) -> list[BaseRoute]:
        """The provider's endpoints, relative to ``api_prefix``."""

    @abc.abstractmethod
    def credentials(self) -> dict[str, str]:
        """Profile credentials this fake accepts (for ``make_client``)."""

    @abc.abstractmethod
    def seed_list(self, name: str, segments: Iterable[str] = ()) -> tuple[str, dict[str, str]]:
        """Seed a list and named static segments or tags; (list id, {name: segment id})."""

    @abc.abstractmethod
    def authenticate(self, headers: Headers) -> str | None:
        """The caller's identity (user or account), or None when refused."""

    @abc.abstractmethod
    def auth_failure(self) -> Response:
        """The provider's answer to bad credentials."""

    @abc.abstractmethod
    def error_response(self, problem: Problem) -> Response:
        """A ``Problem`` in the provider's error shape."""

    @abc.abstractmethod
    def rate_limited(self, identity: str, *, injected: bool) -> Response:
        """The provider's 429 (or throttling 403)."""

    @asynccontextmanager
    async def admit(self, identity: str) -> AsyncIterator[Response | None]:
        """The provider's own limit: yield a refusal, or None while the request runs."""
        yield None

    def extra_headers(self, identity: str) -> list[tuple[bytes, bytes]]:
        """Headers added to every answer (rate-limit counters)."""
        return []

    def before_request(self) -> None:
        """Hook run first on every request (e.g. apply due asynchronous writes)."""
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self.stats["requests"] += 1
        self.calls.append((scope["method"], scope["path"]))
        self.before_request()
        if self._chance(self.faults.drop_rate) and not self.faults.drop_after_apply:
            await self._drop(send)
        identity = self.authenticate(Headers(scope=scope))
        if identity is None:
            self.stats["auth_failures"] += 1
            await self.auth_failure()(scope, receive, send)
            return
        await self._admitted(identity, scope, receive, send)

    async def _admitted(self, identity: str, scope: Scope, receive: Receive, send: Send) -> None:
        async with self.admit(identity) as refusal:
            if refusal is not None:
                self.stats["rate_limited"] += 1
                await refusal(scope, receive, send)
                return
            self._enter()
            try:
                await self._handle(identity, scope, receive, send)
            finally:
                self.in_flight -= 1

    async def _handle(self, identity: str, scope: Scope, receive: Receive, send: Send) -> None:
        delay = self.faults.latency + self._rng.uniform(0, self.faults.latency_jitter)
        if delay > 0:
            await asyncio.sleep(delay)
        injected = self._injected(identity)
        if injected is not None:
            await injected(scope, receive, send)
            return
        if self._chance(self.faults.drop_rate):
            await self._app(scope, receive, _swallow)  # applied, answer lost
            await self._drop(send)
        await self._app(scope, receive, self._with_headers(identity, send))

    def _injected(self, identity: str) -> Response | None:
        if self._chance(self.faults.rate_429):
            self.stats["rate_limited"] += 1
            return self.rate_limited(identity, injected=True)
        if self._chance(self.faults.rate_5xx):
            self.stats["server_errors"] += 1
            status = self._rng.choice((500, 502, 503))
            return self.error_response(Problem(status, "Service Unavailable", "injected fault"))
        return None

    def _with_headers(self, identity: str, send: Send) -> Send:
        extra = self.extra_headers(identity)
        if not extra:
            return send

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":  # the handler's own headers win
                have = {name.lower() for name, _ in message.get("headers", [])}
                added = [(name, value) for name, value in extra if name.lower() not in have]
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        return send_with_headers

    def _enter(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def _chance(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    async def _drop(self, send: Send) -> NoReturn:
        self.stats["drops"] += 1
        await send({
            "type": "http.response.start", "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
        })
        raise InjectedDrop("connection dropped on purpose")

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        title = "Resource Not Found" if exc.status_code == 404 else str(exc.detail)
        detail = "The requested resource could not be found." if exc.status_code == 404 else ""
        return self.error_response(Problem(exc.status_code, title, detail))

    async def _problem(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return self.error_response(exc)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
