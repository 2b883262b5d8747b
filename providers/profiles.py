"""Auto-responder profiles: one provider account each, kept in Redis, secrets encrypted.

    <prefix>:profiles   hash  profile id -> JSON {id, name, provider, base_url, credentials
                        (a Fernet token), hint, created_at, lists, synced_at}

Credentials are encrypted with a Fernet key derived from ``SEGSTREAM_SECRET_KEY``
(the key itself when it is a valid Fernet key, else urlsafe-base64 of its SHA-256).
Every read method returns a ``Profile``, which has no credentials; only
``credentials_of`` decrypts them, for the sync worker. Nothing here logs them.

``lists`` is what the last ``sync_lists`` fetched from the provider; ``check_target``
tells whether a segment's ``auto_responder`` names a list (and segment or tag) that
sync saw, so the API can answer 422 before a single member is sent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from cryptography.fernet import Fernet, InvalidToken
from redis.asyncio import Redis

from providers.base import ProviderClient
from providers.errors import AuthError, ProviderError
from providers.limits import ProviderLimits
from providers.registry import PROVIDERS, make_client, mask_credentials
from providers.retry import Retry

T = TypeVar("T")
MAX_NAME_LENGTH = 200
Details = list[dict[str, str]]


class ProfileError(ValueError):
    """A profile request that cannot be done; ``status``/``code`` make the HTTP answer."""

    def __init__(
        self, code: str, message: str, details: Details | None = None, *, status: int = 422
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: Details = details or []
        self.status = status

    def to_body(self) -> dict[str, Any]:
        """The API's error shape: ``{"error": {"code", "message", "details"}}``."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ProfileNotFound(ProfileError):
    """No profile has this id (404)."""

    def __init__(self, profile_id: str) -> None:
        super().__init__("profile_not_found", f"no auto-responder profile {profile_id!r}",
                         [{"path": "profile_id", "message": "unknown profile"}], status=404)


@dataclass(frozen=True)
class Profile:
    """A profile as every reader sees it: no credentials, only the masked ``hint``."""

    id: str
    name: str
    provider: str
    base_url: str | None
    hint: dict[str, str]
    created_at: str
    lists: list[dict[str, Any]] = field(default_factory=list)
    synced_at: str | None = None

    def to_public(self) -> dict[str, Any]:
        """The API's view of the profile (``lists`` excluded: see ``lists_view``)."""
        return {
            "id": self.id, "name": self.name, "provider": self.provider,
            "base_url": self.base_url, "hint": self.hint, "created_at": self.created_at,
            "synced_at": self.synced_at, "list_count": len(self.lists),
        }

    def lists_view(self) -> dict[str, Any]:
        """``GET /providers/profiles/{id}/lists``: ``{"lists": [...], "synced_at"}``."""
        return {"lists": self.lists, "synced_at": self.synced_at}


def fernet_for(secret_key: str) -> Fernet:
    """The Fernet key itself when ``secret_key`` is one, else one derived with SHA-256."""
    try:
        if len(base64.urlsafe_b64decode(secret_key.encode())) == 32:
            return Fernet(secret_key.encode())
    except (binascii.Error, ValueError):
        pass
    digest = hashlib.sha256(secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def now_iso() -> str:
    """The current UTC time, RFC 3339 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        return _public(await self._record(profile_id))

    async def list(self) -> list[Profile]:
        """Every profile, oldest first."""
        raw: dict[bytes, bytes] = await self.redis.hgetall(self.key)
        profiles = [_public(orjson.loads(v)) for v in raw.values()]
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
        clean = _validated(name, provider, credentials, base_url)
        client = self._client(clean["provider"], clean["credentials"], clean["base_url"], limits)
        async with client:
            await _provider_call(client.validate_credentials(), "validate the credentials")
        record = {
            "id": uuid.uuid4().hex, "name": clean["name"], "provider": clean["provider"],
            "base_url": clean["base_url"],
            "credentials": self._fernet.encrypt(orjson.dumps(clean["credentials"])).decode(),
            "hint": mask_credentials(clean["credentials"]), "created_at": now_iso(),
            "lists": [], "synced_at": None,
        }
        await self.redis.hset(self.key, record["id"], orjson.dumps(record))
        return _public(record)

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
            lists = await _provider_call(client.fetch_lists(), "fetch the lists")
        record = await self._record(profile_id)
        record["lists"] = [lst.to_dict() for lst in lists]
        record["synced_at"] = now_iso()
        await self.redis.hset(self.key, profile_id, orjson.dumps(record))
        return _public(record)

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
        try:
            return make_client(
                provider, credentials, base_url, limits=limits or self._limits,
                retry=retry or self._retry or Retry(max_attempts=3), **self._client_options,
            )
        except ValueError as exc:
            raise ProfileError("invalid_credentials", str(exc),
                               [{"path": "credentials", "message": str(exc)}]) from None

    async def target_problems(self, auto_responder: Mapping[str, Any]) -> Details:
        """What is wrong with a segment's ``auto_responder`` given the last sync (empty: ok)."""
        profile_id = str(auto_responder.get("profile_id", ""))
        list_id = str(auto_responder.get("list_id", ""))
        segment_id = auto_responder.get("segment_id")
        try:
            profile = await self.get(profile_id)
        except ProfileNotFound:
            return [_problem("profile_id", f"no auto-responder profile {profile_id!r}")]
        if profile.synced_at is None:
            return [_problem("profile_id", f"profile {profile_id!r} has never been synced: "
                             "POST /providers/profiles/{id}/sync first")]
        found = next((lst for lst in profile.lists if lst["id"] == list_id), None)
        if found is None:
            return [_problem("list_id", f"list {list_id!r} was not among the provider's lists "
                             f"at the last sync ({profile.synced_at})")]
        if segment_id is None:
            if profile.provider == "activecampaign":
                return [_problem("segment_id", "ActiveCampaign can only take a contact off a "
                                 "list by unsubscribing them: name a tag")]
            return []
        if all(s["id"] != str(segment_id) for s in found["segments"]):
            return [_problem("segment_id", f"segment or tag {segment_id!r} was not in list "
                             f"{list_id!r} at the last sync ({profile.synced_at})")]
        return []

    async def check_target(self, auto_responder: Mapping[str, Any]) -> None:
        """Raise a 422 ``ProfileError`` naming what the last sync never saw."""
        problems = await self.target_problems(auto_responder)
        if problems:
            raise ProfileError("unknown_auto_responder_target",
                               "the segment's auto_responder names something the provider "
                               "sync has not seen", problems)


def _problem(key: str, message: str) -> dict[str, str]:
    return {"path": f"auto_responder.{key}", "message": message}


def _public(record: Mapping[str, Any]) -> Profile:
    return Profile(
        id=record["id"], name=record["name"], provider=record["provider"],
        base_url=record.get("base_url"), hint=dict(record.get("hint") or {}),
        created_at=record["created_at"], lists=list(record.get("lists") or []),
        synced_at=record.get("synced_at"),
    )


def _validated(name: Any, provider: Any, credentials: Any, base_url: Any) -> dict[str, Any]:
    details: Details = []
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        details.append({"path": "name",
                        "message": f"a non-empty text of at most {MAX_NAME_LENGTH} characters"})
    if provider not in PROVIDERS:
        details.append({"path": "provider", "message": f"one of {', '.join(PROVIDERS)}"})
    if not isinstance(credentials, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in credentials.items()
    ):
        details.append({"path": "credentials", "message": "an object of text values"})
    if base_url is not None and not (
        isinstance(base_url, str) and base_url.startswith(("http://", "https://"))
    ):
        details.append({"path": "base_url", "message": "an http:// or https:// URL, or left out"})
    if details:
        raise ProfileError("invalid_profile", "the profile is not valid", details)
    assert isinstance(credentials, Mapping)
    return {"name": str(name).strip(), "provider": provider,
            "credentials": {k: v.strip() for k, v in credentials.items()},
            "base_url": base_url.rstrip("/") if isinstance(base_url, str) else None}


async def _provider_call(call: Awaitable[T], doing: str) -> T:
    """Await a provider call, turning its failure into a ``ProfileError``."""
    try:
        return await call
    except AuthError as exc:
        raise ProfileError("credentials_rejected",
                           f"the provider refused the credentials: {exc.reason}",
                           [{"path": "credentials", "message": exc.reason}]) from None
    except ProviderError as exc:
        raise ProfileError("provider_unavailable", f"could not {doing}: {exc}",
                           [{"path": "provider", "message": exc.reason}], status=502) from None
