"""ActiveCampaign's bulk import: one call for up to 250 contacts, its report read later.

``POST /import/bulk_import`` takes ``{contacts: [{email, first_name, last_name, phone,
fields: [{id, value}], tags: [name], subscribe: [{listid}]}]}`` and answers at once
with ``{success: 1, queued_contacts, batchId}``: the contacts are *queued*, not yet
written. ``GET /import/info?batchId=`` later reports ``{status, success: [contact
ids created], failure: [emails not imported]}``; ``status`` is ``false`` for a
moment after the call, then ``waiting``, ``claimed``, ``active`` and at last
``completed``, ``failed`` or ``interrupted``.

What the client can know, and so what ``run_import`` reports per member:

- the import finished and did not name the member: done (created or updated, on the
  list unless they had a status there already, tagged);
- the import named the member as not imported: ``redo``, for the caller to handle
  by ordinary calls, which say exactly why (an invalid address) or get it done
  while keeping the member's status (someone who unsubscribed from the list: the
  importer only adds list statuses for new subscriptions, and the fake refuses to
  import such a contact at all, the strictest reading);
- the report counts failures without naming them, or the call itself was refused
  (400: the payload did not validate, or is over 400,000 bytes): every member is
  ``redo``;
- the import ended ``failed`` or ``interrupted``, or has not finished within the
  wait: each member fails as retriable (``Import Failed``, ``Import Pending``); a
  later try repeats the import, which is safe.

What it cannot know: which contacts an import *updated* (the report lists created
ids only) and why a contact was not imported (the report gives bare emails).

Limits: 100 calls a minute for calls of several contacts, 20 for calls of one, both
apart from the account's 5 a second; callers split with ``balanced_chunks`` so no
call carries a single contact, and pace with ``limits.AC_BULK_IMPORT``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from providers.base import Member, MemberFailure
from providers.errors import PermanentError, TransientError
from providers.http import ApiSession
from providers.limits import AccountLimiter

MAX_IMPORT = 250
FINISHED = frozenset({"completed", "failed", "interrupted"})


def import_contact(member: Member, list_id: str, tags: Sequence[str]) -> dict[str, Any]:
    """One contact of an import: subscribed to ``list_id`` if new there, with ``tags``."""
    contact: dict[str, Any] = {"email": member.email}
    named = {"first_name": member.first_name, "last_name": member.last_name,
             "phone": member.phone}
    contact.update({k: v for k, v in named.items() if v})
    if member.merge_fields:
        contact["fields"] = [{"id": _as_id(k), "value": v} for k, v in member.merge_fields.items()]
    if tags:
        contact["tags"] = list(tags)
    contact["subscribe"] = [{"listid": _as_id(list_id)}]
    return contact


@dataclass
class ImportOutcome:
    """Per member: ``done``, ``redo`` by ordinary calls, or ``failed`` (all retriable)."""

    done: list[str] = field(default_factory=list)
    redo: list[Member] = field(default_factory=list)
    failed: dict[str, MemberFailure] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportWait:
    """How to wait for a report: first poll after ``first``, doubling up to ``cap``,
    giving up after ``limit`` seconds in all."""

    first: float = 0.5
    cap: float = 4.0
    limit: float = 60.0


async def run_import(
    session: ApiSession,
    limiter: AccountLimiter,
    list_id: str,
    members: Sequence[Member],
    tags: Sequence[str],
    wait: ImportWait,
) -> ImportOutcome:
    """Import ``members`` (2 to 250) in one call and sort them by what its report says."""
    body = {"contacts": [import_contact(m, list_id, tags) for m in members]}
    try:
        answer = await session.call("POST", "/import/bulk_import", json=body, also=limiter)
    except PermanentError as error:
        if error.status not in (400, 413):
            raise
        return ImportOutcome(redo=list(members))  # refused as a whole: one by one says why
    batch_id = str((answer.body or {}).get("batchId") or "")
    if not batch_id:
        raise TransientError("Import Not Queued", str(answer.body), provider=session.provider,
                             status=answer.status)
    report = await _report(session, batch_id, wait)
    return _sorted(members, batch_id, report)


async def _report(session: ApiSession, batch_id: str, wait: ImportWait) -> Mapping[str, Any]:
    """The import's report once finished, or the last one seen when the wait ran out."""
    deadline = time.monotonic() + wait.limit
    delay = wait.first
    report: Mapping[str, Any] = {}
    while True:
        await asyncio.sleep(min(delay, max(deadline - time.monotonic(), 0.0)))
        body = (await session.call("GET", "/import/info", params={"batchId": batch_id})).body
        report = body if isinstance(body, dict) else {}
        if report.get("status") in FINISHED or time.monotonic() >= deadline:
            return report
        delay = min(delay * 2, wait.cap)


def _sorted(
    members: Sequence[Member], batch_id: str, report: Mapping[str, Any]
) -> ImportOutcome:
    outcome = ImportOutcome()
    status = report.get("status")
    if status != "completed":
        title = "Import Pending" if status not in FINISHED else "Import Failed"
        failure = MemberFailure(title, f"bulk import {batch_id}: status {status}",
                                retriable=True)
        outcome.failed = {m.email: failure for m in members}
        return outcome
    named = _failed_emails(report)
    for member in members:
        if named is None or member.email.lower() in named:
            outcome.redo.append(member)
        else:
            outcome.done.append(member.email)
    return outcome


def _failed_emails(report: Mapping[str, Any]) -> set[str] | None:
    """Lowercased emails the report names as not imported; None when it only counts them."""
    failure = report.get("failure")
    if isinstance(failure, list):
        return {str(e).strip().lower() for e in failure}
    counts = report.get("contacts")
    count = failure if isinstance(failure, int) else (
        counts.get("failure") if isinstance(counts, dict) else 0)
    return None if count else set()


def _as_id(value: str) -> int | str:
    return int(value) if value.isdigit() else value
