"""The Segment List Builder page in a real headless browser, against the real API and processor.

The browser is Debian's chromium (`/usr/bin/chromium`, which `.ci/run` installs) driven by
Playwright; Playwright's own browser downloads are never used. Without chromium the browser
tests are skipped, saying so. Screenshots go to `tests/ui/artifacts/` (git-ignored); with
`SEGSTREAM_UI_DOCS_SCREENSHOT=1` the builder's also replaces `docs/ui.png`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from streams.settings import Settings
from tests.api.conftest import TOKEN, Api, running_api
from tests.streams.helpers import running_processor, wait_for

CHROMIUM = Path("/usr/bin/chromium")
# A closed network: without these chromium waits on background connections it cannot make.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "ui.png"
WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 15_000


@pytest.fixture
def ui_settings(settings: Settings) -> Settings:
    return settings.with_changes(api_token=SecretStr(TOKEN), secret_key=SecretStr("k" * 44))


@pytest.fixture
async def api(ui_settings: Settings, redis_client: Redis) -> AsyncIterator[Api]:
    """The API alone, on a loopback port."""
    async with running_api(ui_settings, redis_client) as running:
        yield running


@pytest.fixture
async def system(ui_settings: Settings, redis_client: Redis) -> AsyncIterator[Api]:
    """The API on a loopback port, with a processor applying what `POST /events` sends."""
    async with running_api(ui_settings, redis_client) as api, \
            running_processor(ui_settings, redis_client):
        yield api


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    """A chromium context with a fresh profile, 1280 px wide."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install "
                    "chromium) to run the page's browser tests")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS, headless=True, viewport=WIDE)
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            await context.close()


async def open_page(browser: Any, api: Api, path: str = "/") -> Any:
    """A new tab on the page, the API token typed into the dialog it opens with."""
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.js_errors = errors
    await page.goto(f"{api.url}{path}")
    dialog = page.locator("#token-dialog")
    await dialog.wait_for(state="visible")
    await page.locator("#token-input").fill(TOKEN)
    await page.keyboard.press("Enter")
    await dialog.wait_for(state="hidden")
    return page


async def screenshot(page: Any, name: str, docs: bool = False) -> Path:
    """Save a full-page screenshot as a test artefact (printed), and as docs/ui.png when
    asked to by the environment."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    if docs and os.environ.get("SEGSTREAM_UI_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(path, DOCS_SCREENSHOT)
        print(f"screenshot: {DOCS_SCREENSHOT}")
    return path


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    await wait_for(check, timeout=timeout, what=what)


@contextlib.asynccontextmanager
async def phone_width(page: Any) -> AsyncIterator[None]:
    """The page at a phone's width for the block."""
    await page.set_viewport_size(PHONE)
    try:
        yield
    finally:
        await page.set_viewport_size(WIDE)


async def fits_the_width(page: Any) -> bool:
    """No horizontal scrolling: nothing is wider than the viewport."""
    return bool(await page.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth"))
