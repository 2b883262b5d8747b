"""The fake ActiveCampaign's bulk import: queued on the call, applied later, reported.

``ImportQueue.queue`` takes the contacts of one ``POST /import/bulk_import``; they are
applied ``delay`` seconds later (lazily, when a request comes in or on ``settle``),
as ActiveCampaign's importer works asynchronously. Until then ``report`` says
``waiting``; after, ``completed`` with ``success`` (ids of contacts it created) and
``failure`` (emails it did not import), the shape of ``GET /import/info``.

Per contact, as the importer would and at its strictest where the docs say nothing:
an invalid address is not imported; a contact with a sticky status (2 unsubscribed,
3 bounced) on a list it is asked to subscribe to is not imported at all (no field,
tag or status changed) and is reported, so nobody is ever re-subscribed; anyone
else is created or updated, subscribed to each named list where they have no
status yet (an existing status is left as it is), and tagged by tag name (a tag
missing is created, a tag already there is not linked twice). ``skipped`` keeps
why each reported contact was left out, for tests.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from providers.fakes.base import Problem

if TYPE_CHECKING:
    from providers.fakes.activecampaign import ActiveCampaignState

MAX_IMPORT = 250
STICKY = (2, 3)


@dataclass
class ImportBatch:
    """One import: its contacts until applied, then what happened to them."""

    id: str
    due: float
    contacts: list[dict[str, Any]]
    size: int = 0
    status: str = "waiting"
    success: list[str] = field(default_factory=list)
    failure: list[str] = field(default_factory=list)


class ImportQueue:
    """Imports waiting to be applied, and the reports of those that were."""

    def __init__(self, state: ActiveCampaignState, delay: float) -> None:
        self.state = state
        self.delay = delay
        self.batches: dict[str, ImportBatch] = {}
        self.skipped: dict[str, str] = {}  # lowercased email -> why it was not imported
        self._waiting: deque[ImportBatch] = deque()
        self._ids = itertools.count(1)

    def queue(self, contacts: list[dict[str, Any]]) -> ImportBatch:
        """Accept an import's contacts; they are applied once ``delay`` has passed."""
        batch = ImportBatch(f"{next(self._ids)}-{uuid.uuid4().hex[:8]}",
                            time.monotonic() + self.delay, contacts, len(contacts))
        self.batches[batch.id] = batch
        self._waiting.append(batch)
        return batch

    def apply_due(self) -> None:
        """Apply every import whose time has come, in order."""
        now = time.monotonic()
        while self._waiting and self._waiting[0].due <= now:
            self._apply(self._waiting.popleft())

    async def settle(self) -> None:
        """Wait until every import queued so far has been applied."""
        while self._waiting:
            await asyncio.sleep(max(self._waiting[0].due - time.monotonic(), 0))
            self.apply_due()

    def report(self, batch_id: str) -> dict[str, Any] | None:
        """``GET /import/info``'s answer, None for an unknown batch."""
        batch = self.batches.get(batch_id)
        if batch is None:
            return None
        if batch.status != "completed":
            return {"status": batch.status}
        return {"status": batch.status, "success": batch.success, "failure": batch.failure}

    def _apply(self, batch: ImportBatch) -> None:
        for data in batch.contacts:
            email = str(data.get("email") or "")
            try:
                created = self._import(data)
            except Problem as refused:
                self.skipped[email.lower()] = refused.title
                batch.failure.append(email)
                continue
            if created is not None:
                batch.success.append(str(created))
        batch.contacts = []
        batch.status = "completed"

    def _import(self, data: Mapping[str, Any]) -> int | None:
        """Import one contact; the id when created, None when updated; ``Problem`` if not."""
        state = self.state
        email = str(data.get("email") or "")
        state.check_email(email)
        lists = [_as_int(s.get("listid")) for s in data.get("subscribe") or []
                 if isinstance(s, dict)]
        if any(list_id not in state.lists for list_id in lists):
            raise Problem(404, "List not found")
        contact = state.by_email(email)
        if contact is not None and any(state.list_status(email, lid) in STICKY for lid in lists):
            raise Problem(422, "Contact has unsubscribed or bounced from a list to subscribe to")
        created = contact is None
        if contact is None:
            contact = state.new_contact(email)
        for attr in ("first_name", "last_name", "phone"):
            if data.get(attr):
                setattr(contact, attr, str(data[attr]))
        for item in data.get("fields") or []:
            contact.field_values[str(item.get("id"))] = str(item.get("value"))
        for list_id in lists:
            if state.list_status(email, list_id) is None:
                state.set_list_status(contact, list_id, 1)
        for name in data.get("tags") or []:
            tag_id = state.tag_named(str(name))
            if tag_id not in state.tag_ids(email):
                state.link_tag(contact.id, tag_id)
        return contact.id if created else None


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1
