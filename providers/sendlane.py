"""Sendlane API v2 client.

Endpoints used (providers.md): ``GET /lists``, ``GET /tags``, ``POST /tags``,
``GET /contacts/search?email=``, ``POST /lists/{id}/contacts``,
``DELETE /lists/{id}/contacts/{cid}``, ``POST /contacts/{id}/tags``,
``DELETE /contacts/{id}/tags/{tid}``; for ``list_members``, ``GET /lists/{id}/contacts``
and ``GET /tags/{id}/contacts`` (``page``/``limit``; both unconfirmed: no source showed
them, the shape assumed is that of ``GET /lists``); and ``GET /contacts/unsubscribed``
(Sendlane's published v2 OpenAPI: paged, with ``from``/``to`` datetimes).

Upserts are batched: one ``POST /lists/{id}/contacts`` per ``MAX_BATCH`` contacts,
each carrying ``tag_ids`` when a tag is asked for, so a batch joins list and tag in
one call; a 422 naming contacts by index (``contacts.3.email``) fails those and the
rest are sent again.

Sendlane applies writes asynchronously (202). The client remembers what its own
202s will make true (``PendingWrites``) and, before acting on a contact with such
a write outstanding, polls the search until it shows the write (or a horizon
passes): so "add to list, then tag" or "add, then remove" in quick succession
act on the state the earlier call produces, not on a stale read.

Consent: ``email_consent`` overwrites a contact's consent (assumed, the strict
reading), so an upsert must never send ``true`` for someone who unsubscribed. The
client keeps the account's unsubscribed emails (``UnsubscribedEmails``: every page
of ``GET /contacts/unsubscribed`` once, then only those since the last read, with
``from``; assumed to filter by when they unsubscribed) and refreshes them before
each upsert: an unsubscribed contact is sent without ``email_consent`` (their own
is kept), everyone else with ``consent_for_new``. This costs one call per upsert
instead of one search per member. A contact Sendlane holds without consent who
never unsubscribed is given ``consent_for_new`` like a new one.

Email changes: Sendlane v2 has no way to change a contact's email (no update of a
contact's address in its API), so ``change_emails`` upserts the new address (with
the tag, and unsubscribed if the old one was) and, once that is accepted, takes the
old contact off the list and out of the tag, never unsubscribing it; the old
contact's other tags and lists are not carried over.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
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
    retire_old_emails,
    unique_emails,
    unique_members,
)
from providers.errors import ListNotFound, PermanentError, ProviderError, classify_status
from providers.http import (
    ApiSession,
    json_or_none,
    parse_retry_after,
    secret_digest,
    text_snippet,
)
from providers.limits import ProviderLimits
from providers.retry import Retry

PROVIDER = "sendlane"
BASE_URL = "https://api.sendlane.com/v2"
MAX_BATCH = 100  # contacts per POST: unpublished; providers.md: "unconfirmed: 100"
MAX_PAGE = 100
#: Re-read unsubscribes from this long before the last read: clocks differ, and an
#: unsubscribe may be stamped a little before it is listed.
UNSUBSCRIBED_OVERLAP = 300.0
_CONTACT_FIELD = re.compile(r"^contacts\.(\d+)\.")

Contact = dict[str, Any]


class ValidationFailed(PermanentError):
    """A 422: ``fields`` maps each offending field (``contacts.3.email``) to messages."""

    def __init__(self, title: str, detail: str, fields: Mapping[str, list[str]]) -> None:
        self.fields = dict(fields)
        super().__init__(title, detail, provider=PROVIDER, status=422)


def parse_error(response: httpx.Response) -> ProviderError:
    """Classify a Sendlane error: ``{message, errors}``, or an HTML page (401)."""
    status = response.status_code
    body = json_or_none(response)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if not isinstance(body, dict):
        title = response.reason_phrase or f"HTTP {status}"
        return classify_status(
            status, title, text_snippet(response), provider=PROVIDER, retry_after=retry_after
        )
    title = str(body.get("message") or response.reason_phrase or f"HTTP {status}")
    errors = body.get("errors")
    fields = {str(k): [str(m) for m in v] for k, v in errors.items()} if isinstance(
        errors, dict
    ) else {}
    detail = "; ".join(f"{k}: {' '.join(v)}" for k, v in fields.items())
    if status == 422:
        return ValidationFailed(title, detail, fields)
    return classify_status(status, title, detail, provider=PROVIDER, retry_after=retry_after)


def _as_id(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _ids(contact: Contact, key: str) -> set[str]:
    """Ids under ``lists``/``tags``, whether given as ids or as ``{id, ...}`` objects."""
    out: set[str] = set()
    for item in contact.get(key) or []:
        out.add(str(item.get("id")) if isinstance(item, dict) else str(item))
    return out


class PendingWrites:
    """What our own accepted (202) writes will make true, until a read confirms it."""

    def __init__(self, horizon: float, clock: Any = time.monotonic) -> None:
        self.horizon = horizon
        self._clock = clock
        self._expected: dict[tuple[str, str, str], tuple[bool, float]] = {}

    def expect(self, email: str, kind: str, ident: str, present: bool) -> None:
        """Record that ``ident`` should soon be (or not be) in the contact's ``kind``."""
        self._expected[(email.lower(), kind, ident)] = (present, self._clock() + self.horizon)

    def outstanding(self, email: str, contact: Contact | None) -> bool:
        """True while the contact does not yet show a write of ours; forgets settled ones."""
        now, email = self._clock(), email.lower()
        waiting = False
        for key in [k for k in self._expected if k[0] == email]:
            present, deadline = self._expected[key]
            shown = contact is not None and key[2] in _ids(contact, key[1])
            if shown == present or now >= deadline:
                del self._expected[key]
            else:
                waiting = True
        return waiting


class UnsubscribedEmails:
    """The account's unsubscribed emails (lowercased), as of ``read_at`` (wall clock)."""

    def __init__(self) -> None:
        self.emails: set[str] = set()
        self.read_at: float | None = None

    def since(self) -> str | None:
        """The ``from`` of the next read: None for a first, full read."""
        if self.read_at is None:
            return None
        start = datetime.fromtimestamp(self.read_at - UNSUBSCRIBED_OVERLAP, UTC)
        return start.strftime("%Y-%m-%dT%H:%M:%SZ")

    def add(self, contacts: Sequence[Any], read_at: float) -> None:
        """Record a read's contacts; ``read_at`` is when it started."""
        self.emails.update(str(c["email"]).strip().lower() for c in contacts
                           if isinstance(c, dict) and c.get("email"))
        self.read_at = read_at


class SendlaneClient(ProviderClient):
    """Sendlane lists, tags and contacts for one account."""

    provider: ClassVar[str] = PROVIDER

    def __init__(
        self,
        session: ApiSession,
        account_key: str,
        *,
        page_size: int = MAX_PAGE,
        concurrency: int = 8,
        consent_for_new: bool | None = True,
        visibility_horizon: float = 10.0,
    ) -> None:
        self._session = session
        self._account_key = account_key
        self.page_size = max(1, min(page_size, MAX_PAGE))
        self.concurrency = concurrency
        self.consent_for_new = consent_for_new
        self.pending = PendingWrites(visibility_horizon)
        self.unsubscribed = UnsubscribedEmails()

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
    ) -> SendlaneClient:
        """Build from ``{"api_token"}``."""
        token = credentials.get("api_token")
        if not token:
            raise ValueError("credentials.api_token is required")
        root = base_url or BASE_URL
        key = f"{root}|{secret_digest(token)}"
        session = ApiSession(
            provider=PROVIDER, base_url=root, headers={"Authorization": f"Bearer {token}"},
            parse_error=parse_error, limiter=limits.for_account(PROVIDER, key),
            retry=retry, http=http,
        )
        return cls(session, key, **options)

    @property
    def account_key(self) -> str:
        return self._account_key

    async def validate_credentials(self) -> None:
        await self._session.call("GET", "/lists", params={"page": 1, "limit": 1})

    async def fetch_lists(self) -> list[ProviderList]:
        tags = [
            ProviderSegment(str(t["id"]), str(t.get("name", "")), "tag")
            for t in await self._paged("/tags")
        ]
        return [
            ProviderList(str(raw["id"]), _name(raw), _count(raw), list(tags))
            for raw in await self._paged("/lists")
        ]

    async def list_members(self, list_id: str, segment_id: str | None) -> set[str]:
        # Unconfirmed endpoints (providers.md has neither): GET /lists/{id}/contacts and
        # GET /tags/{id}/contacts, assumed paged like GET /lists ({data, meta.last_page}).
        path = (f"/lists/{list_id}/contacts" if segment_id is None
                else f"/tags/{segment_id}/contacts")
        try:
            contacts = await self._paged(path)
        except PermanentError as error:
            if error.status == 404 and segment_id is None:
                raise ListNotFound.from_error(error, list_id) from error
            raise
        return {str(c["email"]).strip().lower() for c in contacts
                if isinstance(c, dict) and c.get("email")}

    async def _paged(self, path: str, query: Mapping[str, str] | None = None) -> list[Any]:
        items: list[Any] = []
        page = 1
        while True:
            params: dict[str, str | int] = {**(query or {}), "page": page,
                                            "limit": self.page_size}
            body = (await self._session.call("GET", path, params=params)).body
            batch = body.get("data") or []
            items.extend(batch)
            last = int((body.get("meta") or {}).get("last_page", page))
            if not batch or page >= last:
                return items
            page += 1

    async def ensure_tag(self, name: str) -> ProviderSegment:
        """The tag called ``name``, created when missing."""
        for tag in await self._paged("/tags"):
            if str(tag.get("name", "")).lower() == name.lower():
                return ProviderSegment(str(tag["id"]), str(tag["name"]), "tag")
        made = (await self._session.call("POST", "/tags", json={"name": name})).body["data"]
        return ProviderSegment(str(made["id"]), str(made["name"]), "tag")

    async def _search(self, email: str) -> Contact | None:
        try:
            body = (
                await self._session.call("GET", "/contacts/search", params={"email": email})
            ).body
        except PermanentError as error:
            if error.status == 404:
                return None
            raise
        data = body.get("data") if isinstance(body, dict) else None
        candidates = data if isinstance(data, list) else [data]
        for contact in candidates:
            if isinstance(contact, dict) and str(contact.get("email", "")).lower() == email.lower():
                return contact
        return None

    async def _settled_contact(self, email: str) -> Contact | None:
        """The contact as our own outstanding writes will leave it (polls until shown)."""
        delay = 0.02
        while True:
            contact = await self._search(email)
            if not self.pending.outstanding(email, contact):
                return contact
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def upsert_members(
        self, list_id: str, members: Sequence[Member], segment_id: str | None = None
    ) -> BatchResult:
        unique = unique_members(members)
        if not unique:
            return BatchResult()
        unsubscribed = await self._unsubscribed()
        payloads = [
            self._contact_payload(m, None if m.email.lower() in unsubscribed
                                  else self.consent_for_new, segment_id)
            for m in unique
        ]
        result = BatchResult()
        for chunk in chunked(payloads, MAX_BATCH):
            result.extend(await self._post_contacts(list_id, list(chunk), segment_id))
        return result

    async def _unsubscribed(self) -> set[str]:
        """The account's unsubscribed emails, read anew since the last time."""
        started = time.time()
        since = self.unsubscribed.since()
        query = {"from": since} if since is not None else None
        self.unsubscribed.add(await self._paged("/contacts/unsubscribed", query), started)
        return self.unsubscribed.emails

    def _contact_payload(
        self, member: Member, consent: bool | None, segment_id: str | None
    ) -> dict[str, Any]:
        """A contact of ``POST /lists/{id}/contacts``; no ``email_consent`` when None."""
        payload: dict[str, Any] = {"email": member.email}
        named = {"first_name": member.first_name, "last_name": member.last_name,
                 "phone": member.phone}
        payload.update({k: v for k, v in named.items() if v})
        if member.merge_fields:
            payload["custom_fields"] = [
                {"id": _as_id(k), "value": v} for k, v in member.merge_fields.items()
            ]
        if consent is not None:
            payload["email_consent"] = consent
        if segment_id is not None:
            payload["tag_ids"] = [_as_id(segment_id)]
        return payload

    async def change_emails(
        self, list_id: str, changes: Sequence[EmailChange], segment_id: str | None = None
    ) -> BatchResult:
        by_new = by_new_email(changes)
        if not by_new:
            return BatchResult()
        payloads: dict[str, dict[str, Any]] = {}

        async def prepare(email: str) -> None:
            change = by_new[email]
            old, new = await self._settled_contact(change.old), await self._settled_contact(email)
            payloads[email] = self._contact_payload(
                change.new, _carried_consent(old, new, self.consent_for_new), segment_id)

        looked = await for_each_member(list(by_new), prepare, concurrency=self.concurrency)
        result = BatchResult(failed=looked.failed)
        ready = [payloads[e] for e in looked.succeeded]
        posted = BatchResult()
        for chunk in chunked(ready, MAX_BATCH):
            posted.extend(await self._post_contacts(list_id, list(chunk), segment_id))
        result.failed.update(posted.failed)
        olds = {e: by_new[e].old for e in posted.succeeded
                if by_new[e].old.lower() != e.lower()}
        result.succeeded.extend(e for e in posted.succeeded if e not in olds)
        result.extend(await retire_old_emails(self, list_id, segment_id, olds))
        return result

    async def _post_contacts(
        self, list_id: str, payloads: list[dict[str, Any]], segment_id: str | None = None
    ) -> BatchResult:
        """POST a chunk; on a 422 naming members by index, set those aside, send the rest."""
        result = BatchResult()
        while payloads:
            try:
                await self._post_chunk(list_id, payloads)
            except ValidationFailed as error:
                payloads = _set_aside_refused(error, payloads, result)
                continue
            for payload in payloads:
                self.pending.expect(payload["email"], "lists", list_id, True)
                if segment_id is not None:
                    self.pending.expect(payload["email"], "tags", segment_id, True)
                result.succeeded.append(payload["email"])
            break
        return result

    async def _post_chunk(self, list_id: str, payloads: list[dict[str, Any]]) -> None:
        try:
            await self._session.call(
                "POST", f"/lists/{list_id}/contacts", json={"contacts": payloads}
            )
        except PermanentError as error:
            if error.status == 404:
                raise ListNotFound.from_error(error, list_id) from error
            raise

    async def add_to_segment(
        self, list_id: str, segment_id: str, emails: Sequence[str]
    ) -> BatchResult:
        async def tag(email: str) -> None:
            contact = await self._settled_contact(email)
            if contact is None:
                raise PermanentError("Contact Not Found", email, provider=PROVIDER, status=404)
            if segment_id in _ids(contact, "tags"):
                return
            body = {"tag_ids": [_as_id(segment_id)]}
            await self._session.call("POST", f"/contacts/{contact['id']}/tags", json=body)
            self.pending.expect(email, "tags", segment_id, True)

        return await for_each_member(unique_emails(emails), tag, concurrency=self.concurrency)

    async def remove_from_segment(
        self, list_id: str, segment_id: str, emails: Sequence[str]
    ) -> BatchResult:
        async def untag(email: str) -> None:
            await self._detach(email, "tags", segment_id, f"/contacts/{{cid}}/tags/{segment_id}")

        return await for_each_member(unique_emails(emails), untag, concurrency=self.concurrency)

    async def remove_from_list(self, list_id: str, emails: Sequence[str]) -> BatchResult:
        async def leave(email: str) -> None:
            await self._detach(email, "lists", list_id, f"/lists/{list_id}/contacts/{{cid}}")

        return await for_each_member(unique_emails(emails), leave, concurrency=self.concurrency)

    async def _detach(self, email: str, kind: str, ident: str, path: str) -> None:
        """DELETE ``path`` for the contact when it is in ``kind``; absent counts as done."""
        contact = await self._settled_contact(email)
        if contact is None or ident not in _ids(contact, kind):
            return
        try:
            await self._session.call("DELETE", path.format(cid=contact["id"]))
        except PermanentError as error:
            if error.status != 404:
                raise
        self.pending.expect(email, kind, ident, False)

    async def aclose(self) -> None:
        await self._session.aclose()


def _set_aside_refused(
    error: ValidationFailed, payloads: list[dict[str, Any]], result: BatchResult
) -> list[dict[str, Any]]:
    """Record the contacts a 422 names as failed; the others, to send again."""
    refused = _refused_indexes(error, len(payloads))
    if not refused:
        raise error
    for index, messages in refused.items():
        result.failed[payloads[index]["email"]] = MemberFailure(
            error.title, " ".join(messages), 422, "validation"
        )
    return [p for i, p in enumerate(payloads) if i not in refused]


def _refused_indexes(error: ValidationFailed, count: int) -> dict[int, list[str]]:
    """Which of ``count`` posted contacts a 422 names (``contacts.3.email``), with messages."""
    refused: dict[int, list[str]] = {}
    for field, messages in error.fields.items():
        match = _CONTACT_FIELD.match(field)
        if match and int(match.group(1)) < count:
            refused.setdefault(int(match.group(1)), []).extend(messages)
    return refused


def _consent(contact: Contact) -> bool | None:
    value = contact.get("subscribed", contact.get("email_consent"))
    return None if value is None else bool(value)


def _carried_consent(
    old: Contact | None, new: Contact | None, for_new: bool | None
) -> bool | None:
    """Consent for a changed email: the new contact's own is kept (None) when Sendlane
    has it; else the old contact's refusal carries over; else ``for_new``."""
    if new is not None:
        return None
    if old is not None and _consent(old) is False:
        return False
    return for_new


def _name(raw: Mapping[str, Any]) -> str:
    return str(raw.get("name") or raw.get("list_name") or "")


def _count(raw: Mapping[str, Any]) -> int | None:
    for key in ("contacts_count", "contact_count", "subscriber_count", "member_count"):
        if raw.get(key) is not None:
            return int(raw[key])
    return None
