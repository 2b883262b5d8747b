"""Auto-responder profiles kept in Redis, credentials encrypted.

    <prefix>:profiles   hash  profile id -> JSON {id, name, provider, base_url, credentials
                        (a Fernet token), hint, created_at, lists, synced_at}

Credentials are encrypted with the Fernet key of ``SEGSTREAM_SECRET_KEY``
(`providers.profiles.fernet_for`). Every read returns a ``Profile``, which has no credentials;
only ``credentials_of`` decrypts them, for the sync worker. Nothing here logs them.
``lists`` is what the last ``sync_lists`` fetched from the provider.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.fernet import InvalidToken
from redis.asyncio import Redis

from providers.base import ProviderClient
from providers.limits import ProviderLimits
from providers.profiles import (
    Details,
    Profile,
    ProfileError,
    ProfileNotFound,
    fernet_for,
    now_iso,
    open_client,
    profile_from_record,
    provider_call,
    target_problems,
    validated_profile,
)
from providers.registry import mask_credentials
from providers.retry import Retry
from streams.ops.logs import register_credentials


class ProfileStore:
    """Create, read and sync auto-responder profiles; decrypt credentials for workers only."""

    def __init__(
        self,
        redis: Redis,
        key_prefix: str,
        secret_key: str,
        *,
        limits: ProviderLimits | None = None,
        retry: Retry | None = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.redis: Any = redis  # redis-py types commands as sync-or-async
        self.key = f"{key_prefix}:profiles"
        self._fernet = fernet_for(secret_key)
        self._limits = limits
        self._retry = retry
        self._client_options = dict(client_options or {})

    # -- reads ------------------------------------------------------------------------

    async def get(self, profile_id: str) -> Profile:
        """The profile, or ``ProfileNotFound``."""
        return profile_from_record(await self._record(profile_id))

    async def unreadable(self) -> list[Profile]:
        """The profiles whose credentials this key cannot decrypt, oldest first (none: the key
        is the one they were saved with). One decryption per profile: a role checks its
        SEGSTREAM_SECRET_KEY at start with it, instead of failing on first use."""
        raw: dict[bytes, bytes] = await self.redis.hgetall(self.key)
        unreadable = []
        for value in raw.values():
            record = orjson.loads(value)
            try:
                self._fernet.decrypt(record["credentials"].encode())
            except InvalidToken:
                unreadable.append(profile_from_record(record))
        return sorted(unreadable, key=lambda p: (p.created_at, p.id))

    async def list(self) -> list[Profile]:
        """Every profile, oldest first."""
        raw: dict[bytes, bytes] = await self.redis.hgetall(self.key)
        profiles = [profile_from_record(orjson.loads(v)) for v in raw.values()]
        return sorted(profiles, key=lambda p: (p.created_at, p.id))

    async def credentials_of(self, profile_id: str) -> dict[str, str]:
        """The decrypted credentials: for the sync worker, never for an API answer."""
        record = await self._record(profile_id)
        try:
            plain = self._fernet.decrypt(record["credentials"].encode())
        except InvalidToken:
            raise ProfileError(
                "credentials_unreadable",
                f"profile {profile_id!r}: credentials cannot be decrypted with this "
                "SEGSTREAM_SECRET_KEY (was the key changed?)",
                status=500,
            ) from None
        value: dict[str, str] = orjson.loads(plain)
        register_credentials(value)  # the log redactor's safety net
        return value

    async def _record(self, profile_id: str) -> dict[str, Any]:
        raw = await self.redis.hget(self.key, profile_id)
        if raw is None:
            raise ProfileNotFound(profile_id)
        record: dict[str, Any] = orjson.loads(raw)
        return record

    # -- writes -----------------------------------------------------------------------

    async def create(
        self,
        name: Any,
        provider: Any,
        credentials: Any,
        base_url: Any = None,
        *,
        limits: ProviderLimits | None = None,
    ) -> Profile:
        """Validate the input and the credentials against the provider, then store."""
        clean = validated_profile(name, provider, credentials, base_url)
        register_credentials(clean["credentials"])  # the log redactor's safety net
        client = self._client(clean["provider"], clean["credentials"], clean["base_url"], limits)
        async with client:
            await provider_call(client.validate_credentials(), "validate the credentials")
        record = {
            "id": uuid.uuid4().hex, "name": clean["name"], "provider": clean["provider"],
            "base_url": clean["base_url"],
            "credentials": self._fernet.encrypt(orjson.dumps(clean["credentials"])).decode(),
            "hint": mask_credentials(clean["credentials"]), "created_at": now_iso(),
            "lists": [], "synced_at": None,
        }
        await self.redis.hset(self.key, record["id"], orjson.dumps(record))
        return profile_from_record(record)

    async def delete(self, profile_id: str) -> bool:
        """Forget a profile; True when it existed."""
        return bool(await self.redis.hdel(self.key, profile_id))

    async def sync_lists(
        self, profile_id: str, *, limits: ProviderLimits | None = None
    ) -> Profile:
        """Fetch every list with its segments or tags from the provider and keep them."""
        profile = await self.get(profile_id)
        credentials = await self.credentials_of(profile_id)
        client = self._client(profile.provider, credentials, profile.base_url, limits)
        async with client:
            lists = await provider_call(client.fetch_lists(), "fetch the lists")
        record = await self._record(profile_id)
        record["lists"] = [lst.to_dict() for lst in lists]
        record["synced_at"] = now_iso()
        await self.redis.hset(self.key, profile_id, orjson.dumps(record))
        return profile_from_record(record)

    # -- use ----------------------------------------------------------------------------

    def open_client(
        self, profile: Profile, credentials: Mapping[str, str], *,
        limits: ProviderLimits | None = None, retry: Retry | None = None,
    ) -> ProviderClient:
        """A client for this profile (the caller closes it with ``async with``)."""
        return self._client(profile.provider, credentials, profile.base_url, limits, retry)

    def _client(
        self, provider: str, credentials: Mapping[str, str], base_url: str | None,
        limits: ProviderLimits | None, retry: Retry | None = None,
    ) -> ProviderClient:
        return open_client(provider, credentials, base_url, limits=limits or self._limits,
                           retry=retry or self._retry or Retry(max_attempts=3),
                           **self._client_options)

    async def target_problems(self, auto_responder: Mapping[str, Any]) -> Details:
        """What is wrong with a segment's ``auto_responder`` given the last sync (empty: ok)."""
        try:
            profile: Profile | None = await self.get(str(auto_responder.get("profile_id", "")))
        except ProfileNotFound:
            profile = None
        return target_problems(profile, auto_responder)
