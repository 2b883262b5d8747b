"""The page, its assets and the API's description are open; every data route keeps the token."""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Any

import httpx
from playwright.async_api import expect

from tests.api.conftest import Api


async def test_page_and_description_open_data_routes_guarded(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url) as anonymous:
        page = await anonymous.get("/")
        script = await anonymous.get("/ui/js/main.js")
        style = await anonymous.get("/ui/app.css")
        schema = await anonymous.get("/openapi.json")
        docs = await anonymous.get("/docs")
        swagger = await anonymous.get("/docs/assets/swagger-ui-bundle.js")
        data = [await anonymous.get(path) for path in ("/segments", "/fields", "/customers/c-1")]
    assert page.status_code == 200 and "Segment List Builder" in page.text
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self'
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert style.status_code == 200 and script.headers["cache-control"] == "no-cache"
    assert schema.status_code == 200
    assert "/openapi.json" in schema.json()["info"]["description"]
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    assert "/docs/assets/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text.lower()
    assert swagger.status_code == 200 and "SwaggerUIBundle" in swagger.text
    assert [r.status_code for r in data] == [401, 401, 401]


async def test_the_page_holds_no_secret(api: Api) -> None:
    """Nothing secret in what is served; the token is kept in sessionStorage, never in
    localStorage (which outlives the tab)."""
    scripts = [f"/ui/js/{f.name}" for f in files("streams.api.ui").joinpath("static/js")
               .iterdir() if f.name.endswith(".js")]
    assert len(scripts) >= 5
    async with httpx.AsyncClient(base_url=api.url) as anonymous:
        answers = [await anonymous.get(path) for path in ["/", "/ui/app.css", *scripts]]
    assert all(a.status_code == 200 for a in answers)
    texts = [a.text for a in answers]
    token = api.settings.api_token
    assert token is not None
    assert not any(token.get_secret_value() in text for text in texts)
    assert not any(re.search(r"localStorage\s*[.\[]", text) for text in texts)
    assert any("sessionStorage.setItem" in text for text in texts)


async def test_swagger_ui_renders_with_no_network(browser: Any, api: Api) -> None:
    """`/docs` loads Swagger UI from the API itself (this machine reaches no CDN)."""
    page = await browser.new_page()
    await page.goto(f"{api.url}/docs")
    await expect(page.locator(".information-container")).to_contain_text("Segment List Builder")
    preview = page.locator(".opblock-summary-path", has_text="/segments/preview")
    await expect(preview).to_be_visible()
    await expect(page.get_by_role("button", name="Authorize")).to_be_visible()
