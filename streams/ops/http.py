"""The HTTP server: health endpoints and Prometheus metrics, served in-process with uvicorn.

Every role serves them on SEGSTREAM_HTTP_PORT. `/health/live` answers while the process runs;
`/health/ready` only when Kafka and Redis answer, no role is waiting out an outage (`Outages`)
and each role of the process says it is ready (`HealthChecks.role`: the processor once it has
joined its group and taken its partitions, the sync worker while it runs), with the reasons when
not. `/metrics` is the process's registry (`streams.ops.metrics`). The segment API (contract
section 6) mounts its routes on the same app.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import Any

import uvicorn
from aiokafka import AIOKafkaClient
from prometheus_client import CONTENT_TYPE_LATEST
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from streams.broker.connection import KafkaTarget, client_options
from streams.ops.outages import Outages

MetricsSource = Callable[[], Awaitable[bytes]]
RoleCheck = Callable[[], str]
"""A role's readiness: "ok", or why it is not ready."""


class HealthChecks:
    """Answers whether the services the roles need are reachable right now.

    `redis` should give up quickly (`storage.client.brief_retry`): a ping that waits out an
    outage would make the answer wait too.
    """

    def __init__(self, kafka: KafkaTarget, redis: Redis, outages: Outages | None = None
                 ) -> None:
        self.redis = redis
        self.kafka = AIOKafkaClient(**client_options(kafka), request_timeout_ms=3000)
        self.outages = outages or Outages()
        self.roles: dict[str, RoleCheck] = {}
        self._started = False

    def role(self, name: str, check: RoleCheck) -> None:
        """Count `name`'s own readiness in `/health/ready`."""
        self.roles[name] = check

    async def close(self) -> None:
        if self._started:
            await self.kafka.close()

    async def check(self) -> dict[str, str]:
        results: dict[str, str] = {}
        try:
            await asyncio.wait_for(self.redis.ping(), 2.0)
            results["redis"] = "ok"
        except Exception as exc:  # any failure means "not ready"; the reason is reported
            results["redis"] = f"unreachable: {exc.__class__.__name__}"
        try:
            if not self._started:
                await asyncio.wait_for(self.kafka.bootstrap(), 3.0)
                self._started = True
            await asyncio.wait_for(self.kafka.fetch_all_metadata(), 3.0)
            results["kafka"] = "ok"
        except Exception as exc:  # as above
            results["kafka"] = f"unreachable: {exc.__class__.__name__}"
        return results

    async def readiness(self) -> dict[str, str]:
        """`check`, and what the roles report down (an outage they still wait out)."""
        results = await self.check()
        for service, reason in self.outages.reasons().items():
            if results.get(service, "ok") == "ok":
                results[service] = f"unavailable: {reason}"
        for name, check in self.roles.items():
            results[name] = check()
        return results


def health_routes(checks: HealthChecks, metrics: MetricsSource | None) -> list[BaseRoute]:
    async def live(_: Request) -> Response:
        return JSONResponse({"status": "live"})

    async def ready(_: Request) -> Response:
        results = await checks.readiness()
        ok = all(v == "ok" for v in results.values())
        return JSONResponse({"status": "ready" if ok else "not_ready", "checks": results},
                            status_code=200 if ok else 503)

    async def prometheus(_: Request) -> Response:
        body = await metrics() if metrics else b""
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/health/live", live),
        Route("/health/ready", ready),
        Route("/metrics", prometheus),
    ]


def build_app(routes: Iterable[BaseRoute]) -> Starlette:
    return Starlette(routes=list(routes))


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to our own entry point."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bound_port(server: uvicorn.Server) -> int:
    """The port a started server listens on (the one the kernel chose for port 0)."""
    for listener in server.servers:
        for sock in listener.sockets:
            return int(sock.getsockname()[1])
    return server.config.port


@contextlib.asynccontextmanager
async def serve(app: Any, host: str, port: int) -> Any:
    """Serve `app` in this event loop until the block exits."""
    # log_config=None: uvicorn's records go to the process's handler (streams.ops.logs), in
    # its format, instead of handlers of uvicorn's own.
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                            log_config=None)
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError(f"HTTP server did not start on {host}:{port}")
        await asyncio.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        await task
