"""The `/providers/profiles` routes: the real app in-process over a profile store of the test's,
which talks to the fake providers over loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from streams.settings import Settings
from streams.storage.profiles import ProfileStore
from tests.api.conftest import in_process_api
from tests.providers.harness import Harness
from tests.streams.storage.test_profiles import body, secrets_of, store  # noqa: F401 (fixture)


@pytest.fixture
async def api(
    settings: Settings, redis_client: Redis, store: ProfileStore  # noqa: F811
) -> AsyncIterator[httpx.AsyncClient]:
    with_token = settings.with_changes(api_token=SecretStr("profiles-token-0123456789"))
    async with in_process_api(with_token, redis_client, store) as client:
        yield client


async def test_api_create_get_list_never_show_credentials(
    api: httpx.AsyncClient, activecampaign: Harness
) -> None:
    created = await api.post("/providers/profiles", json=body(activecampaign))
    assert created.status_code == 201, created.text
    profile_id = created.json()["id"]
    answers = [created, await api.get("/providers/profiles"),
               await api.get(f"/providers/profiles/{profile_id}")]
    for answer in answers:
        assert answer.status_code in (200, 201)
        for secret in secrets_of(activecampaign):
            assert secret not in answer.text
        assert "credentials" not in answer.text
    assert answers[2].json()["hint"]["api_key"].startswith("****")


async def test_api_errors_have_the_contract_shape(
    api: httpx.AsyncClient, sendlane: Harness
) -> None:
    bad = await api.post("/providers/profiles",
                         json=body(sendlane, credentials={"api_token": "wrong-token"}))
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "credentials_rejected"
    assert set(bad.json()["error"]) == {"code", "message", "details"}
    missing = await api.get("/providers/profiles/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "profile_not_found"
    garbage = await api.post("/providers/profiles", content=b"{not json")
    assert garbage.status_code == 400 and "error" in garbage.json()
    extra = await api.post("/providers/profiles", json=body(sendlane, password="x"))
    assert extra.status_code == 422
    assert extra.json()["error"]["details"] == [{"path": "password", "message": "unknown field"}]


async def test_sync_fetches_every_page_then_lists_answer_it(
    api: httpx.AsyncClient, harness: Harness
) -> None:
    seeded = {harness.seed_list(f"List {i}", "VIP", "Lapsed")[0] for i in range(7)}
    profile_id = (await api.post("/providers/profiles", json=body(harness))).json()["id"]
    before = await api.get(f"/providers/profiles/{profile_id}/lists")
    assert before.json() == {"lists": [], "synced_at": None}
    synced = await api.post(f"/providers/profiles/{profile_id}/sync")
    assert synced.status_code == 200, synced.text
    listed = (await api.get(f"/providers/profiles/{profile_id}/lists")).json()
    assert listed == synced.json() and set(listed) == {"lists", "synced_at"}
    assert {lst["id"] for lst in listed["lists"]} == seeded
    assert len([c for c in harness.fake.calls if c[1].endswith("/lists")]) >= 3  # paged by 3
    for lst in listed["lists"]:
        assert set(lst) == {"id", "name", "member_count", "segments"}
        assert {s["name"] for s in lst["segments"]} >= {"VIP", "Lapsed"}
        assert all(set(s) == {"id", "name", "type"} and isinstance(s["id"], str)
                   for s in lst["segments"])
