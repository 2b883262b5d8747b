"""A fake Sendlane API v2 (the parts providers.md describes).

State in ``SendlaneState``: lists, tags and contacts (``subscribed``, list and tag
memberships). Kept from the real API, awkward parts included: Bearer auth
answered by an HTML 401, ``{message, errors}`` errors with 422 ``errors`` keyed by
field (``contacts.3.email``), paging with ``meta.last_page``, lists optionally named
``list_name``, writes answered 202 and applied ``write_delay`` seconds later,
``email_consent`` overwriting ``subscribed`` (so a careless client re-subscribes
people: recorded in ``resubscribes``; ``false`` counts as an unsubscribe), at most
``MAX_BATCH`` contacts a ``POST /lists/{id}/contacts`` (422 past it; the real
maximum is unpublished), ``GET /contacts/unsubscribed`` (paged, ``from``/``to``
filtering on when each unsubscribed), no way to change a contact's email, and 240
calls a minute per token, answered 429 with no ``Retry-After``.

Delayed writes are applied lazily, at the start of each request or on ``settle()``,
so the fake runs no background tasks.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from providers.fakes.base import FakeProvider, Faults, Problem, int_param, json_response, read_json

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_BATCH = 100
HTML_401 = (b"<!DOCTYPE html><html><head><title>401 Unauthorized</title></head>"
            b"<body><h1>Unauthorized</h1></body></html>")


@dataclass
class FakeContact:
    """A contact; ``lists`` and ``tags`` hold ids."""

    id: int
    email: str
    subscribed: bool = False
    first_name: str = ""
    last_name: str = ""
    phone: str = ""
    lists: set[int] = field(default_factory=set)
    tags: set[int] = field(default_factory=set)
    custom_fields: dict[str, str] = field(default_factory=dict)
    unsubscribed_at: float | None = None  # wall clock; None: never unsubscribed

    def set_consent(self, consent: bool) -> None:
        """``email_consent`` as given: ``false`` is an unsubscribe, ``true`` clears it."""
        if not consent and self.unsubscribed_at is None:
            self.unsubscribed_at = time.time()
        elif consent:
            self.unsubscribed_at = None
        self.subscribed = consent


class SendlaneState:
    """Everything the fake Sendlane holds; seed and inspect it directly."""

    def __init__(self, write_delay: float = 0.05, list_name_key: str = "name") -> None:
        self.write_delay = write_delay
        self.list_name_key = list_name_key
        self.lists: dict[int, str] = {}
        self.tags: dict[int, str] = {}
        self.contacts: dict[int, FakeContact] = {}
        self._by_email: dict[str, int] = {}
        self.invalid_emails: set[str] = set()
        self.resubscribes: list[str] = []
        self._pending: deque[tuple[float, Callable[[], None]]] = deque()
        self._ids = itertools.count(1)

    def add_list(self, name: str) -> int:
        """Seed a list; returns its id."""
        list_id = next(self._ids)
        self.lists[list_id] = name
        return list_id

    def add_tag(self, name: str) -> int:
        """Seed a tag; returns its id."""
        tag_id = next(self._ids)
        self.tags[tag_id] = name
        return tag_id

    def add_contact(self, email: str, *, subscribed: bool = True, lists: Iterable[int] = (),
                    tags: Iterable[int] = ()) -> FakeContact:
        """Seed a contact (``subscribed=False``: someone who unsubscribed)."""
        contact = FakeContact(next(self._ids), email, subscribed, lists=set(lists),
                              tags=set(tags), unsubscribed_at=None if subscribed else time.time())
        self.contacts[contact.id] = contact
        self._by_email[email.lower()] = contact.id
        return contact

    def by_email(self, email: str) -> FakeContact | None:
        """The contact with this email, case-insensitively."""
        contact_id = self._by_email.get(email.lower())
        return self.contacts.get(contact_id) if contact_id is not None else None

    def unsubscribed(self, start: float | None, end: float | None) -> list[FakeContact]:
        """Contacts who unsubscribed (and still are), within ``[start, end]`` when given."""
        return [c for c in self.contacts.values() if c.unsubscribed_at is not None
                and not c.subscribed and (start is None or c.unsubscribed_at >= start)
                and (end is None or c.unsubscribed_at <= end)]

    def later(self, write: Callable[[], None]) -> None:
        """Apply ``write`` once ``write_delay`` has passed (as Sendlane's queue does)."""
        self._pending.append((time.monotonic() + self.write_delay, write))

    def apply_due(self) -> None:
        """Apply every delayed write whose time has come, in order."""
        now = time.monotonic()
        while self._pending and self._pending[0][0] <= now:
            self._pending.popleft()[1]()

    async def settle(self) -> None:
        """Wait until every delayed write so far has been applied."""
        while self._pending:
            await asyncio.sleep(max(self._pending[0][0] - time.monotonic(), 0))
            self.apply_due()

    def upsert(self, list_id: int, data: Mapping[str, Any]) -> None:
        """Apply one contact of ``POST /lists/{id}/contacts``."""
        contact = known = self.by_email(str(data["email"]))
        if contact is None:
            contact = self.add_contact(str(data["email"]))
            contact.subscribed = False  # no consent given: not subscribed, not unsubscribed
        for attr in ("first_name", "last_name", "phone"):
            if data.get(attr):
                setattr(contact, attr, str(data[attr]))
        for item in data.get("custom_fields") or []:
            contact.custom_fields[str(item.get("id"))] = str(item.get("value"))
        if "email_consent" in data:
            consent = bool(data["email_consent"])
            if consent and known is not None and known.unsubscribed_at is not None:
                self.resubscribes.append(contact.email)
            contact.set_consent(consent)
        contact.lists.add(list_id)
        contact.tags.update(int(t) for t in data.get("tag_ids") or [])


class SendlaneFake(FakeProvider):
    """The fake server; ``state`` is what tests seed and inspect."""

    api_prefix = "/v2"

    def __init__(
        self,
        faults: Faults | None = None,
        *,
        api_tokens: Iterable[str] = ("fake-sendlane-token",),
        rate_limit: tuple[int, float] | None = (240, 60.0),
        write_delay: float = 0.05,
        list_name_key: str = "name",
        html_401: bool = True,
        seed: int | None = None,
    ) -> None:
        self.state = SendlaneState(write_delay, list_name_key)
        self.api_tokens = set(api_tokens)
        self.rate_limit = rate_limit
        self.html_401 = html_401
        self._stamps: dict[str, deque[float]] = {}
        super().__init__(faults, seed=seed)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/lists", self.get_lists, methods=["GET"]),
            Route("/lists/{id:int}/contacts", self.post_contacts, methods=["POST"]),
            Route("/lists/{id:int}/contacts", self.get_list_contacts, methods=["GET"]),
            Route("/tags/{id:int}/contacts", self.get_tag_contacts, methods=["GET"]),
            Route("/lists/{id:int}/contacts/{cid:int}", self.delete_list_contact,
                  methods=["DELETE"]),
            Route("/contacts/search", self.search, methods=["GET"]),
            Route("/contacts/unsubscribed", self.get_unsubscribed, methods=["GET"]),
            Route("/tags", self.get_tags, methods=["GET"]),
            Route("/tags", self.post_tag, methods=["POST"]),
            Route("/contacts/{id:int}/tags", self.post_contact_tags, methods=["POST"]),
            Route("/contacts/{id:int}/tags/{tid:int}", self.delete_contact_tag,
                  methods=["DELETE"]),
        ]

    def before_request(self) -> None:
        self.state.apply_due()

    def credentials(self) -> dict[str, str]:
        return {"api_token": sorted(self.api_tokens)[0]}

    def seed_list(self, name: str, segments: Iterable[str] = ()) -> tuple[str, dict[str, str]]:
        tags = {}
        for tag in segments:
            found = [i for i, n in self.state.tags.items() if n == tag]
            tags[tag] = str(found[0] if found else self.state.add_tag(tag))
        return str(self.state.add_list(name)), tags

    # -- auth, limits and error shapes ------------------------------------------------

    def authenticate(self, headers: Headers) -> str | None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token in self.api_tokens else None

    def auth_failure(self) -> Response:
        if self.html_401:
            return Response(HTML_401, 401, media_type="text/html")
        return json_response({"message": "Unauthenticated."}, 401)

    def error_response(self, problem: Problem) -> Response:
        body: dict[str, Any] = {"message": problem.title}
        if "errors" in problem.extra:
            body["errors"] = problem.extra["errors"]
        return json_response(body, problem.status)

    def rate_limited(self, identity: str, *, injected: bool) -> Response:
        return json_response({"message": "Too Many Attempts."}, 429)

    @asynccontextmanager
    async def admit(self, identity: str) -> AsyncIterator[Response | None]:
        if self.rate_limit is None:
            yield None
            return
        limit, period = self.rate_limit
        stamps = self._stamps.setdefault(identity, deque())
        now = time.monotonic()
        while stamps and now - stamps[0] >= period:
            stamps.popleft()
        if len(stamps) >= limit:
            yield self.rate_limited(identity, injected=False)
            return
        stamps.append(now)
        yield None

    # -- endpoints ----------------------------------------------------------------------

    def _contact(self, contact_id: int) -> FakeContact:
        contact = self.state.contacts.get(contact_id)
        if contact is None:
            raise Problem(404, "Contact not found.")
        return contact

    def _list_id(self, list_id: int) -> int:
        if list_id not in self.state.lists:
            raise Problem(404, "List not found.")
        return list_id

    def _contact_json(self, contact: FakeContact) -> dict[str, Any]:
        return {
            "id": contact.id, "email": contact.email, "first_name": contact.first_name,
            "last_name": contact.last_name, "phone": contact.phone,
            "subscribed": contact.subscribed,
            "lists": [{"id": i, "name": self.state.lists.get(i, "")}
                      for i in sorted(contact.lists)],
            "tags": [{"id": i, "name": self.state.tags.get(i, "")}
                     for i in sorted(contact.tags)],
        }

    async def get_lists(self, request: Request) -> Response:
        key = self.state.list_name_key
        lists = [{"id": i, key: n} for i, n in self.state.lists.items()]
        return json_response(_paged(request, lists))

    async def get_tags(self, request: Request) -> Response:
        tags = [{"id": i, "name": n} for i, n in self.state.tags.items()]
        return json_response(_paged(request, tags))

    async def get_list_contacts(self, request: Request) -> Response:
        """Contacts on a list, paged like ``GET /lists`` (the real endpoint is unconfirmed)."""
        list_id = self._list_id(request.path_params["id"])
        found = [self._contact_json(c) for c in self.state.contacts.values()
                 if list_id in c.lists]
        return json_response(_paged(request, found))

    async def get_tag_contacts(self, request: Request) -> Response:
        """Contacts with a tag, paged like ``GET /tags`` (the real endpoint is unconfirmed)."""
        tag_id = request.path_params["id"]
        if tag_id not in self.state.tags:
            raise Problem(404, "Tag not found.")
        found = [self._contact_json(c) for c in self.state.contacts.values()
                 if tag_id in c.tags]
        return json_response(_paged(request, found))

    async def post_tag(self, request: Request) -> Response:
        name = str((await read_json(request)).get("name") or "")
        if not name:
            raise Problem(422, "The given data was invalid.",
                          errors={"name": ["The name field is required."]})
        tag_id = self.state.add_tag(name)
        return json_response({"data": {"id": tag_id, "name": name}}, 201)

    async def search(self, request: Request) -> Response:
        contact = self.state.by_email(request.query_params.get("email", ""))
        if contact is None:
            raise Problem(404, "Contact not found.")
        return json_response({"data": self._contact_json(contact)})

    async def get_unsubscribed(self, request: Request) -> Response:
        """Contacts who unsubscribed, ``from``/``to`` (ISO datetimes) on when they did."""
        start, end = _when(request, "from"), _when(request, "to")
        found = [self._contact_json(c) for c in self.state.unsubscribed(start, end)]
        return json_response(_paged(request, found))

    async def post_contacts(self, request: Request) -> Response:
        list_id = self._list_id(request.path_params["id"])
        contacts = (await read_json(request)).get("contacts")
        if not isinstance(contacts, list) or not contacts:
            raise Problem(422, "The given data was invalid.",
                          errors={"contacts": ["The contacts field is required."]})
        if len(contacts) > MAX_BATCH:
            raise Problem(422, "The given data was invalid.", errors={
                "contacts": [f"The contacts may not have more than {MAX_BATCH} items."]})
        errors = self._validate(contacts)
        if errors:
            raise Problem(422, "The given data was invalid.", errors=errors)
        for data in contacts:
            self.state.later(functools.partial(self.state.upsert, list_id, data))
        return _accepted("Contacts are being added to the list.")

    def _validate(self, contacts: list[Any]) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        for i, data in enumerate(contacts):
            email = str(data.get("email") or "") if isinstance(data, dict) else ""
            if not EMAIL.match(email) or email.lower() in self.state.invalid_emails:
                errors[f"contacts.{i}.email"] = [f"The contacts.{i}.email must be a valid "
                                                 "email address."]
            tag_ids = data.get("tag_ids") or [] if isinstance(data, dict) else []
            if any(_int(t) not in self.state.tags for t in tag_ids):
                errors[f"contacts.{i}.tag_ids"] = [f"The selected contacts.{i}.tag_ids is "
                                                   "invalid."]
        return errors

    async def delete_list_contact(self, request: Request) -> Response:
        list_id = self._list_id(request.path_params["id"])
        contact = self._contact(request.path_params["cid"])
        self.state.later(lambda: contact.lists.discard(list_id))
        return _accepted("Contact is being removed from the list.")

    async def post_contact_tags(self, request: Request) -> Response:
        contact = self._contact(request.path_params["id"])
        tag_ids = [_int(t) for t in (await read_json(request)).get("tag_ids") or []]
        if not tag_ids or any(t not in self.state.tags for t in tag_ids):
            raise Problem(422, "The given data was invalid.",
                          errors={"tag_ids": ["The selected tag_ids is invalid."]})
        self.state.later(lambda: contact.tags.update(tag_ids))
        return _accepted("Tags are being added to the contact.")

    async def delete_contact_tag(self, request: Request) -> Response:
        contact = self._contact(request.path_params["id"])
        tag_id = request.path_params["tid"]
        if tag_id not in self.state.tags:
            raise Problem(404, "Tag not found.")
        self.state.later(lambda: contact.tags.discard(tag_id))
        return _accepted("Tag is being removed from the contact.")


def _when(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace(" ", "+")).timestamp()
    except ValueError as exc:
        raise Problem(422, "The given data was invalid.",
                      errors={name: [f"The {name} is not a valid date."]}) from exc


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _accepted(message: str) -> Response:
    return json_response({"data": {"message": message}}, 202)


def _paged(request: Request, items: list[Any]) -> dict[str, Any]:
    limit = max(min(int_param(request, "limit", 25), 100), 1)
    page = max(int_param(request, "page", 1), 1)
    last = max((len(items) + limit - 1) // limit, 1)
    return {
        "data": items[(page - 1) * limit : page * limit],
        "links": {"first": f"?page=1&limit={limit}", "last": f"?page={last}&limit={limit}"},
        "meta": {"current_page": page, "last_page": last, "per_page": limit,
                 "total": len(items)},
    }
