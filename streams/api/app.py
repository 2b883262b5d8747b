"""The FastAPI app factory: health and metrics open, every other route behind the bearer token."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI

from streams.api import customers, events, providers, segments
from streams.api.auth import require_token
from streams.api.deps import ApiDeps
from streams.api.errors import error_responses, install_error_handlers
from streams.ops.http import health_routes

DESCRIPTION = """Segments, customers, event ingestion and auto-responder profiles of segstream
(contract section 6).

Every route but `/health/*` and `/metrics` (`/openapi.json` too) needs
`Authorization: Bearer <SEGSTREAM_API_TOKEN>`.
Errors are `{"error": {"code", "message", "details"}}`."""


def create_app(deps: ApiDeps) -> FastAPI:
    """The whole API over `deps`, which every route receives through `get_deps`."""
    app = FastAPI(title="segstream", version="1", description=DESCRIPTION,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.deps = deps
    install_error_handlers(app)
    guarded = [Depends(require_token)]
    for module in (segments, customers, events, providers):
        app.include_router(module.router, dependencies=guarded,
                           responses=error_responses(401, 422, 503))
    app.router.routes.extend(health_routes(deps.checks, deps.metrics))

    @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    return app
