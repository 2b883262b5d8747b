"""Auto-responder profiles: the store in Redis and its HTTP routes, against the fakes.

The routes are mounted on a small FastAPI app and called in-process; the store talks
to the fake providers over loopback HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from redis.asyncio import Redis

from providers.limits import ProviderLimits
from providers.profiles import ProfileError, ProfileNotFound, fernet_for
from streams.api.providers import providers_router
from streams.storage.profiles import ProfileStore
from tests.providers.harness import FAST_POLICIES, Harness, fast_retry

SECRET = "correct horse battery staple, and then some"


@pytest.fixture
def store(redis_client: Redis) -> ProfileStore:
    return ProfileStore(redis_client, f"t{uuid.uuid4().hex[:8]}", SECRET,
                        limits=ProviderLimits(FAST_POLICIES), retry=fast_retry(3),
                        client_options={"page_size": 3})


@pytest.fixture
async def api(store: ProfileStore) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(providers_router(store, ProviderLimits(FAST_POLICIES)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


def body(harness: Harness, **extra: Any) -> dict[str, Any]:
    return {"name": f"{harness.provider} shop", "provider": harness.provider,
            "credentials": harness.fake.credentials(), "base_url": harness.base_url, **extra}


def secrets_of(harness: Harness) -> list[str]:
    return [v for k, v in harness.fake.credentials().items() if k != "api_url"]


async def test_create_validates_and_stores_credentials_encrypted(
    store: ProfileStore, redis_client: Redis, mailchimp: Harness
) -> None:
    b = body(mailchimp)
    profile = await store.create(b["name"], b["provider"], b["credentials"], b["base_url"])
    raw = await redis_client.hget(store.key, profile.id)
    assert raw is not None
    for secret in secrets_of(mailchimp):
        assert secret.encode() not in raw
    assert profile.hint["api_key"].startswith("****") and "credentials" not in vars(profile)
    assert await store.credentials_of(profile.id) == mailchimp.fake.credentials()
    assert [p.id for p in await store.list()] == [profile.id]


async def test_bad_key_is_a_422_profile_error(store: ProfileStore, mailchimp: Harness) -> None:
    with pytest.raises(ProfileError) as caught:
        await store.create("x", "mailchimp", {"api_key": "0" * 32 + "-us6"}, mailchimp.base_url)
    assert caught.value.status == 422 and caught.value.code == "credentials_rejected"
    assert await store.list() == []


async def test_invalid_input_names_each_field(store: ProfileStore) -> None:
    with pytest.raises(ProfileError) as caught:
        await store.create("", "mailchump", ["key"], "ftp://x")
    assert {d["path"] for d in caught.value.details} == {
        "name", "provider", "credentials", "base_url"}


def test_secret_key_that_is_a_fernet_key_is_used_as_is() -> None:
    key = Fernet.generate_key().decode()
    token = Fernet(key.encode()).encrypt(b"x")
    assert fernet_for(key).decrypt(token) == b"x"
    assert fernet_for(SECRET).decrypt(fernet_for(SECRET).encrypt(b"y")) == b"y"


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


async def test_target_problems_against_the_last_sync(
    store: ProfileStore, mailchimp: Harness
) -> None:
    list_id, segments = mailchimp.seed_list("Shop", "VIP")
    b = body(mailchimp)
    profile = await store.create(b["name"], b["provider"], b["credentials"], b["base_url"])
    target = {"profile_id": profile.id, "list_id": list_id, "segment_id": segments["VIP"]}
    assert (await store.target_problems(target))[0]["path"] == "auto_responder.profile_id"
    await store.sync_lists(profile.id)
    assert await store.target_problems(target) == []
    assert await store.target_problems({"profile_id": profile.id, "list_id": list_id}) == []
    for wrong, path in (({"list_id": "nope"}, "list_id"), ({"segment_id": "999"}, "segment_id"),
                        ({"profile_id": "nope"}, "profile_id")):
        problems = await store.target_problems({**target, **wrong})
        assert [p["path"] for p in problems] == [f"auto_responder.{path}"]


async def test_missing_profile_is_not_found(store: ProfileStore) -> None:
    with pytest.raises(ProfileNotFound):
        await store.get("nope")
    with pytest.raises(ProfileNotFound):
        await store.credentials_of("nope")
