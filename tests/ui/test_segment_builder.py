"""The Segment List Builder page, driven in headless chromium against the real API, broker,
Redis, processor and a fake Mailchimp: a profile added and synced, a segment of two groups
built, linked to a Mailchimp list and tag, and saved; its member count growing as events flow;
a customer looked up and explained."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from tests.api.conftest import Api
from tests.providers.harness import Harness
from tests.streams.helpers import event
from tests.ui.conftest import (
    eventually,
    fits_the_width,
    open_page,
    phone_width,
    screenshot,
)


def order(customer_id: str, total: int) -> dict[str, Any]:
    return event("order.placed", customer_id, f"{customer_id}-order-{total}",
                 {"order_id": f"{customer_id}-{total}", "total": total})


def profile(customer_id: str, *tags: str) -> dict[str, Any]:
    return event("customer.created", customer_id, f"{customer_id}-created",
                 {"email": f"{customer_id}@example.com", "tags": list(tags)})


async def send(api: Api, *events: dict[str, Any]) -> None:
    answer = await api.client.post("/events", json=list(events))
    assert answer.status_code == 202, answer.text


async def stored(api: Api, *customer_ids: str) -> None:
    async def check() -> bool:
        answers = [await api.client.get(f"/customers/{c}") for c in customer_ids]
        return all(a.status_code == 200 for a in answers)
    await eventually(check, f"customers {customer_ids} processed")


async def add_mailchimp_profile(page: Any, mailchimp: Harness) -> None:
    await page.get_by_role("link", name="Providers").click()
    form = page.locator("#profile-form")
    await form.get_by_label("Name").fill("Shop Mailchimp")
    await form.get_by_label("Provider").select_option("mailchimp")
    await form.get_by_label("API key").fill(mailchimp.fake.credentials()["api_key"])
    await form.locator("summary", has_text="Advanced").click()
    await form.get_by_label("API root (optional)").fill(mailchimp.base_url)
    await form.get_by_role("button", name="Add and test credentials").click()
    await expect(page.locator("#profile-added")).to_contain_text("accepted the credentials")
    card = page.locator("article.profile", has_text="Shop Mailchimp")
    api_key = mailchimp.fake.credentials()["api_key"]
    await expect(card.locator(".hint-mask")).to_contain_text("api_key: ")
    await expect(card.locator(".hint-mask")).to_contain_text(api_key[-4:])
    await expect(card.locator(".hint-mask")).not_to_contain_text(api_key)
    await card.get_by_role("button", name="Sync lists of Shop Mailchimp now").click()
    await expect(card.locator(".sync-state")).to_contain_text("1 lists, synced")
    await card.locator("summary", has_text="Lists (1)").click()
    await expect(card.locator(".list-tree")).to_contain_text("Newsletter")
    await screenshot(page, "providers")


async def test_build_link_save_and_watch_members_grow(
    browser: Any, system: Api, mailchimp: Harness
) -> None:
    list_id, tags = mailchimp.seed_list("Newsletter", "VIP")
    await send(system, order("c-1", 500), order("c-3", 50), profile("c-2", "vip"))
    await stored(system, "c-1", "c-2", "c-3")

    page = await open_page(browser, system)
    await add_mailchimp_profile(page, mailchimp)

    # the builder: group 1 "total_spent > 300" OR group 2 "tags include vip"
    await page.get_by_role("link", name="New segment").click()
    await page.get_by_label("Segment name").fill("Big spenders or VIPs")
    group1 = page.locator("section.group").nth(0)
    await group1.get_by_label("Field").select_option("total_spent")
    await group1.get_by_label("Operator").select_option("gt")
    await group1.get_by_label("Value").fill("300")
    await expect(page.locator("#preview-number")).to_have_text("1")
    await page.get_by_role("button", name="Add a group (OR)").click()
    group2 = page.locator("section.group").nth(1)
    await expect(group2.get_by_label("Field")).to_be_focused()
    await group2.get_by_label("Field").select_option("tags")
    await group2.get_by_label("Operator").select_option("includes_any")
    await group2.get_by_label("Values", exact=True).fill("vip")
    await page.keyboard.press("Enter")
    await expect(group2.locator(".tag")).to_have_text(["vip×"])
    await expect(page.locator("#preview-number")).to_have_text("2")
    await expect(page.locator("#limits")).to_have_text("Conditions: 2 of 9 · Groups: 2 of 5")

    # Auto Processing Settings: the synced Mailchimp list and its tag
    auto = page.locator("#auto-responder")
    await auto.get_by_label("Provider profile").select_option(label="Shop Mailchimp (Mailchimp)")
    await auto.get_by_label("List (audience)").select_option(list_id)
    await auto.get_by_label("Segment or tag (optional)").select_option(tags["VIP"])
    await expect(auto.locator("#ar-sync-state")).to_contain_text("Lists synced")
    await screenshot(page, "builder-two-groups", docs=True)
    async with phone_width(page):
        assert await fits_the_width(page)
        await screenshot(page, "builder-phone")

    await page.get_by_role("button", name="Create segment").click()
    await expect(page.locator("#status-state")).to_have_text("Live")
    await expect(page.locator("#status-members")).to_have_text("2")
    segment_id = page.url.rsplit("/", 1)[-1]
    saved = (await system.client.get(f"/segments/{segment_id}")).json()
    assert saved["auto_responder"] == {"profile_id": saved["auto_responder"]["profile_id"],
                                       "list_id": list_id, "segment_id": tags["VIP"]}
    assert [g["conditions"] for g in saved["groups"]] == [
        [{"field": "total_spent", "op": "gt", "value": 300}],
        [{"field": "tags", "op": "includes_any", "value": ["vip"]}]]

    # the lists: members grow as events flow
    await page.get_by_role("link", name="Segment lists").click()
    row = page.locator("tr", has_text="Big spenders or VIPs")
    await expect(row.locator(".member-count")).to_have_text("2")
    await expect(row).to_contain_text("Shop Mailchimp → Newsletter / VIP")
    await expect(row).to_contain_text("lists synced")
    await send(system, order("c-4", 400))
    await expect(row.locator(".member-count")).to_have_text("3")
    await send(system, profile("c-5", "vip"), order("c-3", 260))
    await expect(row.locator(".member-count")).to_have_text("5")
    await screenshot(page, "segment-lists")
    async with phone_width(page):
        await expect(row.locator(".member-count")).to_be_visible()
        assert await fits_the_width(page)
        await screenshot(page, "segment-lists-phone")

    # a customer, and why they are in
    await page.get_by_role("link", name="Customer lookup").click()
    await page.get_by_label("Customer id").fill("c-2")
    await page.keyboard.press("Enter")
    why = page.locator("details.explain", has_text="Big spenders or VIPs")
    await expect(why.locator("summary")).to_contain_text("In")
    await expect(why.locator(".reason")).to_have_text(
        "Group 2 holds: every condition in it is true.")
    await expect(why.locator(".results li.true")).to_have_text(["✓true: tags includes any of vip"])
    await expect(page.locator(".in-segments")).to_contain_text("Big spenders or VIPs")
    await expect(page.locator(".features-table")).to_contain_text("c-2@example.com")
    await screenshot(page, "customer-lookup")
    assert page.js_errors == []
