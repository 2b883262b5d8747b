"""A fake ActiveCampaign API v3 (the parts providers.md describes).

State in ``ActiveCampaignState``: contacts, lists, contact-list statuses
(1 subscribed, 2 unsubscribed, 3 bounced), tags and contact-tag associations.
Kept from the real API, awkward parts included: ``Api-Token`` auth answered 403,
``{errors: [...]}`` and ``{message}`` error shapes, ``meta.total`` as a string,
``limit`` capped at 100, ``contact/sync`` answering 201 when it created the
contact, ``POST /contactLists`` with status 1 *re-subscribing* an unsubscribed
contact (recorded in ``resubscribes`` so tests can insist it never happens),
``POST /contactTags`` creating a second association when called twice, and the
5 requests/second account limit answered 429 with ``Retry-After`` and
``RateLimit-*`` headers. ``PUT /contacts/{id}`` changes a contact's email in place
(422 ``duplicate`` when another contact has it). The bulk import
(``providers.fakes.activecampaign_import``) queues up to 250 contacts and 400,000
bytes a call (400 past either), applies them ``import_delay`` seconds later and
reports on ``GET /import/info``; its own limits, 20 calls a minute of one contact
and 100 of several, are answered 429 with ``Retry-After``, and its calls count in
the 5 a second as well.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from providers.fakes.activecampaign_import import MAX_IMPORT, ImportQueue
from providers.fakes.base import FakeProvider, Faults, Problem, int_param, json_response, read_json

MAX_LIMIT = 100
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
UNSUBSCRIBED = 2
BulkLimit = tuple[int, int, float]  # (calls of one contact, calls of several, per seconds)


@dataclass
class FakeContact:
    """A contact; ``field_values`` maps custom field id to value."""

    id: int
    email: str
    first_name: str = ""
    last_name: str = ""
    phone: str = ""
    field_values: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        base = f"/api/3/contacts/{self.id}"
        return {
            "id": str(self.id), "email": self.email, "firstName": self.first_name,
            "lastName": self.last_name, "phone": self.phone,
            "links": {"contactLists": f"{base}/contactLists", "contactTags": f"{base}/contactTags"},
        }


@dataclass
class Link:
    """A contact-list status or a contact-tag association, with its own id."""

    id: int
    contact: int
    target: int  # list id or tag id
    status: int = 1


class ActiveCampaignState:
    """Everything the fake ActiveCampaign holds; seed and inspect it directly."""

    def __init__(self, import_delay: float = 0.05) -> None:
        self.contacts: dict[int, FakeContact] = {}
        self._by_email: dict[str, int] = {}
        self._links_of: dict[int, set[int]] = {}  # contact id -> its contact-tag link ids
        self.lists: dict[int, str] = {}
        self.tags: dict[int, str] = {}
        self.contact_lists: dict[tuple[int, int], Link] = {}
        self.contact_tags: dict[int, Link] = {}
        self.invalid_emails: set[str] = set()
        self.resubscribes: list[tuple[str, int]] = []
        self.unsubscribes: list[tuple[str, int]] = []
        self._ids = itertools.count(1)
        self.imports = ImportQueue(self, import_delay)

    def add_list(self, name: str) -> int:
        """Seed a list; returns its id."""
        list_id = next(self._ids)
        self.lists[list_id] = name
        return list_id

    def add_tag(self, name: str) -> int:
        """Seed a contact tag; returns its id."""
        tag_id = next(self._ids)
        self.tags[tag_id] = name
        return tag_id

    def add_contact(self, email: str, lists: Mapping[int, int] | None = None,
                    tags: Iterable[int] = ()) -> FakeContact:
        """Seed a contact with list statuses (``{list_id: 2}`` = unsubscribed) and tags."""
        contact = self.new_contact(email)
        for list_id, status in (lists or {}).items():
            self.contact_lists[(contact.id, list_id)] = Link(next(self._ids), contact.id,
                                                             list_id, status)
        for tag_id in tags:
            self.link_tag(contact.id, tag_id)
        return contact

    def link_tag(self, contact_id: int, tag_id: int) -> Link:
        """Associate a tag with a contact (a new association every time, as AC does)."""
        link = Link(next(self._ids), contact_id, tag_id)
        self.contact_tags[link.id] = link
        self._links_of.setdefault(contact_id, set()).add(link.id)
        return link

    def links_of(self, contact_id: int) -> set[int]:
        """Ids of the contact's contact-tag associations."""
        return set(self._links_of.get(contact_id, set()))

    def unlink_tag(self, link_id: int) -> Link | None:
        """Remove a contact-tag association; None when there is no such id."""
        link = self.contact_tags.pop(link_id, None)
        if link is not None:
            self._links_of.get(link.contact, set()).discard(link_id)
        return link

    def new_contact(self, email: str) -> FakeContact:
        """A contact with only an email."""
        contact = FakeContact(next(self._ids), email)
        self.contacts[contact.id] = contact
        self._by_email[email.lower()] = contact.id
        return contact

    def by_email(self, email: str) -> FakeContact | None:
        """The contact with this email, case-insensitively."""
        contact_id = self._by_email.get(email.lower())
        return self.contacts.get(contact_id) if contact_id is not None else None

    def set_email(self, contact: FakeContact, email: str) -> None:
        """What ``PUT /contacts/{id}`` does with an email: the same contact, a new address."""
        self.check_email(email)
        other = self.by_email(email)
        if other is not None and other.id != contact.id:
            raise Problem(422, "Email address already exists in the system.", "",
                          code="duplicate", pointer="/data/attributes/email")
        del self._by_email[contact.email.lower()]
        contact.email = email
        self._by_email[email.lower()] = contact.id

    def tagged_emails(self, tag_id: int) -> set[str]:
        """Lowercased emails of the contacts with this tag."""
        ids = {t.contact for t in self.contact_tags.values() if t.target == tag_id}
        return {self.contacts[i].email.lower() for i in ids}

    def tag_named(self, name: str) -> int:
        """The id of the contact tag called ``name`` (case-insensitively), made if missing."""
        found = next((i for i, n in self.tags.items() if n.lower() == name.lower()), None)
        return found if found is not None else self.add_tag(name)

    def list_status(self, email: str, list_id: int) -> int | None:
        """The contact's status on a list, None when not on it."""
        contact = self.by_email(email)
        link = self.contact_lists.get((contact.id, list_id)) if contact else None
        return link.status if link else None

    def tag_ids(self, email: str) -> set[int]:
        """Tag ids associated with the contact."""
        contact = self.by_email(email)
        links = self._links_of.get(contact.id, set()) if contact else set()
        return {self.contact_tags[i].target for i in links}

    def check_email(self, email: str) -> None:
        """A 422 ``email_invalid`` for a malformed or seeded-invalid address."""
        check_email(email, self.invalid_emails)

    def set_list_status(self, contact: FakeContact, list_id: int, status: int) -> Link:
        """What ``POST /contactLists`` does: any status to any other, sticky or not."""
        link = self.contact_lists.get((contact.id, list_id))
        if link is None:
            link = self.contact_lists[(contact.id, list_id)] = Link(
                next(self._ids), contact.id, list_id, status)
        elif link.status == UNSUBSCRIBED and status == 1:
            self.resubscribes.append((contact.email, list_id))
        if status == UNSUBSCRIBED and link.status != UNSUBSCRIBED:
            self.unsubscribes.append((contact.email, list_id))
        link.status = status
        return link

    def sync(self, data: Mapping[str, Any]) -> tuple[FakeContact, bool]:
        """Upsert by email; returns the contact and whether it was created."""
        email = str(data.get("email") or "")
        self.check_email(email)
        contact, created = self.by_email(email), False
        if contact is None:
            contact, created = self.new_contact(email), True
        update_contact(contact, data)
        return contact, created


def check_email(email: str, invalid: set[str]) -> None:
    """A 422 ``email_invalid`` for a malformed or seeded-invalid address."""
    if not EMAIL.match(email) or email.lower() in invalid:
        raise Problem(422, "Email address is invalid", f"'{email}' is not a valid email "
                      "address", code="email_invalid", pointer="/data/attributes/email")


def update_contact(contact: FakeContact, data: Mapping[str, Any]) -> None:
    """Names, phone and field values of a ``contact`` body (camelCase, ``fieldValues``)."""
    for attr, key in (("first_name", "firstName"), ("last_name", "lastName"),
                      ("phone", "phone")):
        if data.get(key):
            setattr(contact, attr, str(data[key]))
    for item in data.get("fieldValues") or []:
        contact.field_values[str(item.get("field"))] = str(item.get("value"))


class ActiveCampaignFake(FakeProvider):
    """The fake server; ``state`` is what tests seed and inspect."""

    api_prefix = "/api/3"

    def __init__(
        self,
        faults: Faults | None = None,
        *,
        api_keys: Iterable[str] = ("fake-ac-key",),
        rate_limit: tuple[int, float] | None = (5, 1.0),
        bulk_rate_limit: BulkLimit | None = (20, 100, 60.0),
        import_delay: float = 0.05,
        max_import_bytes: int = 400_000,
        injected_retry_after: str = "1",
        fractional_retry_after: bool = False,
        seed: int | None = None,
    ) -> None:
        self.state = ActiveCampaignState(import_delay)
        self.api_keys = set(api_keys)
        self.rate_limit = rate_limit
        self.bulk_rate_limit = bulk_rate_limit
        self.max_import_bytes = max_import_bytes
        self.injected_retry_after = injected_retry_after
        self.fractional_retry_after = fractional_retry_after
        self._stamps: deque[float] = deque()
        self._bulk_stamps: dict[bool, deque[float]] = {True: deque(), False: deque()}
        super().__init__(faults, seed=seed)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/lists", self.get_lists, methods=["GET"]),
            Route("/lists/{id:int}", self.get_list, methods=["GET"]),
            Route("/tags", self.get_tags, methods=["GET"]),
            Route("/tags", self.post_tag, methods=["POST"]),
            Route("/tags/{id:int}", self.get_tag, methods=["GET"]),
            Route("/contact/sync", self.contact_sync, methods=["POST"]),
            Route("/contacts", self.get_contacts, methods=["GET"]),
            Route("/contacts/{id:int}", self.put_contact, methods=["PUT"]),
            Route("/contacts/{id:int}/contactLists", self.get_contact_lists, methods=["GET"]),
            Route("/contacts/{id:int}/contactTags", self.get_contact_tags, methods=["GET"]),
            Route("/contactLists", self.post_contact_list, methods=["POST"]),
            Route("/contactTags", self.post_contact_tag, methods=["POST"]),
            Route("/contactTags/{id:int}", self.delete_contact_tag, methods=["DELETE"]),
            Route("/import/bulk_import", self.bulk_import, methods=["POST"]),
            Route("/import/info", self.import_info, methods=["GET"]),
        ]

    def before_request(self) -> None:
        self.state.imports.apply_due()

    def credentials(self) -> dict[str, str]:
        return {"api_url": "https://fake.api-us1.com", "api_key": sorted(self.api_keys)[0]}

    def seed_list(self, name: str, segments: Iterable[str] = ()) -> tuple[str, dict[str, str]]:
        # Tags are account-wide: reuse one of the same name.
        tags = {}
        for tag in segments:
            found = [i for i, n in self.state.tags.items() if n == tag]
            tags[tag] = str(found[0] if found else self.state.add_tag(tag))
        return str(self.state.add_list(name)), tags

    # -- auth, limits and error shapes ------------------------------------------------

    def authenticate(self, headers: Headers) -> str | None:
        token = headers.get("api-token")
        # The limit is per account, whichever key: every caller is one identity.
        return "account" if token in self.api_keys else None

    def auth_failure(self) -> Response:
        return json_response({"message": "You are not authorized to access this resource"}, 403)

    def error_response(self, problem: Problem) -> Response:
        if problem.extra.get("shape") == "message" or problem.status >= 500:
            return json_response({"message": problem.title}, problem.status)
        error = {"title": problem.title, "detail": problem.detail,
                 "code": problem.extra.get("code", "field_invalid"), "status": str(problem.status),
                 "source": {"pointer": problem.extra.get("pointer", "/data/attributes")}}
        return json_response({"errors": [error]}, problem.status)

    def rate_limited(self, identity: str, *, injected: bool) -> Response:
        retry_after = self.injected_retry_after if injected else self._retry_after()
        limit = self.rate_limit[0] if self.rate_limit else 0
        headers = {"Retry-After": retry_after, "RateLimit-Limit": str(limit),
                   "RateLimit-Remaining": "0", "RateLimit-Reset": retry_after}
        return json_response({"message": "Too Many Requests"}, 429, headers=headers)

    def _retry_after(self, stamps: deque[float] | None = None, period: float = 0.0) -> str:
        if stamps is None:
            assert self.rate_limit is not None
            stamps, period = self._stamps, self.rate_limit[1]
        wait = max(stamps[0] + period - time.monotonic(), 0.001)
        return f"{wait:.3f}" if self.fractional_retry_after else str(max(1, math.ceil(wait)))

    @asynccontextmanager
    async def admit(self, identity: str) -> AsyncIterator[Response | None]:
        if self.rate_limit is None:
            yield None
            return
        limit, period = self.rate_limit
        now = time.monotonic()
        while self._stamps and now - self._stamps[0] >= period:
            self._stamps.popleft()
        if len(self._stamps) >= limit:
            yield self.rate_limited(identity, injected=False)
            return
        self._stamps.append(now)
        yield None

    def extra_headers(self, identity: str) -> list[tuple[bytes, bytes]]:
        if self.rate_limit is None:
            return []
        limit = self.rate_limit[0]
        remaining = max(limit - len(self._stamps), 0)
        return [(b"ratelimit-limit", str(limit).encode()),
                (b"ratelimit-remaining", str(remaining).encode())]

    # -- endpoints ----------------------------------------------------------------------

    def _contact(self, contact_id: Any) -> FakeContact:
        contact = self.state.contacts.get(_as_int(contact_id))
        if contact is None:
            raise Problem(404, f"No Result found for Subscriber with id {contact_id}",
                          shape="message")
        return contact

    async def get_lists(self, request: Request) -> Response:
        lists = [{"id": str(i), "stringid": _slug(n), "name": n}
                 for i, n in self.state.lists.items()]
        return json_response({"lists": _page(request, lists), "meta": {"total": str(len(lists))}})

    async def get_list(self, request: Request) -> Response:
        list_id = request.path_params["id"]
        if list_id not in self.state.lists:
            raise Problem(404, f"No Result found for List with id {list_id}", shape="message")
        name = self.state.lists[list_id]
        return json_response({"list": {"id": str(list_id), "stringid": _slug(name),
                                       "name": name}})

    async def get_tags(self, request: Request) -> Response:
        search = request.query_params.get("search", "").lower()
        tags = [{"id": str(i), "tag": n, "tagType": "contact", "description": ""}
                for i, n in self.state.tags.items() if search in n.lower()]
        return json_response({"tags": _page(request, tags), "meta": {"total": str(len(tags))}})

    async def post_tag(self, request: Request) -> Response:
        tag = (await read_json(request)).get("tag") or {}
        if not tag.get("tag"):
            raise Problem(422, "Tag name is required", "tag must not be empty",
                          pointer="/data/attributes/tag")
        tag_id = self.state.add_tag(str(tag["tag"]))
        return json_response({"tag": {"id": str(tag_id), "tag": tag["tag"],
                                      "tagType": tag.get("tagType", "contact")}}, 201)

    async def get_tag(self, request: Request) -> Response:
        tag_id = request.path_params["id"]
        if tag_id not in self.state.tags:
            raise Problem(404, f"No Result found for Tag with id {tag_id}", shape="message")
        return json_response({"tag": {"id": str(tag_id), "tag": self.state.tags[tag_id],
                                      "tagType": "contact", "description": ""}})

    async def put_contact(self, request: Request) -> Response:
        contact = self._contact(request.path_params["id"])
        data = (await read_json(request)).get("contact") or {}
        if data.get("email"):
            self.state.set_email(contact, str(data["email"]))
        update_contact(contact, data)
        return json_response({"contact": contact.to_json()})

    async def bulk_import(self, request: Request) -> Response:
        """Queue up to 250 contacts; 400 for a malformed request, 429 past its limits."""
        if len(await request.body()) > self.max_import_bytes:
            return _import_refused(f"the payload is over {self.max_import_bytes} bytes")
        contacts = (await read_json(request)).get("contacts")
        if not isinstance(contacts, list) or not contacts or len(contacts) > MAX_IMPORT:
            return _import_refused(f"contacts must be a list of 1 to {MAX_IMPORT} contacts")
        if any(not isinstance(c, dict) or not c.get("email") for c in contacts):
            return _import_refused("every contact needs an email")
        refusal = self._bulk_admit(single=len(contacts) == 1)
        if refusal is not None:
            self.stats["rate_limited"] += 1
            return refusal
        batch = self.state.imports.queue(contacts)
        return json_response({"success": 1, "queued_contacts": len(contacts),
                              "batchId": batch.id, "message": "Contact import queued"})

    def _bulk_admit(self, *, single: bool) -> Response | None:
        if self.bulk_rate_limit is None:
            return None
        one, several, period = self.bulk_rate_limit
        stamps, limit = self._bulk_stamps[single], one if single else several
        now = time.monotonic()
        while stamps and now - stamps[0] >= period:
            stamps.popleft()
        if len(stamps) < limit:
            stamps.append(now)
            return None
        retry_after = self._retry_after(stamps, period)
        headers = {"Retry-After": retry_after, "RateLimit-Limit": str(limit),
                   "RateLimit-Remaining": "0", "RateLimit-Reset": retry_after}
        return json_response({"message": "Too Many Requests"}, 429, headers=headers)

    async def import_info(self, request: Request) -> Response:
        report = self.state.imports.report(request.query_params.get("batchId", ""))
        if report is None:
            raise Problem(404, "No Result found for import batch", shape="message")
        return json_response(report)

    async def contact_sync(self, request: Request) -> Response:
        contact, created = self.state.sync((await read_json(request)).get("contact") or {})
        values = [{"contact": str(contact.id), "field": k, "value": v}
                  for k, v in contact.field_values.items()]
        return json_response({"contact": contact.to_json(), "fieldValues": values},
                             201 if created else 200)

    async def get_contacts(self, request: Request) -> Response:
        """``email``, ``listid`` (with ``status``, -1 or absent: any) and ``tagid`` filters."""
        email = request.query_params.get("email")
        contacts = list(self.state.contacts.values())
        if email is not None:
            contacts = [c for c in contacts if c.email.lower() == email.lower()]
        if request.query_params.get("listid") is not None:
            list_id = int_param(request, "listid", -1)
            status = int_param(request, "status", -1)
            contacts = [c for c in contacts if (link := self.state.contact_lists.get(
                (c.id, list_id))) is not None and status in (-1, link.status)]
        if request.query_params.get("tagid") is not None:
            tag_id = int_param(request, "tagid", -1)
            tagged = {t.contact for t in self.state.contact_tags.values() if t.target == tag_id}
            contacts = [c for c in contacts if c.id in tagged]
        found = [c.to_json() for c in contacts]
        return json_response({"contacts": _page(request, found),
                              "meta": {"total": str(len(found))}})

    async def get_contact_lists(self, request: Request) -> Response:
        contact = self._contact(request.path_params["id"])
        links = [_list_json(link) for (cid, _), link in self.state.contact_lists.items()
                 if cid == contact.id]
        return json_response({"contactLists": links})

    async def get_contact_tags(self, request: Request) -> Response:
        contact = self._contact(request.path_params["id"])
        links = [_tag_json(self.state.contact_tags[i])
                 for i in sorted(self.state.links_of(contact.id))]
        return json_response({"contactTags": links})

    async def post_contact_list(self, request: Request) -> Response:
        data = (await read_json(request)).get("contactList") or {}
        contact = self._contact(data.get("contact"))
        list_id = _as_int(data.get("list"))
        if list_id not in self.state.lists:
            raise Problem(404, f"No Result found for List with id {data.get('list')}",
                          shape="message")
        status = _as_int(data.get("status"))
        if status not in (0, 1, 2, 3):
            raise Problem(422, "Invalid status", "status must be 0, 1, 2 or 3",
                          pointer="/data/attributes/status")
        link = self.state.set_list_status(contact, list_id, status)
        return json_response({"contactList": _list_json(link)}, 201)

    async def post_contact_tag(self, request: Request) -> Response:
        data = (await read_json(request)).get("contactTag") or {}
        contact = self._contact(data.get("contact"))
        tag_id = _as_int(data.get("tag"))
        if tag_id not in self.state.tags:
            raise Problem(404, f"No Result found for Tag with id {data.get('tag')}",
                          shape="message")
        return json_response({"contactTag": _tag_json(self.state.link_tag(contact.id, tag_id))},
                             201)

    async def delete_contact_tag(self, request: Request) -> Response:
        link_id = request.path_params["id"]
        if self.state.unlink_tag(link_id) is None:
            raise Problem(404, f"No Result found for ContactTag with id {link_id}",
                          shape="message")
        return json_response({})


def _import_refused(reason: str) -> Response:
    return json_response({"success": 0, "message": "Invalid contact data",
                          "failureReasons": [reason]}, 400)


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _list_json(link: Link) -> dict[str, Any]:
    return {"id": str(link.id), "contact": str(link.contact), "list": str(link.target),
            "status": str(link.status)}


def _tag_json(link: Link) -> dict[str, Any]:
    return {"id": str(link.id), "contact": str(link.contact), "tag": str(link.target)}


def _page(request: Request, items: list[Any]) -> list[Any]:
    limit = min(int_param(request, "limit", 20), MAX_LIMIT)
    offset = int_param(request, "offset", 0)
    return items[offset : offset + limit]
