"""ActiveCampaign API v3 client.

Endpoints used (providers.md): ``GET /lists``, ``GET /tags``, ``POST /tags``,
``POST /contact/sync`` (upsert by email), ``GET /contacts?email=``,
``POST /contactLists`` (status 1 only, and only for contacts not yet on the list),
``POST /contactTags``, ``GET /contacts/{id}/contactTags``, ``DELETE /contactTags/{id}``,
and ``POST /import/bulk_import`` (``providers.ac_import``). More real ones:
``GET /contacts/{id}/contactLists`` (linked from every contact's ``links``), to read
a contact's status on a list before subscribing them; ``GET /lists/{id}``, so a
missing list fails the call once rather than per member; ``GET /tags/{id}``, the
name a bulk import tags by; ``PUT /contacts/{id}``, which changes a contact's email
in place (same contact id, so its lists, statuses and tags stay); and
``GET /import/info?batchId=``, an import's report. ``list_members`` pages
``GET /contacts?listid={id}&status=-1`` (any status on the list) or
``GET /contacts?tagid={id}`` with ``limit``/``offset``.

Upserts of more than ``BULK_THRESHOLD`` members go through the bulk import (250
contacts a call, its own limit of 100 calls a minute), fewer through the ordinary
calls: ActiveCampaign recommends those for small batches, and an import is only
known to be done once its report says so. Members an import reports as not
imported are done again by ordinary calls, which give the exact reason.

ActiveCampaign has no way to take a contact off a list except status 2, which
unsubscribes them; ``remove_from_list`` therefore refuses (``supports_list_removal``
is False): segments synced to ActiveCampaign should name a tag. For the same reason
an email change the API refuses (the new address is already another contact's)
only takes the old contact out of the tag; it stays on the list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from providers.ac_import import MAX_IMPORT, ImportWait, run_import
from providers.base import (
    BatchResult,
    EmailChange,
    Member,
    MemberFailure,
    ProviderClient,
    ProviderList,
    ProviderSegment,
    balanced_chunks,
    by_new_email,
    for_each_member,
    gather_or_raise,
    retire_old_emails,
    unique_emails,
    unique_members,
)
from providers.errors import ListNotFound, PermanentError, ProviderError, classify_status
from providers.http import ApiSession, json_or_none, parse_retry_after, text_snippet
from providers.limits import AC_BULK_IMPORT, AccountLimiter, ProviderLimits
from providers.retry import Retry

PROVIDER = "activecampaign"
MAX_PAGE = 100
SUBSCRIBED = "1"
#: Upserts of more members than this use the bulk import. At 5 calls a second the
#: ordinary path (2 to 4 calls a member) takes about 10 s for 20 members; an import
#: takes one call per 250, but its report comes seconds later.
BULK_THRESHOLD = 20

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
        concurrency: int = 5, bulk_limiter: AccountLimiter | None = None,
        bulk_threshold: int = BULK_THRESHOLD, import_wait: ImportWait | None = None,
    ) -> None:
        self._session = session
        self._account_key = account_key
        self.page_size = max(1, min(page_size, MAX_PAGE))
        self.concurrency = concurrency
        self.bulk_threshold = max(bulk_threshold, 1)  # an import never carries one contact
        self.import_wait = import_wait or ImportWait()
        self._bulk_limiter = bulk_limiter or ProviderLimits().for_account(AC_BULK_IMPORT, "")
        self._tag_names: dict[str, str] = {}

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
        bulk = limits.for_account(AC_BULK_IMPORT, key)
        return cls(session, key, bulk_limiter=bulk, **options)

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

    async def upsert_members(
        self, list_id: str, members: Sequence[Member], segment_id: str | None = None
    ) -> BatchResult:
        unique = unique_members(members)
        if not unique:
            return BatchResult()
        await self._check_list(list_id)
        return await self._upsert_on_list(list_id, unique, segment_id)

    async def _upsert_on_list(
        self, list_id: str, members: Sequence[Member], segment_id: str | None
    ) -> BatchResult:
        """Upsert members (unique, the list known to exist): bulk import or ordinary calls."""
        if len(members) > self.bulk_threshold:
            return await self._import(list_id, members, segment_id)
        return await self._upsert_each(list_id, members, segment_id)

    async def _upsert_each(
        self, list_id: str, members: Sequence[Member], segment_id: str | None
    ) -> BatchResult:
        by_email = {m.email: m for m in members}

        async def upsert(email: str) -> None:
            await self._upsert_one(list_id, by_email[email], segment_id)

        return await for_each_member(list(by_email), upsert, concurrency=self.concurrency)

    async def _import(
        self, list_id: str, members: Sequence[Member], segment_id: str | None
    ) -> BatchResult:
        """Bulk import in balanced chunks; what the reports name is done by ordinary calls."""
        tags = [await self._tag_name(segment_id)] if segment_id is not None else []
        outcomes = await gather_or_raise(
            run_import(self._session, self._bulk_limiter, list_id, chunk, tags,
                       self.import_wait)
            for chunk in balanced_chunks(members, MAX_IMPORT)
        )
        result = BatchResult()
        redo: list[Member] = []
        for outcome in outcomes:
            result.succeeded.extend(outcome.done)
            result.failed.update(outcome.failed)
            redo.extend(outcome.redo)
        if redo:
            result.extend(await self._upsert_each(list_id, redo, segment_id))
        done = set(result.succeeded)
        result.succeeded = [m.email for m in members if m.email in done]  # input order
        return result

    async def _tag_name(self, tag_id: str) -> str:
        """The tag's name (an import tags by name), read once per client."""
        if tag_id not in self._tag_names:
            try:
                body = (await self._session.call("GET", f"/tags/{tag_id}")).body
            except PermanentError as error:
                if error.status == 404:
                    raise PermanentError("Tag Not Found", f"tag {tag_id}", provider=PROVIDER,
                                         status=404) from error
                raise
            self._tag_names[tag_id] = str(body["tag"]["tag"])
        return self._tag_names[tag_id]

    async def _check_list(self, list_id: str) -> None:
        try:
            await self._session.call("GET", f"/lists/{list_id}")
        except PermanentError as error:
            if error.status == 404:
                raise ListNotFound.from_error(error, list_id) from error
            raise

    async def _upsert_one(self, list_id: str, member: Member, segment_id: str | None) -> None:
        synced = await self._session.call("POST", "/contact/sync", json=contact_body(member))
        contact_id = str(synced.body["contact"]["id"])
        # 201 means just created: no list status to protect, no tag yet.
        created = synced.status == 201
        await self._ensure_on_list(contact_id, list_id, created=created)
        if segment_id is not None:
            await self._tag(contact_id, segment_id, created=created)

    async def _ensure_on_list(self, contact_id: str, list_id: str, *, created: bool) -> None:
        """Subscribe a contact with no status on the list; leave any status alone
        (2 unsubscribed and 3 bounced above all)."""
        if not created and await self._list_status(contact_id, list_id) is not None:
            return
        body = {"contactList": {"list": list_id, "contact": contact_id, "status": SUBSCRIBED}}
        await self._session.call("POST", "/contactLists", json=body)

    async def _tag(self, contact_id: str, tag_id: str, *, created: bool = False) -> None:
        """Associate the tag unless it already is (a second POST makes a duplicate)."""
        if not created and await self._tag_links(contact_id, tag_id):
            return
        body = {"contactTag": {"contact": contact_id, "tag": tag_id}}
        await self._session.call("POST", "/contactTags", json=body)

    async def change_emails(
        self, list_id: str, changes: Sequence[EmailChange], segment_id: str | None = None
    ) -> BatchResult:
        by_new = by_new_email(changes)
        if not by_new:
            return BatchResult()
        await self._check_list(list_id)
        upsert: dict[str, bool] = {}  # new email -> whether the old contact is then untagged

        async def move(email: str) -> None:
            change = by_new[email]
            contact_id = await self._contact_id(change.old)
            if contact_id is None:
                upsert[email] = False
            elif not await self._rename(contact_id, change.new):
                upsert[email] = change.old.lower() != email.lower()
            else:
                await self._ensure_on_list(contact_id, list_id, created=False)
                if segment_id is not None:
                    await self._tag(contact_id, segment_id)

        moved = await for_each_member(list(by_new), move, concurrency=self.concurrency)
        result = BatchResult([e for e in moved.succeeded if e not in upsert], moved.failed)
        if upsert:
            news = [by_new[e].new for e in upsert]
            upserted = await self._upsert_on_list(list_id, news, segment_id)
            result.failed.update(upserted.failed)
            result.succeeded.extend(e for e in upserted.succeeded if not upsert[e])
            untag = {e: by_new[e].old for e in upserted.succeeded if upsert[e]}
            # No list removal here: only status 2 would do it, and that unsubscribes.
            result.extend(await retire_old_emails(self, list_id, segment_id, untag,
                                                  off_list=False))
        return result

    async def _rename(self, contact_id: str, member: Member) -> bool:
        """Give the contact the member's email (and fields); False when it is another's."""
        try:
            await self._session.call("PUT", f"/contacts/{contact_id}", json=contact_body(member))
        except PermanentError as error:
            if error.status == 422 and _is_duplicate(error):
                return False
            raise
        return True

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
            await self._tag(contact_id, segment_id)

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


def _is_duplicate(error: PermanentError) -> bool:
    """A 422 saying the email already belongs to another contact."""
    return error.code == "duplicate" or "already exists" in error.title.lower()


def _count(raw: Mapping[str, Any]) -> int | None:
    value = raw.get("subscriber_count")
    return int(value) if value is not None else None
