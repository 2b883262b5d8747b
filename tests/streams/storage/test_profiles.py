"""Auto-responder profiles kept in Redis, against the fake providers over loopback HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from cryptography.fernet import Fernet
from redis.asyncio import Redis

from providers.limits import ProviderLimits
from providers.profiles import ProfileError, ProfileNotFound, fernet_for
from streams.storage.profiles import ProfileStore
from tests.providers.harness import FAST_POLICIES, Harness, fast_retry

SECRET = "correct horse battery staple, and then some"


@pytest.fixture
def store(redis_client: Redis) -> ProfileStore:
    return ProfileStore(redis_client, f"t{uuid.uuid4().hex[:8]}", SECRET,
                        limits=ProviderLimits(FAST_POLICIES), retry=fast_retry(3),
                        client_options={"page_size": 3})


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
