"""Routes that describe rather than hold data, open without the token.

    GET /                the Segment List Builder page (`static/index.html`)
    GET /ui/{path}       its stylesheet and JS modules, shipped in the package (no build step)
    GET /docs            Swagger UI over `/openapi.json`
    GET /docs/assets/…   Swagger UI's script and stylesheet, from the `fastapi-offline` package,
                         so the page works with no internet access (FastAPI's own `/docs`
                         loads them from a CDN)

Every static answer carries `Cache-Control: no-cache`: the browser revalidates (a cheap 304)
rather than running scripts of an older install against a newer API.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

PAGE_HEADERS: Final = {
    # The page runs only its own scripts and talks only to this origin.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


class RevalidatedFiles(StaticFiles):
    """`StaticFiles` whose answers the browser must revalidate before reuse."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def page_routes(title: str, openapi_url: str) -> list[BaseRoute]:
    """The page at `/`, its assets under `/ui`, and Swagger UI at `/docs` over `openapi_url`."""
    index = files("streams.api.ui").joinpath("static/index.html").read_bytes()

    async def page(_: Request) -> Response:
        return Response(index, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}", title=f"{title}: API",
            swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
            swagger_favicon_url=f"{root}/docs/assets/favicon.png")

    return [
        Route("/", page, include_in_schema=False),
        Mount("/ui", RevalidatedFiles(packages=[("streams.api.ui", "static")]), name="ui"),
        Route("/docs", docs, include_in_schema=False),
        Mount("/docs/assets", RevalidatedFiles(packages=[("fastapi_offline", "static")]),
              name="docs-assets"),
    ]
