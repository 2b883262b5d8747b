"""Mailchimp Marketing API 3.0 client.

Endpoints used (providers.md): ``GET /lists``, ``GET /lists/{id}/segments?type=static``,
batch upsert ``POST /lists/{id}`` (500 members, ``update_existing``, ``status_if_new``
only), ``PUT /lists/{id}/members/{hash}`` for members a batch refused (to get the
problem title), ``POST /lists/{id}/segments/{sid}`` (500 adds/removes). An upsert
with a segment is the batch upsert, then ``members_to_add`` for those it took.
Three more real endpoints outside providers.md: ``GET /lists/{id}`` (does the list
exist), ``DELETE /lists/{id}/members/{hash}``, which *archives* a member: off the
list, status kept, re-addable; never the permanent delete, which would forbid
re-import; and ``PATCH /lists/{id}/members/{hash}`` with ``email_address``, which
renames a member in place (status, tags and history kept), one member a call.
``list_members`` reads ``GET /lists/{id}/members`` (skipping status ``archived``) or
``GET /lists/{id}/segments/{sid}/members``, paged with ``count``/``offset``.

Renaming (``change_emails``): a ``404`` means Mailchimp does not hold ``old``, so
``new`` is upserted; a ``400`` means it will not rename (``Member Exists``: ``new`` is
already a member; a cleaned ``old`` cannot be edited): ``new`` is upserted and, once
it is there, ``old`` is taken out of the segment and archived, never unsubscribed.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx

from providers.base import (
    BatchResult,
    EmailChange,
    Member,
    MemberFailure,
    ProviderClient,
    ProviderList,
    ProviderSegment,
    by_new_email,
    chunked,
    for_each_member,
    gather_or_raise,
    retire_old_emails,
    unique_emails,
    unique_members,
)
from providers.errors import (
    ListNotFound,
    PermanentError,
    ProviderError,
    RateLimited,
    classify_status,
)
from providers.http import (
    ApiResponse,
    ApiSession,
    json_or_none,
    parse_retry_after,
    secret_digest,
    text_snippet,
)
from providers.limits import ProviderLimits
from providers.retry import Retry

PROVIDER = "mailchimp"
MAX_BATCH = 500
MAX_PAGE = 1000


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: md5 of the lowercased email."""
    return hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest()


def datacenter(api_key: str) -> str:
    """The ``dc`` suffix of an API key (``abc123-us6`` -> ``us6``)."""
    _, sep, dc = api_key.rpartition("-")
    if not sep or not dc:
        raise ValueError("credentials.api_key must end with the data center, e.g. '<key>-us6'")
    return dc


def parse_error(response: httpx.Response) -> ProviderError:
    """Classify a Mailchimp error answer (problem+json, or an empty throttling body)."""
    status = response.status_code
    body = json_or_none(response)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status in (403, 429) and not response.content:
        # At high volume Mailchimp throttles with a bodiless 429 or 403.
        return RateLimited(
            "Too Many Requests", "throttled (empty body)", retry_after=retry_after,
            provider=PROVIDER, status=status,
        )
    if isinstance(body, dict) and body.get("title"):
        detail = str(body.get("detail") or "")
        fields = "; ".join(
            f"{e.get('field')}: {e.get('message')}" for e in body.get("errors") or []
        )
        detail = f"{detail} ({fields})" if fields else detail
        return classify_status(
            status, str(body["title"]), detail, provider=PROVIDER, retry_after=retry_after
        )
    return classify_status(
        status, response.reason_phrase or f"HTTP {status}", text_snippet(response),
        provider=PROVIDER, retry_after=retry_after,
    )


def merge_fields(member: Member) -> dict[str, str]:
    """The member's names, phone and own merge fields, as Mailchimp merge tags."""
    merge = {"FNAME": member.first_name, "LNAME": member.last_name, "PHONE": member.phone}
    return {k: v for k, v in merge.items() if v} | dict(member.merge_fields)


def member_body(member: Member, status_if_new: str) -> dict[str, Any]:
    """Upsert body: ``status_if_new`` only, so an existing member keeps their status."""
    return {"email_address": member.email, "status_if_new": status_if_new,
            "merge_fields": merge_fields(member)}


class MailchimpClient(ProviderClient):
    """Mailchimp audiences, static segments (tags) and members for one account."""

    provider: ClassVar[str] = PROVIDER

    def __init__(
        self,
        session: ApiSession,
        account_key: str,
        *,
        page_size: int = MAX_PAGE,
        status_if_new: str = "subscribed",
        concurrency: int = 10,
        retry_failed_individually: bool = True,
    ) -> None:
        self._session = session
        self._account_key = account_key
        self.page_size = max(1, min(page_size, MAX_PAGE))
        self.status_if_new = status_if_new
        self.concurrency = concurrency
        self.retry_failed_individually = retry_failed_individually

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
    ) -> MailchimpClient:
        """Build from ``{"api_key": "<key>-<dc>"}`` or ``{"access_token", "dc"}``."""
        if credentials.get("api_key"):
            secret = credentials["api_key"]
            token = base64.b64encode(f"segstream:{secret}".encode()).decode()
            auth, dc = f"Basic {token}", (None if base_url else datacenter(secret))
        elif credentials.get("access_token"):
            secret = credentials["access_token"]
            auth, dc = f"Bearer {secret}", credentials.get("dc")
            if not dc and not base_url:
                raise ValueError("credentials.dc is required with an access_token")
        else:
            raise ValueError("credentials.api_key is required (or access_token and dc)")
        root = base_url or f"https://{dc}.api.mailchimp.com/3.0"
        key = f"{root}|{secret_digest(secret)}"
        session = ApiSession(
            provider=PROVIDER, base_url=root, headers={"Authorization": auth},
            parse_error=parse_error, limiter=limits.for_account(PROVIDER, key),
            retry=retry, http=http,
        )
        return cls(session, key, **options)

    @property
    def account_key(self) -> str:
        return self._account_key

    async def validate_credentials(self) -> None:
        await self._session.call("GET", "/lists", params={"count": 1, "fields": "total_items"})

    async def fetch_lists(self) -> list[ProviderList]:
        raw_lists = await self._paged("/lists", "lists", {})
        segments = await gather_or_raise(
            self._paged(f"/lists/{raw['id']}/segments", "segments", {"type": "static"})
            for raw in raw_lists
        )
        return [_to_list(raw, segs) for raw, segs in zip(raw_lists, segments, strict=True)]

    async def list_members(self, list_id: str, segment_id: str | None) -> set[str]:
        if segment_id is None:
            path = f"/lists/{list_id}/members"
        else:
            path = f"/lists/{list_id}/segments/{segment_id}/members"
        try:
            members = await self._paged(path, "members", {})
        except PermanentError as error:
            if error.status == 404 and segment_id is None:
                raise ListNotFound.from_error(error, list_id) from error
            raise
        return {
            str(m["email_address"]).strip().lower() for m in members
            if m.get("email_address") and m.get("status") != "archived"
        }

    async def _paged(self, path: str, key: str, params: dict[str, str | int]) -> list[Any]:
        items: list[Any] = []
        while True:
            page = {**params, "count": self.page_size, "offset": len(items)}
            body = (await self._session.call("GET", path, params=page)).body
            batch = body.get(key) or []
            items.extend(batch)
            if not batch or len(items) >= int(body.get("total_items", 0)):
                return items

    async def upsert_members(
        self, list_id: str, members: Sequence[Member], segment_id: str | None = None
    ) -> BatchResult:
        result = BatchResult()
        for chunk in chunked(unique_members(members), MAX_BATCH):
            upserted = await self._upsert_chunk(list_id, chunk)
            if segment_id is not None and upserted.succeeded:
                added = await self.add_to_segment(list_id, segment_id, upserted.succeeded)
                upserted = upserted.then(added)
            result.extend(upserted)
        return result

    async def change_emails(
        self, list_id: str, changes: Sequence[EmailChange], segment_id: str | None = None
    ) -> BatchResult:
        by_new = by_new_email(changes)
        if not by_new:
            return BatchResult()
        # A missing list must fail loudly, not look like "old unknown" member by member.
        await self._list_call(list_id, "GET", f"/lists/{list_id}", params={"fields": "id"})
        renamed: list[str] = []
        upsert: dict[str, bool] = {}  # new email -> whether old must then be retired

        async def rename(email: str) -> None:
            outcome = await self._rename(list_id, by_new[email])
            if outcome == "renamed":
                renamed.append(email)
            else:
                upsert[email] = outcome == "refused"

        result = await for_each_member(list(by_new), rename, concurrency=self.concurrency)
        done = BatchResult(failed=result.failed)
        if segment_id is not None and renamed:
            done.extend(await self.add_to_segment(list_id, segment_id, renamed))
        else:
            done.succeeded.extend(renamed)
        if upsert:
            news = [by_new[e].new for e in upsert]
            upserted = await self.upsert_members(list_id, news, segment_id)
            done.failed.update(upserted.failed)
            done.succeeded.extend(e for e in upserted.succeeded if not upsert[e])
            retiring = {e: by_new[e].old for e in upserted.succeeded if upsert[e]}
            done.extend(await retire_old_emails(self, list_id, segment_id, retiring))
        return done

    async def _rename(self, list_id: str, change: EmailChange) -> str:
        """PATCH ``old`` to ``new``: "renamed", "unknown" (no ``old``) or "refused"."""
        path = f"/lists/{list_id}/members/{subscriber_hash(change.old)}"
        body = {"email_address": change.new.email, "merge_fields": merge_fields(change.new)}
        try:
            answer = await self._session.call("PATCH", path, json=body)
        except PermanentError as error:
            if error.status == 404:
                return "unknown"
            if error.status == 400:  # Member Exists, a cleaned old, ...: no rename
                return "refused"
            raise
        # An archived member is renamed but stays archived: the upsert brings it back.
        archived = isinstance(answer.body, dict) and answer.body.get("status") == "archived"
        return "unknown" if archived else "renamed"

    async def _upsert_chunk(self, list_id: str, chunk: Sequence[Member]) -> BatchResult:
        body = {
            "members": [member_body(m, self.status_if_new) for m in chunk],
            "update_existing": True,
        }
        answer = (await self._list_call(list_id, "POST", f"/lists/{list_id}", json=body)).body
        errors = {str(e.get("email_address", "")).lower(): e for e in answer.get("errors") or []}
        result = BatchResult([m.email for m in chunk if m.email.lower() not in errors])
        refused = [m for m in chunk if m.email.lower() in errors]
        if refused and self.retry_failed_individually:
            result.extend(await self._put_each(list_id, refused))
        else:
            for m in refused:
                result.failed[m.email] = _batch_failure(errors[m.email.lower()])
        return result

    async def _put_each(self, list_id: str, members: Sequence[Member]) -> BatchResult:
        """Members a batch refused, one by one: the problem title says exactly why."""
        by_email = {m.email: m for m in members}

        async def put(email: str) -> None:
            path = f"/lists/{list_id}/members/{subscriber_hash(email)}"
            await self._session.call(
                "PUT", path, json=member_body(by_email[email], self.status_if_new)
            )

        return await for_each_member(list(by_email), put, concurrency=self.concurrency)

    async def add_to_segment(
        self, list_id: str, segment_id: str, emails: Sequence[str]
    ) -> BatchResult:
        return await self._segment_call(list_id, segment_id, emails, "members_to_add")

    async def remove_from_segment(
        self, list_id: str, segment_id: str, emails: Sequence[str]
    ) -> BatchResult:
        return await self._segment_call(list_id, segment_id, emails, "members_to_remove")

    async def _segment_call(
        self, list_id: str, segment_id: str, emails: Sequence[str], key: str
    ) -> BatchResult:
        # Emails not on the list are ignored by Mailchimp, and so count as done.
        result = BatchResult()
        path = f"/lists/{list_id}/segments/{segment_id}"
        for chunk in chunked(unique_emails(emails), MAX_BATCH):
            answer = (await self._session.call("POST", path, json={key: list(chunk)})).body
            failed: dict[str, MemberFailure] = {}
            for err in answer.get("errors") or []:
                for address in err.get("email_addresses") or []:
                    failed[str(address).lower()] = MemberFailure(str(err.get("error")), status=200)
            for email in chunk:
                if email.lower() in failed:
                    result.failed[email] = failed[email.lower()]
                else:
                    result.succeeded.append(email)
        return result

    async def remove_from_list(self, list_id: str, emails: Sequence[str]) -> BatchResult:
        if not emails:
            return BatchResult()
        # A missing list must fail loudly, not look like "already removed".
        await self._list_call(list_id, "GET", f"/lists/{list_id}", params={"fields": "id"})

        async def archive(email: str) -> None:
            try:
                await self._session.call(
                    "DELETE", f"/lists/{list_id}/members/{subscriber_hash(email)}"
                )
            except PermanentError as error:
                if error.status != 404:
                    raise

        return await for_each_member(unique_emails(emails), archive, concurrency=self.concurrency)

    async def _list_call(
        self, list_id: str, method: str, path: str, **kwargs: Any
    ) -> ApiResponse:
        """A call on the list resource itself, where a 404 means the list is missing."""
        try:
            return await self._session.call(method, path, **kwargs)
        except PermanentError as error:
            if error.status == 404:
                raise ListNotFound.from_error(error, list_id) from error
            raise

    async def aclose(self) -> None:
        await self._session.aclose()


def _batch_failure(error: Mapping[str, Any]) -> MemberFailure:
    code = str(error.get("error_code") or "") or None
    return MemberFailure(code or "Batch Error", str(error.get("error") or ""), 200, code)


def _to_list(raw: Mapping[str, Any], segments: list[Any]) -> ProviderList:
    count = (raw.get("stats") or {}).get("member_count")
    return ProviderList(
        id=str(raw["id"]),
        name=str(raw.get("name", "")),
        member_count=int(count) if count is not None else None,
        segments=[
            ProviderSegment(str(s["id"]), str(s.get("name", "")), str(s.get("type", "static")))
            for s in segments
        ],
    )
