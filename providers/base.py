"""What every auto-responder client offers, and the values that cross that boundary.

The sync worker talks to ``ProviderClient`` only. The rules every implementation keeps:

- every call is safe to repeat (no provider has idempotency keys);
- leaving a segment or list never unsubscribes anyone;
- an upsert never re-subscribes a person the provider holds as unsubscribed, bounced
  or in a compliance state;
- a method raises only when the call failed as a whole (``AuthError``,
  ``ListNotFound``, retries exhausted on a batch call); per-member outcomes are in
  the ``BatchResult`` it returns;
- a member asked to join a segment or tag as well counts as succeeded only when it
  is both on the list and in the segment or tag.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

from providers.errors import AuthError, ListNotFound, ProviderError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Member:
    """A person to put on a provider list. ``merge_fields`` are provider field ids/tags."""

    email: str
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    merge_fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EmailChange:
    """A member whose email changed: ``old`` is the address the provider may hold."""

    old: str
    new: Member


@dataclass(frozen=True, slots=True)
class ProviderSegment:
    """A static segment (Mailchimp) or tag (ActiveCampaign, Sendlane); ``type`` says which."""

    id: str
    name: str
    type: str

    def to_dict(self) -> dict[str, str]:
        """The contract's JSON shape (``GET /providers/profiles/{id}/lists``)."""
        return {"id": self.id, "name": self.name, "type": self.type}


@dataclass(frozen=True, slots=True)
class ProviderList:
    """A list (Mailchimp audience) with the segments or tags members can be put in."""

    id: str
    name: str
    member_count: int | None
    segments: list[ProviderSegment] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON shape (``GET /providers/profiles/{id}/lists``)."""
        return {
            "id": self.id,
            "name": self.name,
            "member_count": self.member_count,
            "segments": [s.to_dict() for s in self.segments],
        }


@dataclass(frozen=True, slots=True)
class MemberFailure:
    """Why one member was not done, in the provider's words, and whether to try again."""

    title: str
    detail: str = ""
    status: int | None = None
    code: str | None = None
    retriable: bool = False

    @classmethod
    def from_error(cls, error: ProviderError) -> MemberFailure:
        """The failure an exception stands for."""
        return cls(error.title, error.detail, error.status, error.code, error.retriable)

    @property
    def reason(self) -> str:
        """``title: detail``, for the dead-letter topic."""
        if self.detail and self.detail != self.title:
            return f"{self.title}: {self.detail}"
        return self.title


@dataclass(slots=True)
class BatchResult:
    """Per-member outcome of a batch call: a 200 with some members refused is partial."""

    succeeded: list[str] = field(default_factory=list)
    failed: dict[str, MemberFailure] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every member succeeded."""
        return not self.failed

    @property
    def permanent(self) -> dict[str, MemberFailure]:
        """Failures to dead-letter: retrying will not help."""
        return {e: f for e, f in self.failed.items() if not f.retriable}

    @property
    def retriable(self) -> dict[str, MemberFailure]:
        """Failures worth another try later (throttled or transient after retries ran out)."""
        return {e: f for e, f in self.failed.items() if f.retriable}

    def extend(self, other: BatchResult) -> None:
        """Add another batch's outcomes to this one."""
        self.succeeded.extend(other.succeeded)
        self.failed.update(other.failed)

    def then(self, second: BatchResult) -> BatchResult:
        """Outcomes of two steps where ``second`` ran on this one's ``succeeded``.

        A member succeeded when both steps did; it failed with the reason of the step
        that refused it.
        """
        return BatchResult(list(second.succeeded), {**self.failed, **second.failed})


class ProviderClient(abc.ABC):
    """One auto-responder account. Use as ``async with``; closing releases owned connections."""

    provider: ClassVar[str]
    #: False where the provider cannot take someone off a list without unsubscribing
    #: them (ActiveCampaign): such profiles need a tag named on the segment.
    supports_list_removal: ClassVar[bool] = True

    @property
    @abc.abstractmethod
    def account_key(self) -> str:
        """Identity the provider counts limits by (the limiter is shared under this key)."""

    @abc.abstractmethod
    async def validate_credentials(self) -> None:
        """Make one cheap authenticated call; raise ``AuthError`` when refused."""

    @abc.abstractmethod
    async def fetch_lists(self) -> list[ProviderList]:
        """Every list, all pages, each with its static segments or tags."""

    @abc.abstractmethod
    async def upsert_members(
        self, list_id: str, members: Sequence[Member], segment_id: str | None = None
    ) -> BatchResult:
        """Create or update members on the list, never changing an existing status.

        With ``segment_id``, also put each member in that static segment or tag (in the
        same call where the provider allows it); a member counts as succeeded only when
        both parts succeeded.
        """

    @abc.abstractmethod
    async def change_emails(
        self, list_id: str, changes: Sequence[EmailChange], segment_id: str | None = None
    ) -> BatchResult:
        """Move members to their new email; outcomes are keyed by the new email.

        Afterwards each is on the list under ``new.email`` (and in ``segment_id`` when
        given), keeping the status, segments or tags they had under ``old`` where the
        provider can rename a member; where it cannot, ``new`` is upserted and ``old``
        taken off the list (and out of the segment or tag), never unsubscribed. A
        ``new`` whose ``old`` the provider does not hold is upserted like
        ``upsert_members``.
        """

    @abc.abstractmethod
    async def add_to_segment(
        self, list_id: str, segment_id: str, emails: Sequence[str]
    ) -> BatchResult:
        """Put members (already on the list) into the static segment or tag."""

    @abc.abstractmethod
    async def remove_from_segment(
        self, list_id: str, segment_id: str, emails: Sequence[str]
    ) -> BatchResult:
        """Take members out of the static segment or tag; absent ones count as done."""

    @abc.abstractmethod
    async def remove_from_list(self, list_id: str, emails: Sequence[str]) -> BatchResult:
        """Take members off the list without unsubscribing them; absent ones count as done."""

    @abc.abstractmethod
    async def list_members(self, list_id: str, segment_id: str | None) -> set[str]:
        """Lowercased emails now on the list (archived or removed ones left out), or in
        the static segment or tag when ``segment_id`` is given; every page read."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the HTTP client when this object created it."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def by_new_email(changes: Iterable[EmailChange]) -> dict[str, EmailChange]:
    """Email changes keyed by their new email: the last change per new email, in the order of
    `unique_emails` (one call per address however it is cased)."""
    by_new = {c.new.email: c for c in changes}
    return {e: by_new[e] for e in unique_emails(by_new)}


def unique_emails(emails: Iterable[str]) -> list[str]:
    """Emails in order, without case-insensitive repeats (providers compare lowercased)."""
    seen: set[str] = set()
    out: list[str] = []
    for email in emails:
        key = email.strip().lower()
        if key not in seen:
            seen.add(key)
            out.append(email)
    return out


async def retire_old_emails(
    client: ProviderClient, list_id: str, segment_id: str | None, olds: Mapping[str, str],
    *, off_list: bool = True,
) -> BatchResult:
    """After an email change, take each old email (``{new: old}``) out of the segment or
    tag and, with ``off_list``, off the list (never unsubscribing anyone).

    Outcomes are keyed by the new email: a change is done once its old email is out.
    """
    if not olds:
        return BatchResult()
    step = BatchResult(list(olds.values()))
    if segment_id is not None:
        step = await client.remove_from_segment(list_id, segment_id, step.succeeded)
    if off_list and step.succeeded:
        step = step.then(await client.remove_from_list(list_id, step.succeeded))
    new_of = {old.lower(): new for new, old in olds.items()}
    return BatchResult([new_of[o.lower()] for o in step.succeeded],
                       {new_of[o.lower()]: f for o, f in step.failed.items()})


def unique_members(members: Iterable[Member]) -> list[Member]:
    """Members in order, the first of each case-insensitive email only."""
    seen: dict[str, Member] = {}
    for member in members:
        seen.setdefault(member.email.strip().lower(), member)
    return list(seen.values())


def chunked(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def balanced_chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` in as few slices of at most ``size`` as possible, sizes differing by <= 1.

    For endpoints whose limit depends on the call's size (a one-item call counted
    apart): 251 items make 126 + 125, never 250 + 1.
    """
    if not items:
        return []
    count = -(-len(items) // size)
    base, extra = divmod(len(items), count)
    out: list[Sequence[T]] = []
    start = 0
    for i in range(count):
        end = start + base + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


async def gather_or_raise(aws: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently; on the first failure cancel the rest and raise that error as is."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(aw) for aw in aws]
    except BaseExceptionGroup as failed:
        raise _first_leaf(failed) from None
    return [task.result() for task in tasks]


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def for_each_member(
    emails: Sequence[str],
    action: Callable[[str], Awaitable[None]],
    *,
    concurrency: int,
) -> BatchResult:
    """Run ``action`` per email (bounded), recording each ``ProviderError`` as a failure.

    ``AuthError`` and ``ListNotFound`` concern the whole call, not the member: they are
    re-raised once all actions ended. Anything that is not a ``ProviderError`` is a
    bug and re-raised too.
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(email: str) -> MemberFailure | None:
        async with gate:
            try:
                await action(email)
            except (AuthError, ListNotFound):
                raise
            except ProviderError as error:
                return MemberFailure.from_error(error)
            return None

    outcomes = await asyncio.gather(*(one(e) for e in emails), return_exceptions=True)
    result = BatchResult()
    for email, outcome in zip(emails, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome is None:
            result.succeeded.append(email)
        else:
            result.failed[email] = outcome
    return result
