"""The builder's rules in headless chromium against the real API: the token asked for again when
refused; the 9-condition and 5-group limits enforced as one builds; the API's validation
message beside the condition it names; a backfill's progress after create and edit; delete
with confirmation; all of it by keyboard where a keyboard user would."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect
from redis.asyncio import Redis

from streams.settings import Settings
from tests.api.conftest import TOKEN, Api
from tests.streams.helpers import event, running_processor
from tests.ui.conftest import screenshot

DURATION_MESSAGE = '`within_last` needs {"days": N} (1 to 3650) or {"hours": N}'


async def sign_in_after_a_wrong_token(browser: Any, api: Api) -> Any:
    page = await browser.new_page()
    await page.goto(f"{api.url}/#/builder")
    token = page.locator("#token-input")
    await expect(token).to_be_focused()
    await token.fill("not-the-token")
    await page.keyboard.press("Enter")
    await expect(page.locator("#token-error")).to_contain_text("The API refused that token")
    await expect(token).to_be_focused()
    await token.fill(TOKEN)
    await page.keyboard.press("Enter")
    await expect(page.locator("#token-dialog")).to_be_hidden()
    assert await page.evaluate("sessionStorage.length") == 1
    assert await page.evaluate("localStorage.length") == 0
    return page


async def test_limits_api_messages_backfill_edit_and_delete(
    browser: Any, api: Api, ui_settings: Settings, redis_client: Redis
) -> None:
    page = await sign_in_after_a_wrong_token(browser, api)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    # the limits, by keyboard: 9 conditions in 5 groups, then neither a 10th nor a 6th group
    name = page.get_by_label("Segment name")
    await name.focus()
    await page.keyboard.type("Limits")
    await page.keyboard.press("Tab")
    await expect(page.locator("section.group").first.get_by_label("Field")).to_be_focused()
    for _ in range(4):
        await page.locator("section.group").first.get_by_role(
            "button", name="Add a condition (AND)").press("Enter")
    for _ in range(4):
        await page.get_by_role("button", name="Add a group (OR)").press("Enter")
    limits = page.locator("#limits")
    await expect(limits).to_have_text("Conditions: 9 of 9 · Groups: 5 of 5")
    await page.get_by_role("button", name="Add a group (OR)").press("Enter")
    await expect(page.locator("#limit-message")).to_have_text(
        "A segment can have at most 5 groups.")
    await expect(page.locator("section.group")).to_have_count(5)
    tenth = page.locator("section.group").first.get_by_role("button", name="Add a condition (AND)")
    await expect(tenth).to_have_attribute("aria-disabled", "true")
    await tenth.press("Enter")
    await expect(page.locator("#limit-message")).to_have_text(
        "A segment can have at most 9 conditions, across all its groups. "
        "Remove one to add another.")
    await expect(page.locator("li.condition")).to_have_count(9)
    await screenshot(page, "builder-limits")
    await page.get_by_role("button", name="Remove condition 5 of group 1").press("Enter")
    await expect(limits).to_have_text("Conditions: 8 of 9 · Groups: 5 of 5")
    await expect(page.locator("#limit-message")).to_be_hidden()

    # the API's message beside the condition it names: a duration of 0 days
    await page.get_by_role("link", name="Segment lists").click()
    await page.get_by_role("link", name="New segment").first.click()
    await page.get_by_label("Segment name").fill("Recent buyers")
    condition = page.locator("li.condition").first
    await condition.get_by_label("Field").select_option("last_order_at")
    await condition.get_by_label("Operator").select_option("within_last")
    await condition.get_by_label("Amount").fill("0")
    await expect(condition.locator(".cond-error")).to_contain_text(DURATION_MESSAGE)
    await expect(condition.get_by_label("Amount")).to_have_attribute("aria-invalid", "true")
    await page.get_by_role("button", name="Create segment").click()
    summary = page.locator("#error-summary")
    await expect(summary).to_be_focused()
    await expect(summary).to_contain_text("Group 1, condition 1 (value): " + DURATION_MESSAGE)
    await screenshot(page, "builder-api-message")
    await condition.get_by_label("Amount").fill("30")
    await expect(page.locator("#preview-number")).to_have_text("0")
    await expect(condition.locator(".cond-error")).to_be_hidden()

    # created with no processor running: backfilling until one runs, then live
    await page.get_by_role("button", name="Create segment").click()
    state = page.locator("#status-state")
    await expect(state).to_contain_text("Backfilling 0%")
    await expect(state.locator("progress")).to_have_attribute("value", "0")
    await screenshot(page, "builder-backfilling")
    segment_id = page.url.rsplit("/", 1)[-1]
    async with running_processor(ui_settings, redis_client):
        await expect(state).to_have_text("Live")

        # edit: a new version, whose backfill the page follows to live
        await page.locator("li.condition").first.get_by_label("Amount").fill("60")
        await page.get_by_role("button", name="Save changes").click()
        await expect(page.locator(".saved")).to_have_text("Saved as version 2.")
        await expect(page.locator("#status-version")).to_have_text("2")
        await expect(state).to_have_text("Live")

        # a member, and when time alone will take them out
        sent = await api.client.post("/events", json=event(
            "order.placed", "c-9", "c-9-o1", {"order_id": "o-9", "total": 20}))
        assert sent.status_code == 202, sent.text
        await expect(page.locator("#status-members")).to_have_text("1")
        await page.get_by_role("link", name="Customer lookup").click()
        await page.get_by_label("Customer id").fill("c-9")
        await page.get_by_role("button", name="Look up").click()
        next_evaluation = page.locator("section.next")
        await expect(next_evaluation).to_contain_text("Re-evaluated in 60 days")
        await expect(next_evaluation.locator("li")).to_contain_text(
            "Recent buyers: last_order_at is within the last 60 days")
        await screenshot(page, "customer-next-evaluation")
    stored = (await api.client.get(f"/segments/{segment_id}")).json()
    assert stored["version"] == 2
    assert stored["groups"] == [{"conditions": [
        {"field": "last_order_at", "op": "within_last", "value": {"days": 60}}]}]

    # delete, with a confirmation that Escape cancels
    await page.get_by_role("link", name="Segment lists").click()
    delete = page.get_by_role("button", name="Delete Recent buyers")
    await delete.click()
    dialog = page.locator("#confirm-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(delete).to_be_focused()
    await delete.click()
    await dialog.get_by_role("button", name="Delete segment").click()
    await expect(page.locator("tr", has_text="Recent buyers")).to_have_count(0)
    await expect(page.locator(".empty")).to_be_visible()
    assert (await api.client.get(f"/segments/{segment_id}")).status_code == 404
    assert errors == []
