"""The FastAPI app factory: health and metrics open, every other route behind the bearer token."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI

from streams.api import customers, events, segments
from streams.api.auth import require_token
from streams.api.deps import ApiDeps
from streams.api.errors import install_error_handlers
from streams.ops.http import health_routes

DESCRIPTION = """Segments, customers and event ingestion of segstream (contract section 6).

Every route but `/health/*` and `/metrics` (`/openapi.json` too) needs
`Authorization: Bearer <SEGSTREAM_API_TOKEN>`.
Errors are `{"error": {"code", "message", "details"}}`."""


def create_app(deps: ApiDeps, extra_routers: Iterable[APIRouter] = ()) -> FastAPI:
    """The whole API; `extra_routers` (e.g. provider profiles) are mounted behind the token."""
    app = FastAPI(title="segstream", version="1", description=DESCRIPTION,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.deps = deps
    install_error_handlers(app)
    guarded = [Depends(require_token)]
    for router in (segments.router, customers.router, events.router, *extra_routers):
        app.include_router(router, dependencies=guarded)
    app.router.routes.extend(health_routes(deps.checks, deps.metrics))

    @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    return app
