"""Auto-responder profiles as the providers see them: no storage here.

A profile is one provider account: a name, the provider, its credentials and an optional API
root. This module validates a profile's input (`validated_profile`), encrypts credentials
(`fernet_for`: the Fernet key of ``SEGSTREAM_SECRET_KEY``), opens a client for it
(`open_client`), turns provider failures into answers (`provider_call`) and says whether a
segment's ``auto_responder`` names a list (and segment or tag) the profile's last list sync saw
(`target_problems`), so the API can answer 422 before a single member is sent. Keeping profiles
is `streams.storage.profiles`'s work.

A `Profile` never holds credentials, only the masked ``hint``; nothing here logs them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from cryptography.fernet import Fernet

from providers.base import ProviderClient
from providers.errors import AuthError, ProviderError
from providers.limits import ProviderLimits
from providers.registry import PROVIDERS, make_client
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


def _problem(key: str, message: str) -> dict[str, str]:
    return {"path": f"auto_responder.{key}", "message": message}


def profile_from_record(record: Mapping[str, Any]) -> Profile:
    """The public `Profile` of a stored record (its credentials are left behind)."""
    return Profile(
        id=record["id"], name=record["name"], provider=record["provider"],
        base_url=record.get("base_url"), hint=dict(record.get("hint") or {}),
        created_at=record["created_at"], lists=list(record.get("lists") or []),
        synced_at=record.get("synced_at"),
    )


def validated_profile(
    name: Any, provider: Any, credentials: Any, base_url: Any
) -> dict[str, Any]:
    """The profile input cleaned, or a 422 ``ProfileError`` naming each bad field."""
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


async def provider_call(call: Awaitable[T], doing: str) -> T:
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


def open_client(
    provider: str, credentials: Mapping[str, str], base_url: str | None, *,
    limits: ProviderLimits | None, retry: Retry, **client_options: Any,
) -> ProviderClient:
    """A client for one profile's account (the caller closes it with ``async with``)."""
    try:
        return make_client(provider, credentials, base_url, limits=limits, retry=retry,
                           **client_options)
    except ValueError as exc:
        raise ProfileError("invalid_credentials", str(exc),
                           [{"path": "credentials", "message": str(exc)}]) from None


def target_problems(
    profile: Profile | None, auto_responder: Mapping[str, Any]
) -> Details:
    """What is wrong with a segment's ``auto_responder`` given the profile it names (None: no
    such profile) and that profile's last list sync; empty when nothing is."""
    profile_id = str(auto_responder.get("profile_id", ""))
    list_id = str(auto_responder.get("list_id", ""))
    segment_id = auto_responder.get("segment_id")
    if profile is None:
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
