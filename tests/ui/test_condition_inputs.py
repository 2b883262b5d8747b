"""Every kind of value input the builder generates from `GET /fields` gives the definition the
API takes, and an existing segment's definition comes back into the same inputs unchanged."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from tests.api.conftest import Api
from tests.ui.conftest import open_page

BASE = {"name": "Base", "groups": [{"conditions": [
    {"field": "order_count", "op": "gte", "value": 1}]}]}

EXPECTED = [
    {"field": "contact_type", "op": "in", "value": ["customer"]},
    {"field": "email_domain", "op": "ends_with", "value": "example.com"},
    {"field": "total_spent", "op": "between", "value": [10, "99.50"]},
    {"field": "last_order_at", "op": "before", "value": {"days": 30}},
    {"field": "first_order_at", "op": "after", "value": "2026-01-31"},
    {"field": "categories_purchased", "op": "includes_all", "value": ["shoes", "hats"],
     "within_days": 90},
    {"field": "properties.plan", "op": "eq", "value": 3},
    {"field": "segments", "op": "includes_any", "value": ["base"]},
    {"field": "last_order_at", "op": "not_within_last", "value": {"hours": 12}},
]


async def condition(page: Any, n: int, field: str, op: str) -> Any:
    """The n-th condition (adding it when needed) with its field and operator chosen."""
    if n > 0:
        await page.get_by_role("button", name="Add a condition (AND)").click()
    row = page.locator("li.condition").nth(n)
    await row.get_by_label("Field").select_option(field)
    await row.get_by_label("Operator").select_option(op)
    return row


async def test_each_input_kind_round_trips(browser: Any, api: Api) -> None:
    assert (await api.client.post("/segments", json={**BASE, "id": "base"})).status_code == 201
    page = await open_page(browser, api, "/#/builder")
    await page.get_by_label("Segment name").fill("Every input")

    row = await condition(page, 0, "contact_type", "in")
    await row.get_by_label("customer").check()
    row = await condition(page, 1, "email_domain", "ends_with")
    await row.get_by_label("Text").fill("example.com")
    row = await condition(page, 2, "total_spent", "between")
    await row.get_by_label("From", exact=True).fill("10")
    await row.get_by_label("To", exact=True).fill("99.50")
    row = await condition(page, 3, "last_order_at", "before")
    await row.get_by_label("Compared with").select_option("ago")
    await row.get_by_label("Amount").fill("30")
    row = await condition(page, 4, "first_order_at", "after")
    await row.get_by_label("Date", exact=True).fill("2026-01-31")
    row = await condition(page, 5, "categories_purchased", "includes_all")
    await row.get_by_label("Values", exact=True).fill("shoes, hats")
    await row.get_by_label("Values", exact=True).press("Enter")
    await row.get_by_label("Only the last … days (optional)").fill("90")
    row = await condition(page, 6, "properties.<name>", "eq")
    await row.get_by_label("Property name").fill("plan")
    await row.get_by_label("Value type").select_option("number")
    await row.get_by_label("Value", exact=True).fill("3")
    row = await condition(page, 7, "segments", "includes_any")
    await row.get_by_label("Base").check()
    row = await condition(page, 8, "last_order_at", "not_within_last")
    await row.get_by_label("Amount").fill("12")
    await row.get_by_label("Unit").select_option("hours")
    await expect(page.locator("#preview-number")).to_have_text("0")

    await page.get_by_role("button", name="Create segment").click()
    await expect(page.locator("#status-version")).to_have_text("1")
    segment_id = page.url.rsplit("/", 1)[-1]
    stored = (await api.client.get(f"/segments/{segment_id}")).json()
    assert stored["groups"] == [{"conditions": EXPECTED}]

    # the stored definition back in the inputs, and saved again unchanged
    await page.reload()
    await expect(page.locator("li.condition")).to_have_count(9)
    await expect(page.locator("li.condition").nth(4).get_by_label("Date", exact=True)
                 ).to_have_value("2026-01-31")
    await expect(page.locator("li.condition").nth(5).locator(".tag")).to_have_count(2)
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.locator(".saved")).to_have_text("No change: still version 1.")
    again = (await api.client.get(f"/segments/{segment_id}")).json()
    assert (again["version"], again["groups"]) == (1, stored["groups"])
    assert page.js_errors == []
