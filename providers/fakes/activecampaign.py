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
``RateLimit-*`` headers.
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

from providers.fakes.base import FakeProvider, Faults, Problem, int_param, json_response, read_json

MAX_LIMIT = 100
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
UNSUBSCRIBED = 2


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

    def __init__(self) -> None:
        self.contacts: dict[int, FakeContact] = {}
        self.lists: dict[int, str] = {}
        self.tags: dict[int, str] = {}
        self.contact_lists: dict[tuple[int, int], Link] = {}
        self.contact_tags: dict[int, Link] = {}
        self.invalid_emails: set[str] = set()
        self.resubscribes: list[tuple[str, int]] = []
        self.unsubscribes: list[tuple[str, int]] = []
        self._ids = itertools.count(1)

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
        contact = FakeContact(next(self._ids), email)
        self.contacts[contact.id] = contact
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
        return link

    def by_email(self, email: str) -> FakeContact | None:
        """The contact with this email, case-insensitively."""
        return next((c for c in self.contacts.values() if c.email.lower() == email.lower()), None)

    def list_status(self, email: str, list_id: int) -> int | None:
        """The contact's status on a list, None when not on it."""
        contact = self.by_email(email)
        link = self.contact_lists.get((contact.id, list_id)) if contact else None
        return link.status if link else None

    def tag_ids(self, email: str) -> set[int]:
        """Tag ids associated with the contact."""
        contact = self.by_email(email)
        return {t.target for t in self.contact_tags.values() if contact and t.contact == contact.id}

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
        if not EMAIL.match(email) or email.lower() in self.invalid_emails:
            raise Problem(422, "Email address is invalid", f"'{email}' is not a valid email "
                          "address", code="email_invalid", pointer="/data/attributes/email")
        contact, created = self.by_email(email), False
        if contact is None:
            contact, created = FakeContact(next(self._ids), email), True
            self.contacts[contact.id] = contact
        for attr, key in (("first_name", "firstName"), ("last_name", "lastName"),
                          ("phone", "phone")):
            if data.get(key):
                setattr(contact, attr, str(data[key]))
        for item in data.get("fieldValues") or []:
            contact.field_values[str(item.get("field"))] = str(item.get("value"))
        return contact, created


class ActiveCampaignFake(FakeProvider):
    """The fake server; ``state`` is what tests seed and inspect."""

    api_prefix = "/api/3"

    def __init__(
        self,
        faults: Faults | None = None,
        *,
        api_keys: Iterable[str] = ("fake-ac-key",),
        rate_limit: tuple[int, float] | None = (5, 1.0),
        injected_retry_after: str = "1",
        fractional_retry_after: bool = False,
        seed: int | None = None,
    ) -> None:
        self.state = ActiveCampaignState()
        self.api_keys = set(api_keys)
        self.rate_limit = rate_limit
        self.injected_retry_after = injected_retry_after
        self.fractional_retry_after = fractional_retry_after
        self._stamps: deque[float] = deque()
        super().__init__(faults, seed=seed)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/lists", self.get_lists, methods=["GET"]),
            Route("/lists/{id:int}", self.get_list, methods=["GET"]),
            Route("/tags", self.get_tags, methods=["GET"]),
            Route("/tags", self.post_tag, methods=["POST"]),
            Route("/contact/sync", self.contact_sync, methods=["POST"]),
            Route("/contacts", self.get_contacts, methods=["GET"]),
            Route("/contacts/{id:int}/contactLists", self.get_contact_lists, methods=["GET"]),
            Route("/contacts/{id:int}/contactTags", self.get_contact_tags, methods=["GET"]),
            Route("/contactLists", self.post_contact_list, methods=["POST"]),
            Route("/contactTags", self.post_contact_tag, methods=["POST"]),
            Route("/contactTags/{id:int}", self.delete_contact_tag, methods=["DELETE"]),
        ]

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

    def _retry_after(self) -> str:
        assert self.rate_limit is not None
        wait = max(self._stamps[0] + self.rate_limit[1] - time.monotonic(), 0.001)
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
        links = [_tag_json(link) for link in self.state.contact_tags.values()
                 if link.contact == contact.id]
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
        if self.state.contact_tags.pop(link_id, None) is None:
            raise Problem(404, f"No Result found for ContactTag with id {link_id}",
                          shape="message")
        return json_response({})


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
