"""A fake Mailchimp Marketing API 3.0 (the parts providers.md describes, and archive).

State is plain data in ``MailchimpState``: lists with members (status kept across
upserts, as Mailchimp does), static segments, and seeded troublemakers:
``compliance_emails`` (refused with ``Member In Compliance State``),
``forgotten_emails`` (``Forgotten Email Not Subscribed``) and ``invalid_emails``
(``Invalid Resource``, Mailchimp's answer to fake-looking addresses).

Behaviour kept from the real API: Basic auth with the key as password (or Bearer),
problem+json errors, 401 for a bad key, 404 for a missing list, the batch upsert
answering 200 with per-member ``errors``, ``status`` (never ``status_if_new``)
refused for unsubscribed or cleaned members, member listings (archived members
shown with status ``archived``), 10 simultaneous connections per user
(429 past it, optionally bodiless 429/403 as at high volume), ``count`` <= 1000.
``PATCH /lists/{id}/members/{hash}`` with ``email_address`` renames the member in
place (status, segments, archived or not, all kept); it answers 404 when there is
no such member, 400 ``Member Exists`` when the new address already is one, and 400
for a cleaned member, whose address Mailchimp does not let anyone edit.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from providers.fakes.base import (
    FakeProvider,
    Faults,
    Problem,
    int_param,
    json_response,
    read_json,
)

PROBLEM_TYPE = "https://mailchimp.com/developer/marketing/docs/errors/"
MAX_BATCH = 500
MAX_COUNT = 1000
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional")
STICKY = ("unsubscribed", "cleaned")
ThrottleStyle = Literal["problem", "empty-429", "empty-403"]


def subscriber_hash(email: str) -> str:
    """md5 of the lowercased email."""
    return hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest()


@dataclass
class FakeMember:
    """A list member. ``archived`` members are off the list but remember their status."""

    email: str
    status: str
    merge_fields: dict[str, str] = field(default_factory=dict)
    archived: bool = False

    def to_json(self, list_id: str) -> dict[str, Any]:
        return {
            "id": subscriber_hash(self.email), "email_address": self.email,
            "status": self.status, "merge_fields": self.merge_fields, "list_id": list_id,
        }


@dataclass
class FakeSegment:
    """A segment; ``static`` ones are the tags members can be put in."""

    id: int
    name: str
    type: str = "static"
    members: set[str] = field(default_factory=set)  # subscriber hashes


@dataclass
class FakeList:
    """An audience."""

    id: str
    web_id: int
    name: str
    members: dict[str, FakeMember] = field(default_factory=dict)
    segments: dict[int, FakeSegment] = field(default_factory=dict)

    def active(self, email: str) -> FakeMember | None:
        """The member when on the list (not archived)."""
        member = self.members.get(subscriber_hash(email))
        return member if member is not None and not member.archived else None

    def to_json(self) -> dict[str, Any]:
        count = sum(1 for m in self.members.values() if m.status == "subscribed" and not m.archived)
        return {"id": self.id, "web_id": self.web_id, "name": self.name,
                "stats": {"member_count": count}}


@dataclass
class StatusChange:
    """An audit entry: a member's status changed through the API."""

    list_id: str
    email: str
    old: str
    new: str


class MailchimpState:
    """Everything the fake Mailchimp holds; seed and inspect it directly."""

    def __init__(self) -> None:
        self.lists: dict[str, FakeList] = {}
        self.compliance_emails: set[str] = set()
        self.forgotten_emails: set[str] = set()
        self.invalid_emails: set[str] = set()
        self.status_changes: list[StatusChange] = []
        self._ids = itertools.count(1)

    def add_list(self, name: str, list_id: str | None = None) -> FakeList:
        """Seed an audience."""
        number = next(self._ids)
        new = FakeList(list_id or uuid.uuid4().hex[:10], number, name)
        self.lists[new.id] = new
        return new

    def add_member(
        self, list_id: str, email: str, status: str = "subscribed",
        merge_fields: Mapping[str, str] | None = None,
    ) -> FakeMember:
        """Seed a member with any status (e.g. someone who unsubscribed)."""
        member = FakeMember(email, status, dict(merge_fields or {}))
        self.lists[list_id].members[subscriber_hash(email)] = member
        return member

    def add_segment(
        self, list_id: str, name: str, members: Iterable[str] = (), type: str = "static"
    ) -> FakeSegment:
        """Seed a segment (static unless told) holding these member emails."""
        segment = FakeSegment(next(self._ids), name, type, {subscriber_hash(e) for e in members})
        self.lists[list_id].segments[segment.id] = segment
        return segment

    def member(self, list_id: str, email: str) -> FakeMember | None:
        """The member record, archived or not."""
        return self.lists[list_id].members.get(subscriber_hash(email))

    def segment_emails(self, list_id: str, segment_id: int | str) -> set[str]:
        """Lowercased emails in a segment."""
        lst = self.lists[list_id]
        hashes = lst.segments[int(segment_id)].members
        return {m.email.lower() for h, m in lst.members.items() if h in hashes}

    def resubscribes(self) -> list[StatusChange]:
        """Unsubscribed or cleaned members the API turned back to subscribed (must be none)."""
        return [c for c in self.status_changes if c.old in STICKY and c.new == "subscribed"]

    def upsert(self, lst: FakeList, body: Mapping[str, Any], update_existing: bool) -> str:
        """Create or update one member; ``"new"`` or ``"updated"``, else a ``Problem``."""
        if not isinstance(body, Mapping):
            raise _invalid("each member must be an object")
        email = str(body.get("email_address") or "")
        self._check_address(email)
        status, status_if_new = body.get("status"), body.get("status_if_new")
        for value in (status, status_if_new):
            if value is not None and value not in STATUSES:
                raise _invalid(f"{value!r} is not a valid member status")
        fields = {str(k): str(v) for k, v in (body.get("merge_fields") or {}).items() if v}
        member = lst.members.get(subscriber_hash(email))
        if member is not None and (not member.archived or member.status in STICKY):
            if not member.archived and not update_existing:
                raise Problem(400, "Member Exists", f"{email} is already a list member. "
                              "Use PUT to insert or update list members.")
            self._set_status(lst, member, status)
            member.archived = False
            member.merge_fields.update(fields)
            return "updated"
        if email.lower() in self.compliance_emails:
            raise _compliance(email)
        new_status = status or status_if_new
        if not new_status:
            raise _invalid("status or status_if_new is required")
        lst.members[subscriber_hash(email)] = FakeMember(email, str(new_status), fields)
        return "new"

    def rename(self, lst: FakeList, key: str, body: Mapping[str, Any]) -> FakeMember:
        """``PATCH`` a member: a new ``email_address`` moves the record, keeping the rest."""
        member = lst.members.get(key)
        if member is None:
            raise Problem(404, "Resource Not Found", "The requested resource could not be found.")
        email = str(body.get("email_address") or member.email)
        new_key = subscriber_hash(email)
        if new_key != key:
            self._check_address(email)
            if new_key in lst.members:
                raise Problem(400, "Member Exists", f"{email} is already a list member. "
                              "Use PUT to insert or update list members.")
            if member.status == "cleaned":
                raise _invalid(f"{member.email} was cleaned: its address cannot be edited")
            lst.members[new_key] = lst.members.pop(key)
            for segment in lst.segments.values():
                if key in segment.members:
                    segment.members.discard(key)
                    segment.members.add(new_key)
        member.email = email
        self._set_status(lst, member, body.get("status"))
        fields = body.get("merge_fields") or {}
        member.merge_fields.update({str(k): str(v) for k, v in fields.items() if v})
        return member

    def _check_address(self, email: str) -> None:
        if not EMAIL.match(email) or email.lower() in self.invalid_emails:
            raise Problem(400, "Invalid Resource", f"{email} looks fake or invalid, "
                          "please enter a real email address.")
        if email.lower() in self.forgotten_emails:
            raise Problem(400, "Forgotten Email Not Subscribed", f"{email} was permanently "
                          "deleted and cannot be re-imported. The contact must re-subscribe "
                          "to get back on the list.")

    def _set_status(self, lst: FakeList, member: FakeMember, status: Any) -> None:
        if status is None or status == member.status:
            return
        if member.status in STICKY and status in ("subscribed", "transactional"):
            raise _compliance(member.email)
        self.status_changes.append(StatusChange(lst.id, member.email, member.status, status))
        member.status = str(status)


def _invalid(detail: str) -> Problem:
    return Problem(400, "Invalid Resource", detail)


def _compliance(email: str) -> Problem:
    return Problem(400, "Member In Compliance State", f"{email} is already a list member in "
                   "compliance state due to unsubscribe, bounce, or compliance review.")


class MailchimpFake(FakeProvider):
    """The fake server; ``state`` is what tests seed and inspect."""

    api_prefix = "/3.0"

    def __init__(
        self,
        faults: Faults | None = None,
        *,
        api_keys: Iterable[str] = ("fakekey0123456789abcdef0123456789-us6",),
        access_tokens: Iterable[str] = (),
        max_connections: int | None = 10,
        throttle_style: ThrottleStyle = "problem",
        seed: int | None = None,
    ) -> None:
        self.state = MailchimpState()
        self.api_keys = set(api_keys)
        self.access_tokens = set(access_tokens)
        self.max_connections = max_connections
        self.throttle_style: ThrottleStyle = throttle_style
        self._connections: dict[str, int] = {}
        super().__init__(faults, seed=seed)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/lists", self.get_lists, methods=["GET"]),
            Route("/lists/{list_id}", self.get_list, methods=["GET"]),
            Route("/lists/{list_id}", self.batch_upsert, methods=["POST"]),
            Route("/lists/{list_id}/segments", self.get_segments, methods=["GET"]),
            Route("/lists/{list_id}/segments/{segment_id}", self.segment_members,
                  methods=["POST"]),
            Route("/lists/{list_id}/segments/{segment_id}/members", self.get_segment_members,
                  methods=["GET"]),
            Route("/lists/{list_id}/members", self.get_members, methods=["GET"]),
            Route("/lists/{list_id}/members/{hash}", self.put_member, methods=["PUT"]),
            Route("/lists/{list_id}/members/{hash}", self.patch_member, methods=["PATCH"]),
            Route("/lists/{list_id}/members/{hash}", self.archive_member, methods=["DELETE"]),
            Route("/lists/{list_id}/members/{hash}/tags", self.member_tags, methods=["POST"]),
        ]

    def credentials(self) -> dict[str, str]:
        if self.api_keys:
            return {"api_key": sorted(self.api_keys)[0]}
        return {"access_token": sorted(self.access_tokens)[0], "dc": "us6"}

    def seed_list(self, name: str, segments: Iterable[str] = ()) -> tuple[str, dict[str, str]]:
        lst = self.state.add_list(name)
        return lst.id, {s: str(self.state.add_segment(lst.id, s).id) for s in segments}

    # -- auth, limits and error shapes ------------------------------------------------

    def authenticate(self, headers: Headers) -> str | None:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return value if value in self.access_tokens else None
        if scheme.lower() != "basic":
            return None
        try:
            _, _, key = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return key if key in self.api_keys else None

    def auth_failure(self) -> Response:
        return self.error_response(Problem(
            401, "API Key Invalid",
            "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
        ))

    def error_response(self, problem: Problem) -> Response:
        body = {"type": PROBLEM_TYPE, "title": problem.title, "status": problem.status,
                "detail": problem.detail, "instance": str(uuid.uuid4()), **problem.extra}
        return json_response(body, problem.status, media_type="application/problem+json")

    def rate_limited(self, identity: str, *, injected: bool) -> Response:
        if self.throttle_style == "empty-429":
            return Response(b"", 429)
        if self.throttle_style == "empty-403":
            return Response(b"", 403)
        return self.error_response(Problem(
            429, "Too Many Requests",
            f"You have exceeded the limit of {self.max_connections} simultaneous connections.",
        ))

    @asynccontextmanager
    async def admit(self, identity: str) -> AsyncIterator[Response | None]:
        count = self._connections.get(identity, 0)
        if self.max_connections is not None and count >= self.max_connections:
            yield self.rate_limited(identity, injected=False)
            return
        self._connections[identity] = count + 1
        try:
            yield None
        finally:
            self._connections[identity] -= 1

    # -- endpoints ----------------------------------------------------------------------

    def _list(self, request: Request) -> FakeList:
        lst = self.state.lists.get(request.path_params["list_id"])
        if lst is None:
            raise Problem(404, "Resource Not Found", "The requested resource could not be found.")
        return lst

    async def get_lists(self, request: Request) -> Response:
        lists = [lst.to_json() for lst in self.state.lists.values()]
        return json_response({"lists": _page(request, lists), "total_items": len(lists)})

    async def get_list(self, request: Request) -> Response:
        return json_response(self._list(request).to_json())

    async def get_segments(self, request: Request) -> Response:
        kind = request.query_params.get("type")
        segments = [
            {"id": s.id, "name": s.name, "member_count": len(s.members), "type": s.type}
            for s in self._list(request).segments.values() if kind in (None, s.type)
        ]
        return json_response({"segments": _page(request, segments), "total_items": len(segments)})

    async def get_members(self, request: Request) -> Response:
        """Every member, archived ones included with status ``archived`` (as Mailchimp)."""
        lst = self._list(request)
        members = [
            {**m.to_json(lst.id), "status": "archived"} if m.archived else m.to_json(lst.id)
            for m in lst.members.values()
        ]
        return json_response({"members": _page(request, members), "list_id": lst.id,
                              "total_items": len(members)})

    async def get_segment_members(self, request: Request) -> Response:
        lst = self._list(request)
        segment = lst.segments.get(int_param_path(request, "segment_id"))
        if segment is None:
            raise Problem(404, "Resource Not Found", "The requested resource could not be found.")
        members = [m.to_json(lst.id) for h, m in lst.members.items()
                   if h in segment.members and not m.archived]
        return json_response({"members": _page(request, members),
                              "total_items": len(members)})

    async def batch_upsert(self, request: Request) -> Response:
        lst = self._list(request)
        body = await read_json(request)
        members = body.get("members")
        if not isinstance(members, list) or len(members) > MAX_BATCH:
            raise _invalid(f"members must be a list of at most {MAX_BATCH}")
        created: list[dict[str, Any]] = []
        updated: list[dict[str, Any]] = []
        errors: list[dict[str, str]] = []
        for item in members:
            try:
                outcome = self.state.upsert(lst, item, bool(body.get("update_existing")))
            except Problem as problem:
                errors.append(_batch_error(item, problem))
                continue
            member = lst.members[subscriber_hash(item["email_address"])].to_json(lst.id)
            (created if outcome == "new" else updated).append(member)
        return json_response({
            "new_members": created, "updated_members": updated, "errors": errors,
            "total_created": len(created), "total_updated": len(updated),
            "error_count": len(errors),
        })

    async def put_member(self, request: Request) -> Response:
        lst = self._list(request)
        body = await read_json(request)
        if subscriber_hash(str(body.get("email_address", ""))) != request.path_params["hash"]:
            raise _invalid("The subscriber hash does not match the email address.")
        self.state.upsert(lst, body, update_existing=True)
        return json_response(lst.members[request.path_params["hash"]].to_json(lst.id))

    async def patch_member(self, request: Request) -> Response:
        lst = self._list(request)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise _invalid("the body must be an object")
        member = self.state.rename(lst, request.path_params["hash"], body)
        shown = member.to_json(lst.id)
        return json_response({**shown, "status": "archived"} if member.archived else shown)

    async def archive_member(self, request: Request) -> Response:
        lst = self._list(request)
        member = lst.members.get(request.path_params["hash"])
        if member is None or member.archived:
            raise Problem(404, "Resource Not Found", "The requested resource could not be found.")
        member.archived = True
        for segment in lst.segments.values():
            segment.members.discard(request.path_params["hash"])
        return Response(status_code=204)

    async def segment_members(self, request: Request) -> Response:
        lst = self._list(request)
        segment = lst.segments.get(int_param_path(request, "segment_id"))
        if segment is None:
            raise Problem(404, "Resource Not Found", "The requested resource could not be found.")
        if segment.type != "static":
            raise _invalid("Only static segments accept members_to_add and members_to_remove")
        body = await read_json(request)
        to_add, to_remove = body.get("members_to_add") or [], body.get("members_to_remove") or []
        if len(to_add) > MAX_BATCH or len(to_remove) > MAX_BATCH:
            raise _invalid(f"at most {MAX_BATCH} members_to_add and members_to_remove")
        bad = [e for e in [*to_add, *to_remove] if not EMAIL.match(str(e))]
        added = [m for m in map(lst.active, to_add) if m and _put(segment, m)]
        removed = [m for m in map(lst.active, to_remove) if m and _take(segment, m)]
        errors = [{"email_addresses": bad, "error": "Invalid email address"}] if bad else []
        return json_response({
            "members_added": [m.to_json(lst.id) for m in added],
            "members_removed": [m.to_json(lst.id) for m in removed],
            "errors": errors, "total_added": len(added), "total_removed": len(removed),
            "error_count": len(bad),
        })

    async def member_tags(self, request: Request) -> Response:
        lst = self._list(request)
        member = lst.members.get(request.path_params["hash"])
        if member is None or member.archived:
            raise Problem(404, "Resource Not Found", "The requested resource could not be found.")
        for tag in (await read_json(request)).get("tags") or []:
            segment = next((s for s in lst.segments.values()
                            if s.type == "static" and s.name == tag.get("name")), None)
            if segment is None:
                segment = self.state.add_segment(lst.id, str(tag.get("name")))
            (_put if tag.get("status") == "active" else _take)(segment, member)
        return Response(status_code=204)


def int_param_path(request: Request, name: str) -> int:
    """An integer path parameter, or 404."""
    try:
        return int(request.path_params[name])
    except ValueError as exc:
        raise Problem(404, "Resource Not Found", "The requested resource could not be found.") \
            from exc


def _page(request: Request, items: list[Any]) -> list[Any]:
    count = int_param(request, "count", 10)
    offset = int_param(request, "offset", 0)
    if count > MAX_COUNT or count < 0 or offset < 0:
        raise _invalid(f"count must be between 0 and {MAX_COUNT}")
    return items[offset : offset + count]


def _put(segment: FakeSegment, member: FakeMember) -> bool:
    key = subscriber_hash(member.email)
    added = key not in segment.members
    segment.members.add(key)
    return added


def _take(segment: FakeSegment, member: FakeMember) -> bool:
    key = subscriber_hash(member.email)
    removed = key in segment.members
    segment.members.discard(key)
    return removed


def _batch_error(item: Any, problem: Problem) -> dict[str, str]:
    code = "ERROR_CONTACT_EXISTS" if problem.title == "Member Exists" else "ERROR_GENERIC"
    email = str(item.get("email_address", "")) if isinstance(item, dict) else ""
    return {"email_address": email, "error": problem.detail, "error_code": code}
