"""ActiveCampaign API v3 client.

Endpoints used (providers.md): ``GET /lists``, ``GET /tags``, ``POST /tags``,
``POST /contact/sync`` (upsert by email), ``GET /contacts?email=``,
``POST /contactLists`` (status 1 only, and only for contacts not yet on the list),
``POST /contactTags``, ``GET /contacts/{id}/contactTags``, ``DELETE /contactTags/{id}``.
Two more real ones: ``GET /contacts/{id}/contactLists`` (linked from every contact's
``links``), to read a contact's status on a list before subscribing them, and
``GET /lists/{id}``, so a missing list fails the call once rather than per member.
``list_members`` pages ``GET /contacts?listid={id}&status=-1`` (any status on the
list) or ``GET /contacts?tagid={id}`` with ``limit``/``offset``.

ActiveCampaign has no way to take a contact off a list except status 2, which
unsubscribes them; ``remove_from_list`` therefore refuses (``supports_list_removal``
is False): segments synced to ActiveCampaign should name a tag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from providers.base import (
    BatchResult,
    Member,
    MemberFailure,
    ProviderClient,
    ProviderList,
    ProviderSegment,
    for_each_member,
    unique_emails,
)
from providers.errors import ListNotFound, PermanentError, ProviderError, classify_status
from providers.http import ApiSession, json_or_none, parse_retry_after, text_snippet
from providers.limits import ProviderLimits
from providers.retry import Retry

PROVIDER = "activecampaign"
MAX_PAGE = 100
SUBSCRIBED = "1"

LIST_REMOVAL_UNSUPPORTED = MemberFailure(
    "List Removal Unsupported",
    "ActiveCampaign can only take a contact off a list by unsubscribing them; "
    "name a tag on the segment instead",
)


def parse_error(response: httpx.Response) -> ProviderError:
    """Classify an ActiveCampaign error: ``{errors: [{title, detail, code}]}`` or ``{message}``."""
    status = response.status_code
    body = json_or_none(response)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    title, detail, code = response.reason_phrase or f"HTTP {status}", "", None
    if isinstance(body, dict) and body.get("errors"):
        first, *rest = body["errors"]
        title = str(first.get("title") or title)
        detail = "; ".join(
            str(e.get("detail") or e.get("title") or "") for e in [first, *rest]
        )
        code = str(first["code"]) if first.get("code") else None
    elif isinstance(body, dict) and body.get("message"):
        title = str(body["message"])
    elif response.content:
        detail = text_snippet(response)
    return classify_status(
        status, title, detail, provider=PROVIDER, code=code, retry_after=retry_after
    )


def contact_body(member: Member) -> dict[str, Any]:
    """``contact/sync`` body; ``merge_fields`` keys are custom field ids."""
    contact: dict[str, Any] = {"email": member.email}
    named = {"firstName": member.first_name, "lastName": member.last_name, "phone": member.phone}
    contact.update({k: v for k, v in named.items() if v})
    if member.merge_fields:
        contact["fieldValues"] = [{"field": k, "value": v} for k, v in member.merge_fields.items()]
    return {"contact": contact}


class ActiveCampaignClient(ProviderClient):
    """ActiveCampaign lists, tags and contacts for one account."""

    provider: ClassVar[str] = PROVIDER
    supports_list_removal: ClassVar[bool] = False

    def __init__(
        self, session: ApiSession, account_key: str, *, page_size: int = MAX_PAGE,
        concurrency: int = 5,
    ) -> None:
        self._session = session
        self._account_key = account_key
        self.page_size = max(1, min(page_size, MAX_PAGE))
        self.concurrency = concurrency

    @classmethod
    def from_credentials(
        cls,
        credentials: Mapping[str, str],
        *,
        base_url: str | None,
        http: httpx.AsyncClient | None,
        limits: ProviderLimits,
        retry: Retry,
        **options: Any,
    ) -> ActiveCampaignClient:
        """Build from ``{"api_url": "https://<account>.api-us1.com", "api_key"}``."""
        if not credentials.get("api_key"):
            raise ValueError("credentials.api_key is required")
        api_url = credentials.get("api_url", "").rstrip("/")
        if not api_url and not base_url:
            raise ValueError("credentials.api_url is required (https://<account>.api-us1.com)")
        root = base_url or f"{api_url}/api/3"
        # The limit is per account, shared by all its keys: key by the account URL.
        key = base_url or urlsplit(api_url).netloc.lower()
        session = ApiSession(
            provider=PROVIDER, base_url=root, headers={"Api-Token": credentials["api_key"]},
            parse_error=parse_error, limiter=limits.for_account(PROVIDER, key),
            retry=retry, http=http,
        )
        return cls(session, key, **options)

    @property
    def account_key(self) -> str:
        return self._account_key

    async def validate_credentials(self) -> None:
        await self._session.call("GET", "/lists", params={"limit": 1})

    async def fetch_lists(self) -> list[ProviderList]:
        # Tags belong to the account, not to a list: every list offers all of them.
        tags = [
            ProviderSegment(str(t["id"]), str(t.get("tag", "")), "tag")
            for t in await self._paged("/tags", "tags")
            if t.get("tagType", "contact") == "contact"
        ]
        return [
            ProviderList(str(raw["id"]), str(raw.get("name", "")), _count(raw), list(tags))
            for raw in await self._paged("/lists", "lists")
        ]

    async def list_members(self, list_id: str, segment_id: str | None) -> set[str]:
        if segment_id is None:
            await self._check_list(list_id)
            query: dict[str, str | int] = {"listid": list_id, "status": -1}
        else:
            query = {"tagid": segment_id}
        contacts = await self._paged("/contacts", "contacts", query)
        return {str(c["email"]).strip().lower() for c in contacts if c.get("email")}

    async def _paged(
        self, path: str, key: str, query: Mapping[str, str | int] | None = None
    ) -> list[Any]:
        items: list[Any] = []
        while True:
            params = {**(query or {}), "limit": self.page_size, "offset": len(items)}
            body = (await self._session.call("GET", path, params=params)).body
            batch = body.get(key) or []
            items.extend(batch)
            total = int((body.get("meta") or {}).get("total", 0))
            if not batch or len(items) >= total:
                return items

    async def ensure_tag(self, name: str) -> ProviderSegment:
        """The contact tag called ``name``, created when missing."""
        found = (await self._session.call("GET", "/tags", params={"search": name})).body
        for tag in found.get("tags") or []:
            if str(tag.get("tag", "")).lower() == name.lower():
                return ProviderSegment(str(tag["id"]), str(tag["tag"]), "tag")
        body = {"tag": {"tag": name, "tagType": "contact", "description": ""}}
        made = (await self._session.call("POST", "/tags", json=body)).body["tag"]
        return ProviderSegment(str(made["id"]), str(made["tag"]), "tag")

    async def upsert_members(self, list_id: str, members: Sequence[Member]) -> BatchResult:
        if not members:
            return BatchResult()
        await self._check_list(list_id)
        by_email = {m.email: m for m in members}

        async def upsert(email: str) -> None:
            await self._upsert_one(list_id, by_email[email])

        return await for_each_member(
            unique_emails(by_email), upsert, concurrency=self.concurrency
        )

    async def _check_list(self, list_id: str) -> None:
        try:
            await self._session.call("GET", f"/lists/{list_id}")
        except PermanentError as error:
            if error.status == 404:
                raise ListNotFound.from_error(error, list_id) from error
            raise

    async def _upsert_one(self, list_id: str, member: Member) -> None:
        synced = await self._session.call("POST", "/contact/sync", json=contact_body(member))
        contact_id = str(synced.body["contact"]["id"])
        # 201 means just created: no list status to protect. Otherwise look first, and
        # leave any existing status alone (2 unsubscribed and 3 bounced above all).
        if synced.status != 201 and await self._list_status(contact_id, list_id) is not None:
            return
        body = {"contactList": {"list": list_id, "contact": contact_id, "status": SUBSCRIBED}}
        await self._session.call("POST", "/contactLists", json=body)

    async def _list_status(self, contact_id: str, list_id: str) -> str | None:
        body = (await self._session.call("GET", f"/contacts/{contact_id}/contactLists")).body
        for entry in body.get("contactLists") or []:
            if str(entry.get("list")) == list_id:
                return str(entry.get("status"))
        return None

    async def _contact_id(self, email: str) -> str | None:
        body = (await self._session.call("GET", "/contacts", params={"email": email})).body
        for contact in body.get("contacts") or []:
            if str(contact.get("email", "")).lower() == email.lower():
                return str(contact["id"])
        return None

    async def _tag_links(self, contact_id: str, tag_id: str) -> list[str]:
        """Ids of the contact-tag associations joining this contact to this tag."""
        body = (await self._session.call("GET", f"/contacts/{contact_id}/contactTags")).body
        links = body.get("contactTags") or []
        return [str(link["id"]) for link in links if str(link.get("tag")) == tag_id]

    async def add_to_segment(
        self, list_id: str, segment_id: str, emails: Sequence[str]
    ) -> BatchResult:
        async def tag(email: str) -> None:
            contact_id = await self._contact_id(email)
            if contact_id is None:
                raise PermanentError("Contact Not Found", email, provider=PROVIDER, status=404)
            if await self._tag_links(contact_id, segment_id):
                return
            body = {"contactTag": {"contact": contact_id, "tag": segment_id}}
            await self._session.call("POST", "/contactTags", json=body)

        return await for_each_member(unique_emails(emails), tag, concurrency=self.concurrency)

    async def remove_from_segment(
        self, list_id: str, segment_id: str, emails: Sequence[str]
    ) -> BatchResult:
        async def untag(email: str) -> None:
            contact_id = await self._contact_id(email)
            if contact_id is None:
                return
            for link_id in await self._tag_links(contact_id, segment_id):
                try:
                    await self._session.call("DELETE", f"/contactTags/{link_id}")
                except PermanentError as error:
                    if error.status != 404:
                        raise

        return await for_each_member(unique_emails(emails), untag, concurrency=self.concurrency)

    async def remove_from_list(self, list_id: str, emails: Sequence[str]) -> BatchResult:
        return BatchResult(failed={e: LIST_REMOVAL_UNSUPPORTED for e in unique_emails(emails)})

    async def aclose(self) -> None:
        await self._session.aclose()


def _count(raw: Mapping[str, Any]) -> int | None:
    value = raw.get("subscriber_count")
    return int(value) if value is not None else None
