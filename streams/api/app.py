"""The FastAPI app factory: every data route behind the bearer token; health, metrics, the API's
description and the Segment List Builder page open (they hold no data)."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from streams.api import customers, events, providers, segments
from streams.api.auth import require_token
from streams.api.deps import ApiDeps
from streams.api.errors import error_responses, install_error_handlers
from streams.api.ui import page_routes
from streams.ops.http import health_routes

OPENAPI_URL = "/openapi.json"

DESCRIPTION = """Segments, customers, event ingestion and auto-responder profiles of segstream
(docs/api.md in the repository).

Every data route needs `Authorization: Bearer <SEGSTREAM_API_TOKEN>` (in Swagger UI:
*Authorize*). Open without it, as they hold no data: `/health/*`, `/metrics`, this
description (`/openapi.json`, and `/docs` to try the routes), and the Segment List Builder page
at `/` with its assets under `/ui/`, which asks for the token once per browser tab and keeps it
in that tab's session storage.
Errors are `{"error": {"code", "message", "details"}}`."""


def create_app(deps: ApiDeps) -> FastAPI:
    """The whole API over `deps`, which every route receives through `get_deps`."""
    app = FastAPI(title="segstream", version="1", description=DESCRIPTION,
                  docs_url=None, redoc_url=None, openapi_url=OPENAPI_URL)
    app.state.deps = deps
    install_error_handlers(app)
    guarded = [Depends(require_token)]
    for module in (segments, customers, events, providers):
        app.include_router(module.router, dependencies=guarded,
                           responses=error_responses(401, 422, 503))
    app.router.routes.extend(health_routes(deps.checks, deps.metrics))
    app.router.routes.extend(page_routes(app.title, OPENAPI_URL))
    return app
