"""The provider-sync worker: membership changes from Kafka to each segment's auto-responder.

``run_sync`` consumes ``segment-membership`` in the group ``<group_id>-sync`` with
manual commits. Each change is routed by its segment's ``auto_responder`` (changes
of segments without one are skipped), gathered per (profile, list, segment or tag)
into a ``Bucket`` that coalesces each customer to their final state, and sent when
the bucket holds ``batch_max`` customers or is ``linger`` seconds old. One batch per
target is in flight at a time, so a customer's changes reach the provider in order.

A batch is at most three calls, in this order: removals (out of the segment or tag,
or off the list where none is named; never unsubscribing), moves of members whose
email changed (``change_emails``), and upserts into the list and segment or tag
(``upsert_members``). The member is always sent under the newest email known; one
whose add had no email is sent when a ``member_updated`` brings one
(``providers.batching.Plan`` says what each customer needs).

Outcomes, per member: confirmed (done); refused for good, or without an email (to
``segments.dlq`` with the provider's reason, then done); worth retrying (kept for
the next batch). A whole call that still fails after the ``Retry`` policy is an
outage: the profile is held with a growing delay and the partitions carrying its
changes are paused, so nothing piles up and nothing spins. Offsets are committed up
to the first change not done, never past it: a crash repeats changes (every
provider call is safe to repeat), it never loses one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from redis.asyncio import Redis

from providers.base import BatchResult, EmailChange, Member, MemberFailure, ProviderClient
from providers.batching import (
    TP,
    Action,
    Bucket,
    Change,
    OffsetTracker,
    Pending,
    SeenIds,
    Target,
    outage_delay,
)
from providers.errors import AuthError, ListNotFound, ProviderError
from providers.limits import ProviderLimits
from providers.profiles import ProfileError, ProfileNotFound
from providers.retry import Backoff, FullJitterBackoff, Retry
from segments.deadletters import dlq_headers
from segments.membership import InvalidMembership
from streams.broker.topics import TopicNames
from streams.settings import Settings
from streams.storage.definitions import DefinitionStore
from streams.storage.profiles import ProfileStore

log = logging.getLogger(__name__)
Clock = Callable[[], float]


@dataclass
class SyncCounters:
    """What the worker did, for metrics (monotonic counters)."""

    synced: int = 0  # customers' changes the provider confirmed
    dead_lettered: int = 0  # changes sent to segments.dlq (refused, no email, bad record)
    retries: int = 0  # provider calls retried, plus batches re-sent after an outage
    skipped: int = 0  # changes of segments without an auto_responder
    duplicates: int = 0  # changes whose event_id was already taken
    outages: int = 0  # times a profile was held after retries ran out
    moved: int = 0  # members moved to a new email (included in synced)
    kafka_errors: int = 0  # failed produces to segments.dlq and offset commits
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        """The totals (not the by-reason breakdown)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, int)}

    def dead_lettered_for(self, code: str, count: int) -> None:
        self.dead_lettered += count
        self.dead_letters_by_reason[code] = self.dead_letters_by_reason.get(code, 0) + count


class SyncObserver(Protocol):
    """Told, once per batch, how long after their membership change customers were
    confirmed by the provider (the change's record timestamp to the provider's answer)."""

    def confirmed(self, seconds: Sequence[float]) -> None: ...


class _NoObserver:
    def confirmed(self, seconds: Sequence[float]) -> None:
        pass


@dataclass(frozen=True)
class SyncOptions:
    """Tuning of the worker; the defaults suit production."""

    batch_max: int = 500
    linger: float = 0.2
    max_attempts: int = 6
    backoff: Backoff = field(default_factory=FullJitterBackoff)
    outage_base: float = 1.0
    outage_cap: float = 60.0
    stop_grace: float = 5.0
    max_pending: int = 20_000
    definitions_refresh: float = 1.0
    client_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class _Health:
    failures: int = 0
    not_before: float = 0.0


@dataclass(frozen=True)
class _Failure:
    """Why a customer's action is not done: a dead-letter code and reason, or retriable."""

    code: str
    reason: str
    retriable: bool = False

    @classmethod
    def of(cls, provider: str, refused: Sequence[MemberFailure]) -> _Failure:
        """A customer's failure from the provider's refusals of its emails in one call."""
        final = [f for f in refused if not f.retriable]
        if not final:
            return _RETRY
        return cls("provider_rejected", f"{provider}: {final[0].reason}")


_RETRY = _Failure("retry", "worth another try", retriable=True)
_MISSING_EMAIL = ("missing_email", "the member has no email: it cannot be sent to a provider")

Call = Callable[[ProviderClient], Awaitable[BatchResult]]


def _provider_calls(
    target: Target, work: Mapping[str, Action]
) -> list[tuple[dict[str, list[str]], Call]]:
    """The batch's provider calls in order, each with the emails its customers are keyed by:
    removals (out of the segment or tag, or off the list), moves, upserts."""
    list_id, segment_id = target.list_id, target.segment_id
    removed = {c: list(a.remove) for c, a in work.items() if a.remove}
    moves = {c: EmailChange(a.move_from, Member(a.send))
             for c, a in work.items() if a.send and a.move_from}
    upserts = {c: Member(a.send) for c, a in work.items() if a.send and not a.move_from}
    out_emails = [e for emails in removed.values() for e in emails]

    async def remove(client: ProviderClient) -> BatchResult:
        if segment_id is not None:
            return await client.remove_from_segment(list_id, segment_id, out_emails)
        return await client.remove_from_list(list_id, out_emails)

    async def move(client: ProviderClient) -> BatchResult:
        return await client.change_emails(list_id, list(moves.values()), segment_id)

    async def upsert(client: ProviderClient) -> BatchResult:
        return await client.upsert_members(list_id, list(upserts.values()), segment_id)

    return [(removed, remove),
            ({c: [m.new.email] for c, m in moves.items()}, move),
            ({c: [m.email] for c, m in upserts.items()}, upsert)]


async def run_sync(
    settings: Settings,
    redis: Redis,
    stop: asyncio.Event,
    *,
    limits: ProviderLimits | None = None,
    clock: Clock = time.monotonic,
    options: SyncOptions | None = None,
    counters: SyncCounters | None = None,
    observer: SyncObserver | None = None,
) -> None:
    """Run one sync worker until ``stop`` is set (pass ``counters`` to read them live)."""
    worker = SyncWorker(settings, redis, limits=limits, clock=clock, options=options,
                        counters=counters, observer=observer)
    await worker.run(stop)


class SyncWorker:
    """One member of the sync consumer group; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        *,
        limits: ProviderLimits | None = None,
        clock: Clock = time.monotonic,
        options: SyncOptions | None = None,
        counters: SyncCounters | None = None,
        observer: SyncObserver | None = None,
    ) -> None:
        if not settings.kafka_bootstrap:
            raise ValueError("the sync worker needs SEGSTREAM_KAFKA_BOOTSTRAP")
        if settings.secret_key is None:
            raise ValueError("the sync worker needs SEGSTREAM_SECRET_KEY to read credentials")
        self.settings = settings
        self.options = options or SyncOptions()
        self.counters = counters if counters is not None else SyncCounters()
        self.observer: SyncObserver = observer if observer is not None else _NoObserver()
        self._stamps: dict[tuple[TP, int], int] = {}
        """(partition, offset) -> record timestamp (ms) of each change waiting in a bucket."""
        self.topics = TopicNames(settings.topic_prefix)
        self.group_id = f"{settings.group_id}-sync"
        self.limits = limits
        self._clock = clock
        self._profiles = ProfileStore(redis, settings.key_prefix,
                                      settings.secret_key.get_secret_value(),
                                      client_options=self.options.client_options)
        self._definitions = DefinitionStore(redis, settings.key_prefix)
        self._retry = Retry(self.options.backoff, self.options.max_attempts,
                            on_retry=self._on_retry)
        self._targets: dict[str, Target | None] = {}
        self._remembered: dict[str, Target] = {}  # deleted segments' removals still go out
        self._revision = -1
        self._loaded_at = -1e18
        self._building: dict[Target, Bucket] = {}
        self._inflight: dict[Target, asyncio.Task[None]] = {}
        self._health: dict[str, _Health] = {}
        self._clients: dict[str, ProviderClient] = {}
        self._tracker = OffsetTracker()
        self._seen = SeenIds()
        self._consumer: Any = None
        self._producer: Any = None

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume, sync and commit until ``stop`` is set; then finish what is in flight."""
        kafka = self.settings.kafka_connection().client_options()
        self._consumer = AIOKafkaConsumer(
            **kafka, group_id=self.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=max(self.settings.session_timeout_ms // 3, 100),
        )
        self._consumer.subscribe([self.topics.membership], listener=_Rebalance(self))
        self._producer = AIOKafkaProducer(**kafka)
        async with contextlib.AsyncExitStack() as stack:
            await self._producer.start()
            stack.push_async_callback(self._producer.stop)
            await self._consumer.start()
            stack.push_async_callback(self._consumer.stop)
            stack.push_async_callback(self._close_clients)
            await self._refresh_definitions(force=True)
            while not stop.is_set():
                await self._tick()
            self._start_flushes(everything=True)
            await self._drain()
            await self._commit()

    async def _tick(self) -> None:
        timeout = self._poll_timeout()
        fetchable = set(self._consumer.assignment()) - set(self._consumer.paused())
        if fetchable:
            batch = await self._consumer.getmany(
                timeout_ms=int(timeout * 1000), max_records=self.options.batch_max
            )
        else:
            await asyncio.sleep(timeout)  # everything paused: wait, do not spin
            batch = {}
        await self._accept_all(batch)
        self._start_flushes()
        self._apply_pauses()
        await self._commit()

    def _poll_timeout(self) -> float:
        now = self._clock()
        due = [self._due_at(b) for t, b in self._building.items() if t not in self._inflight]
        wait = min([*due, now + self.options.linger]) - now
        return min(max(wait, 0.01), self.options.linger)

    def _due_at(self, bucket: Bucket) -> float:
        held = self._health_of(bucket.target.profile_id).not_before
        if len(bucket) >= self.options.batch_max:
            return held
        return max(bucket.opened_at + self.options.linger, held)

    async def _drain(self) -> None:
        """Let in-flight batches finish within ``stop_grace``; cancel what is left."""
        tasks = list(self._inflight.values())
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=self.options.stop_grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _close_clients(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """Rebalance: finish in-flight work, commit, forget the revoked partitions' changes."""
        gone = {(tp.topic, tp.partition) for tp in revoked}
        await self._drain()
        await self._commit()
        for target, bucket in list(self._building.items()):
            bucket.drop_partitions(gone)
            if not bucket:
                del self._building[target]
        self._tracker.forget(gone)
        self._stamps = {k: v for k, v in self._stamps.items() if k[0] not in gone}
        self._seen.clear()  # dropped changes come back to whoever owns them now

    # -- reading ----------------------------------------------------------------------------

    async def _accept_all(self, batch: Mapping[TopicPartition, Sequence[Any]]) -> None:
        changes: list[Change] = []
        stamps: dict[tuple[TP, int], int] = {}
        for tp, records in batch.items():
            for record in records:
                where = (tp.topic, tp.partition)
                self._tracker.read(where, record.offset)
                try:
                    changes.append(Change.parse(where, record.offset, record.key, record.value))
                    stamps[(where, record.offset)] = record.timestamp
                except InvalidMembership as exc:
                    await self._dead_letter_raw(where, record, "invalid_membership", str(exc))
        if any(c.segment_id not in self._targets for c in changes):
            await self._refresh_definitions(force=True)
        else:
            await self._refresh_definitions()
        for change in changes:
            if self._accept(change):
                self._stamps[(change.tp, change.offset)] = stamps[(change.tp, change.offset)]

    def _accept(self, change: Change) -> bool:
        """Put the change in its target's bucket (True), or settle it now (False)."""

        if self._seen.seen(change.event_id):
            self.counters.duplicates += 1
            self._tracker.done(change.tp, change.offset)
            return False
        target = self._target_of(change.segment_id)
        if target is None:
            self.counters.skipped += 1
            self._tracker.done(change.tp, change.offset)
            return False
        bucket = self._building.get(target)
        if bucket is None:
            bucket = self._building[target] = Bucket(target, self._clock())
        bucket.add(change)
        return True

    def _target_of(self, segment_id: str) -> Target | None:
        if segment_id in self._targets:
            return self._targets[segment_id]
        return self._remembered.get(segment_id)

    async def _refresh_definitions(self, *, force: bool = False) -> None:
        now = self._clock()
        wait = 0.2 if force else self.options.definitions_refresh
        if now - self._loaded_at < wait:
            return
        self._loaded_at = now
        if await self._definitions.revision() == self._revision:
            return
        loaded = await self._definitions.load()
        self._revision = loaded.revision
        self._targets = {
            d.id: Target.from_auto_responder(d.auto_responder) if d.auto_responder else None
            for d in loaded.live.values()
        }
        self._remembered.update({k: v for k, v in self._targets.items() if v is not None})

    # -- sending ----------------------------------------------------------------------------

    def _start_flushes(self, *, everything: bool = False) -> None:
        now = self._clock()
        for target, bucket in list(self._building.items()):
            if target in self._inflight:
                continue
            if self._health_of(target.profile_id).not_before > now:
                continue
            if not everything and self._due_at(bucket) > now:
                continue
            batch = self._take(bucket)
            self._inflight[target] = asyncio.create_task(self._flush(batch))

    def _take(self, bucket: Bucket) -> Bucket:
        """The first ``batch_max`` customers of ``bucket`` (the rest stay building)."""
        target = bucket.target
        if len(bucket) <= self.options.batch_max:
            del self._building[target]
            return bucket
        batch = Bucket(target, bucket.opened_at)
        for _ in range(self.options.batch_max):
            customer, pending = bucket.items.popitem(last=False)
            batch.items[customer] = pending
        return batch

    async def _flush(self, bucket: Bucket) -> None:
        leftover: list[Pending] = list(bucket.items.values())
        try:
            leftover = await self._send(bucket)
        except KafkaError as exc:
            self.counters.kafka_errors += 1
            log.warning("sync: dead-letter topic unavailable (%s); will retry", exc)
            self._hold(bucket.target.profile_id, outage=True)
        except Exception:  # a bug must not kill the worker silently; the batch is kept
            log.exception("sync: batch for %s failed unexpectedly", bucket.target)
            self._hold(bucket.target.profile_id, outage=True)
        finally:
            del self._inflight[bucket.target]
            self._restore(bucket, leftover)

    def _restore(self, bucket: Bucket, leftover: list[Pending]) -> None:
        """Put unfinished changes back in front of whatever arrived meanwhile."""
        if not leftover:
            return
        again = Bucket(bucket.target, bucket.opened_at)
        for pending in leftover:
            for change in pending.records:
                again.add(change)
        newer = self._building.pop(bucket.target, None)
        if newer is not None:
            again.absorb(newer)
        self._building[bucket.target] = again

    async def _send(self, bucket: Bucket) -> list[Pending]:
        """Send one batch; return the customers still to do."""
        target = bucket.target
        work = await self._without_calls(bucket)
        if not work:
            return []
        pendings = [bucket.items[c] for c in work]
        try:
            client = await self._client(target.profile_id)
        except ProfileNotFound as exc:
            await self._dead_letter(pendings, "unknown_profile", exc.message)
            return []
        except ProfileError as exc:
            log.log(self._first_failure_level(target.profile_id, logging.ERROR),
                    "sync: profile %s unusable: %s", target.profile_id, exc.message,
                    extra={"profile": target.profile_id})
            self._hold(target.profile_id, outage=True)
            return pendings
        failures = await self._calls(client, target, work)
        leftover = await self._settle(bucket, work, failures)
        if not leftover:
            if self._health_of(target.profile_id).failures:
                log.info("sync: profile %s delivers again", target.profile_id,
                         extra={"profile": target.profile_id})
            self._health_of(target.profile_id).failures = 0
        elif not self._held(target.profile_id):
            self._hold(target.profile_id, outage=False)
        return leftover

    async def _without_calls(self, bucket: Bucket) -> dict[str, Action]:
        """Settle the customers that need no provider call (a member without an email is
        dead-lettered, someone gone who never had one is done); the others' actions."""
        work: dict[str, Action] = {}
        missing: list[Pending] = []
        for customer, pending in bucket.items.items():
            action = pending.plan.action()
            if action.remove or action.send is not None:
                work[customer] = action
            elif action.missing_email:
                missing.append(pending)
            else:
                self._done(pending)
        await self._dead_letter(missing, *_MISSING_EMAIL)
        return work

    async def _calls(
        self, client: ProviderClient, target: Target, work: Mapping[str, Action]
    ) -> dict[str, _Failure]:
        """Removals, then moves, then upserts (so an email that passes from one customer
        to another ends with the second); each customer's failures, the first per call.
        Once the provider is out, the calls left are not tried."""
        calls = _provider_calls(target, work)
        failures: dict[str, _Failure] = {}
        for keys, run in calls:
            if not keys:
                continue
            if self._held(target.profile_id):
                outcome = {c: _RETRY for c in keys}
            else:
                outcome = await self._call(client, target, keys, run)
            for customer, failure in outcome.items():
                if customer not in failures or not failure.retriable:
                    failures[customer] = failure  # a permanent failure wins: retrying fails
        self.counters.moved += sum(1 for c, a in work.items()
                                   if a.move_from is not None and c not in failures)
        return failures

    async def _call(
        self, client: ProviderClient, target: Target, keys: Mapping[str, list[str]],
        run: Call,
    ) -> dict[str, _Failure]:
        """One provider call for the customers in ``keys`` (customer -> the emails its
        outcome is keyed by): who failed, and how. A call failing as a whole fails all."""
        provider = client.provider
        try:
            result = await run(client)
        except AuthError as exc:
            log.log(self._first_failure_level(target.profile_id, logging.ERROR),
                    "sync: %s refused profile %s credentials: %s", provider, target.profile_id,
                    exc.reason, extra={"provider": provider, "profile": target.profile_id})
            self._forget_client(target.profile_id)
            self._hold(target.profile_id, outage=True)
            return {c: _RETRY for c in keys}
        except ListNotFound as exc:
            return {c: _Failure("list_not_found", f"{provider}: {exc.reason}") for c in keys}
        except ProviderError as exc:
            if exc.retriable:
                log.log(self._first_failure_level(target.profile_id, logging.WARNING),
                        "sync: %s unavailable for profile %s: %s", provider,
                        target.profile_id, exc,
                        extra={"provider": provider, "profile": target.profile_id})
                self._hold(target.profile_id, outage=True)
                return {c: _RETRY for c in keys}
            return {c: _Failure("provider_rejected", f"{provider}: {exc.reason}")
                    for c in keys}
        failed = {e.strip().lower(): f for e, f in result.failed.items()}
        out: dict[str, _Failure] = {}
        for customer, emails in keys.items():
            refused = [failed[k] for k in (e.strip().lower() for e in emails) if k in failed]
            if refused:
                out[customer] = _Failure.of(provider, refused)
        return out

    async def _settle(
        self, bucket: Bucket, work: Mapping[str, Action], failures: Mapping[str, _Failure]
    ) -> list[Pending]:
        leftover: list[Pending] = []
        refused: dict[tuple[str, str], list[Pending]] = {}
        confirmed: list[float] = []
        now_ms = time.time() * 1000
        for customer, action in work.items():
            pending, failure = bucket.items[customer], failures.get(customer)
            if failure is None and action.missing_email:
                refused.setdefault(_MISSING_EMAIL, []).append(pending)
            elif failure is None:
                first = pending.records[0]
                stamp = self._stamps.get((first.tp, first.offset))
                if stamp is not None:
                    confirmed.append(max(0.0, (now_ms - stamp) / 1000))
                self._done(pending)
                self.counters.synced += 1
            elif failure.retriable:
                leftover.append(pending)
            else:
                refused.setdefault((failure.code, failure.reason), []).append(pending)
        if confirmed:
            self.observer.confirmed(confirmed)
        for (code, reason), pendings in refused.items():
            await self._dead_letter(pendings, code, reason)
        return leftover

    async def _client(self, profile_id: str) -> ProviderClient:
        client = self._clients.get(profile_id)
        if client is None:
            profile = await self._profiles.get(profile_id)
            credentials = await self._profiles.credentials_of(profile_id)
            client = self._profiles.open_client(
                profile, credentials, limits=self._limits(), retry=self._retry
            )
            self._clients[profile_id] = client
        return client

    def _limits(self) -> ProviderLimits:
        if self.limits is None:
            self.limits = ProviderLimits()  # made inside the running loop, as it must be
        return self.limits

    def _forget_client(self, profile_id: str) -> None:
        client = self._clients.pop(profile_id, None)
        if client is not None:
            task = asyncio.ensure_future(client.aclose())
            task.add_done_callback(lambda t: t.exception())

    def _on_retry(self, error: ProviderError, failures: int, delay: float) -> None:
        self.counters.retries += 1
        log.debug("sync: retrying after %s (failure %d, waiting %.2fs)", error, failures, delay)

    # -- outcomes -----------------------------------------------------------------------------

    def _done(self, pending: Pending) -> None:
        for change in pending.records:
            self._tracker.done(change.tp, change.offset)
            self._stamps.pop((change.tp, change.offset), None)

    async def _dead_letter(self, pendings: list[Pending], code: str, reason: str) -> None:
        if not pendings:
            return
        sends = [await self._producer.send(
            self.topics.dlq, pending.latest.value, key=pending.latest.key,
            headers=dlq_headers(self.topics.membership, pending.latest.tp[1],
                                pending.latest.offset, code, reason, stage="sync"),
        ) for pending in pendings]
        await asyncio.gather(*sends)
        for pending in pendings:
            self._done(pending)
        self.counters.dead_lettered_for(code, len(pendings))

    async def _dead_letter_raw(self, tp: TP, record: Any, code: str, reason: str) -> None:
        await self._producer.send_and_wait(
            self.topics.dlq, record.value, key=record.key,
            headers=dlq_headers(tp[0], tp[1], record.offset, code, reason, stage="sync"),
        )
        self._tracker.done(tp, record.offset)
        self.counters.dead_lettered_for(code, 1)

    # -- holding profiles and pausing their partitions -----------------------------------------

    def _first_failure_level(self, profile_id: str, level: int) -> int:
        """`level` for the first failure of a run of them, DEBUG for the retries after it:
        a provider that stays away is logged once, and once more when it delivers again."""
        return level if self._health_of(profile_id).failures == 0 else logging.DEBUG

    def _health_of(self, profile_id: str) -> _Health:
        health = self._health.get(profile_id)
        if health is None:
            health = self._health[profile_id] = _Health()
        return health

    def _held(self, profile_id: str) -> bool:
        return self._health_of(profile_id).not_before > self._clock()

    def _hold(self, profile_id: str, *, outage: bool) -> None:
        health = self._health_of(profile_id)
        health.failures += 1
        delay = outage_delay(health.failures, self.options.outage_base, self.options.outage_cap)
        health.not_before = self._clock() + delay
        self.counters.retries += 1
        if outage:
            self.counters.outages += 1
            log.log(logging.INFO if health.failures == 1 else logging.DEBUG,
                    "sync: holding profile %s for %.1fs", profile_id, delay,
                    extra={"profile": profile_id})

    def _apply_pauses(self) -> None:
        """Pause partitions carrying changes of held profiles (or all when overloaded)."""
        assigned = set(self._consumer.assignment())
        if self._tracker.pending_count() > self.options.max_pending:
            wanted = assigned
        else:
            wanted = {
                TopicPartition(*tp)
                for target, bucket in self._building.items()
                if self._held(target.profile_id)
                for tp in bucket.partitions()
            } & assigned
        paused = set(self._consumer.paused())
        if wanted - paused:
            self._consumer.pause(*(wanted - paused))
        if paused - wanted:
            self._consumer.resume(*(paused - wanted))

    async def _commit(self) -> None:
        offsets = self._tracker.to_commit()
        if not offsets:
            return
        try:
            await self._consumer.commit({TopicPartition(*tp): o for tp, o in offsets.items()})
        except KafkaError as exc:
            self.counters.kafka_errors += 1
            log.warning("sync: commit failed (%s); will commit again", exc)
            return
        self._tracker.committed(offsets)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: SyncWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.worker.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log.info("sync: assigned partitions %s", sorted(tp.partition for tp in assigned))
