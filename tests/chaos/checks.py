"""After the input stops: wait until the pipeline converged, then hold everything it produced
against a full recomputation from every event sent.

Converged means: every input partition's offsets are applied in Redis (its stored offsets reach
the topics' high watermarks), the sync group has committed the whole membership topic, and the
provider's tag has stopped changing. The checks then compare, per customer, the state in Redis
with the recomputation (`segments.evaluator.recompute`, every distinct event in the order sent:
each topic-partition holds a customer's events in that order), and per segment the members in
Redis, the last added/removed record of each customer on `segment-membership` (deduplicated by
`event_id`) and the provider's tag (each member under its newest email) with the recomputed
members.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from providers.fakes.mailchimp import FakeMember, MailchimpFake
from segments.evaluator import SegmentIndex, recompute
from segments.events import decode_event
from segments.features import FeatureState, decode_state
from streams.broker.topics import TopicNames, committed_offsets, high_watermarks
from streams.settings import Settings
from streams.storage.definitions import DefinitionStore
from streams.storage.state import StateStore

STABLE_S: Final = 3.0
"""The provider's tag must hold still this long, with everything else caught up."""
POLL_S: Final = 1.0
READ_TIMEOUT_S: Final = 180.0
EXAMPLES: Final = 8

CONTRACT_FIELDS: Final = FeatureState.__struct_fields__[
    :FeatureState.__struct_fields__.index("segments_mask")]
COUNTED: Final = ("order_count", "decline_count", "refund_count", "chargeback_count")
"""State fields that count events one by one: what is missing from them was lost, what is
over was applied twice."""


@dataclass(frozen=True)
class Expected:
    """The full recomputation: each customer's state, each segment's members."""

    states: dict[str, FeatureState]
    events_of: dict[str, int]
    members: dict[str, set[str]]


def recompute_all(distinct: Sequence[dict[str, Any]], index: SegmentIndex) -> Expected:
    by_customer: dict[str, list[Any]] = defaultdict(list)
    for event in distinct:
        by_customer[event["customer_id"]].append(decode_event(orjson.dumps(event)))
    now_ms = int(time.time() * 1000)
    states = {c: recompute(events, now_ms, index) for c, events in by_customer.items()}
    members: dict[str, set[str]] = {d.id: set() for d in index.by_id.values()}
    for customer_id, state in states.items():
        for d in index.by_id.values():
            if state.segments_mask >> d.slot & 1:
                members[d.id].add(customer_id)
    return Expected(states, {c: len(e) for c, e in by_customer.items()}, members)


@dataclass(frozen=True)
class Pipeline:
    """Where the run's output is, for the convergence wait and the checks."""

    settings: Settings
    redis: Redis
    provider: MailchimpFake
    list_id: str
    tag: str
    responder_segment: str

    @property
    def bootstrap(self) -> str:
        assert self.settings.kafka_bootstrap is not None
        return self.settings.kafka_bootstrap

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.settings.topic_prefix)

    def tps(self, topics: Iterable[str]) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t in topics for p in range(self.settings.partitions)]

    def tagged(self) -> frozenset[str]:
        return frozenset(self.provider.state.segment_emails(self.list_id, self.tag))


async def wait_converged(pipeline: Pipeline, since: float, timeout: float) -> tuple[float | None,
                                                                                   str]:
    """Seconds from `since` (monotonic) until converged, or None and what is still behind."""
    deadline = time.monotonic() + timeout
    stable_from: float | None = None
    tagged = pipeline.tagged()
    behind = "nothing checked yet"
    while time.monotonic() < deadline:
        behind = await _behind(pipeline)
        now_tagged = pipeline.tagged()
        if behind or now_tagged != tagged:
            stable_from, tagged = None, now_tagged
            behind = behind or "the provider's tag is still changing"
        elif stable_from is None:
            stable_from = time.monotonic()
        elif time.monotonic() - stable_from >= STABLE_S:
            return stable_from - since, ""
        await asyncio.sleep(POLL_S)
    return None, behind


async def _behind(pipeline: Pipeline) -> str:
    """What has not caught up yet ("" when all has)."""
    try:
        lagging = await _inputs_behind(pipeline) + await _sync_behind(pipeline)
    except (KafkaError, RedisError, OSError) as exc:  # TimeoutError is an OSError
        return f"unreadable ({type(exc).__name__}: {exc})"
    return "; ".join(lagging[:6]) + (f" and {len(lagging) - 6} more" if len(lagging) > 6 else "")


async def _inputs_behind(pipeline: Pipeline) -> list[str]:
    ends = await high_watermarks(pipeline.bootstrap, pipeline.tps(
        pipeline.topics.co_partitioned))
    store = StateStore(pipeline.redis, pipeline.settings.key_prefix)
    lagging = []
    for p in range(pipeline.settings.partitions):
        stored = await store.load_offsets(p)
        for tp, end in ends.items():
            at = stored.get(f"{tp.topic}:{tp.partition}", 0)
            if tp.partition == p and at < end:
                lagging.append(f"{tp.topic}[{p}] applied to {at} of {end}")
    return lagging


async def _sync_behind(pipeline: Pipeline) -> list[str]:
    tps = pipeline.tps([pipeline.topics.membership])
    ends = await high_watermarks(pipeline.bootstrap, tps)
    group = f"{pipeline.settings.group_id}-sync"
    done = await committed_offsets(pipeline.bootstrap, group, tps)
    return [f"sync group at {done[tp] or 0} of {ends[tp]} in {tp.topic}[{tp.partition}]"
            for tp in tps if (done[tp] or 0) < ends[tp]]


@dataclass
class Verdict:
    """What the checks found; every count must be 0."""

    lost: int = 0
    applied_twice: int = 0
    states_differing: int = 0
    not_on_inputs: int = 0
    """Events the producer never got onto the input topics (a test-side failure)."""
    reordered_on_inputs: int = 0
    """Events that landed after a later event of their customer (test-side too)."""
    redis_mismatches: int = 0
    topic_mismatches: int = 0
    provider_mismatches: int = 0
    resubscribed: int = 0
    segment_sizes: dict[str, int] = field(default_factory=dict)
    """Members of each segment in the recomputation (for the report)."""
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any((self.lost, self.applied_twice, self.states_differing,
                        self.not_on_inputs, self.reordered_on_inputs, self.redis_mismatches,
                        self.topic_mismatches, self.provider_mismatches, self.resubscribed))

    @property
    def mismatches(self) -> int:
        """Outputs that disagree with the recomputation (states, Redis, topic, provider)."""
        return (self.states_differing + self.redis_mismatches + self.topic_mismatches
                + self.provider_mismatches + self.resubscribed)

    def example(self, text: str) -> None:
        if len(self.examples) < EXAMPLES:
            self.examples.append(text)


async def verify(pipeline: Pipeline, distinct: Sequence[dict[str, Any]],
                 unsubscribed: Sequence[FakeMember]) -> Verdict:
    definitions = await DefinitionStore(pipeline.redis, pipeline.settings.key_prefix).load()
    index = SegmentIndex(definitions.live.values())
    expected = recompute_all(distinct, index)
    verdict = Verdict(segment_sizes={s: len(m) for s, m in expected.members.items()})
    await _check_inputs(pipeline, distinct, verdict)
    await _check_states(pipeline, expected, verdict)
    await _check_redis_members(pipeline, index, expected, verdict)
    await _check_topic(pipeline, expected, verdict)
    _check_provider(pipeline, expected, unsubscribed, verdict)
    return verdict


async def _check_inputs(pipeline: Pipeline, distinct: Sequence[dict[str, Any]],
                        verdict: Verdict) -> None:
    """Every event is on its topic, each customer's in the order sent (else the producer, not
    the pipeline, is at fault, and the recomputation's order would be wrong)."""
    order = {e["event_id"]: n for n, e in enumerate(distinct)}
    landed: set[str] = set()
    for topic in pipeline.topics.inputs:
        last: dict[str, int] = {}
        for record in await read_all(pipeline, topic):
            event = orjson.loads(record.value)
            if event["event_id"] in landed:
                continue
            landed.add(event["event_id"])
            n, customer_id = order[event["event_id"]], event["customer_id"]
            if n < last.get(customer_id, -1):
                verdict.reordered_on_inputs += 1
                verdict.example(f"{event['event_id']} of {customer_id} landed after a later "
                                f"event of it on {topic} (producer)")
            last[customer_id] = max(n, last.get(customer_id, -1))
    missing = [e["event_id"] for e in distinct if e["event_id"] not in landed]
    verdict.not_on_inputs = len(missing)
    if missing:
        verdict.example(f"never on the input topics (producer): {missing[:5]}")


async def _check_states(pipeline: Pipeline, expected: Expected, verdict: Verdict) -> None:
    stored = await _stored_states(pipeline)
    for customer_id, want in expected.states.items():
        got = stored.pop(customer_id, None)
        if got is None:
            verdict.lost += expected.events_of[customer_id]
            verdict.states_differing += 1
            verdict.example(f"{customer_id}: no state in Redis "
                            f"({expected.events_of[customer_id]} events lost)")
            continue
        for name in COUNTED:
            delta = getattr(got, name) - getattr(want, name)
            verdict.lost += max(0, -delta)
            verdict.applied_twice += max(0, delta)
        differing = [f"{name} {getattr(got, name)!r} (recomputed {getattr(want, name)!r})"
                     for name in CONTRACT_FIELDS if getattr(got, name) != getattr(want, name)]
        if differing:
            verdict.states_differing += 1
            verdict.example(f"{customer_id}: " + "; ".join(differing))
    for customer_id in stored:
        verdict.states_differing += 1
        verdict.example(f"{customer_id}: in Redis, but no event was sent for it")


async def _stored_states(pipeline: Pipeline) -> dict[str, FeatureState]:
    store = StateStore(pipeline.redis, pipeline.settings.key_prefix)
    states: dict[str, FeatureState] = {}
    for p in range(pipeline.settings.partitions):
        cursor = 0
        while True:
            cursor, blobs = await store.scan_states(p, cursor, 2000)
            states.update({c: decode_state(b) for c, b in blobs.items()})
            if cursor == 0:
                break
    return states


async def _check_redis_members(pipeline: Pipeline, index: SegmentIndex, expected: Expected,
                               verdict: Verdict) -> None:
    store = StateStore(pipeline.redis, pipeline.settings.key_prefix)
    partitions = pipeline.settings.partitions
    for segment_id, definition in index.by_id.items():
        found: set[str] = set()
        for p in range(partitions):
            found.update(await store.members(p, definition.slot))
        _compare(verdict, "redis_mismatches", f"Redis members of {segment_id}",
                 found, expected.members[segment_id])
        counted = await store.member_count(partitions, segment_id)
        if counted != len(found):
            verdict.redis_mismatches += 1
            verdict.example(f"Redis count of {segment_id} is {counted}, members {len(found)}")


async def _check_topic(pipeline: Pipeline, expected: Expected, verdict: Verdict) -> None:
    seen: dict[str, dict[str, Any]] = {}
    for record in await read_all(pipeline, pipeline.topics.membership):
        change = orjson.loads(record.value)
        seen.setdefault(change["event_id"], change)  # delivered twice: the same id
    final: dict[tuple[str, str], bool] = {}
    for change in seen.values():
        if change["type"] != "segment.member_updated":  # outside the added/removed alternation
            final[(change["segment_id"], change["customer_id"])] = (
                change["type"] == "segment.member_added")
    for segment_id, want in expected.members.items():
        got = {c for (s, c), inside in final.items() if s == segment_id and inside}
        _compare(verdict, "topic_mismatches", f"members of {segment_id} on the topic", got, want)


def _check_provider(pipeline: Pipeline, expected: Expected, unsubscribed: Sequence[FakeMember],
                    verdict: Verdict) -> None:
    members = expected.members[pipeline.responder_segment]
    want = {e.lower() for c in members if (e := expected.states[c].email)}
    _compare(verdict, "provider_mismatches", "emails in the provider's tag",
             set(pipeline.tagged()), want)
    turned = pipeline.provider.state.resubscribes()
    again = [m.email for m in unsubscribed if m.status != "unsubscribed"]
    verdict.resubscribed = len(turned) + len(again)
    if turned or again:
        verdict.example(f"subscribed again at the provider: "
                        f"{[c.email for c in turned] + again}")


def _compare(verdict: Verdict, counter: str, what: str, got: set[str], want: set[str]) -> None:
    extra, missing = got - want, want - got
    if extra or missing:
        setattr(verdict, counter, getattr(verdict, counter) + len(extra) + len(missing))
        verdict.example(f"{what}: {len(missing)} missing {sorted(missing)[:4]}, "
                        f"{len(extra)} too many {sorted(extra)[:4]}")


async def read_all(pipeline: Pipeline, topic: str) -> list[Any]:
    """Every record of a topic, up to its high watermarks, in offset order per partition."""
    tps = pipeline.tps([topic])
    ends = await high_watermarks(pipeline.bootstrap, tps)
    consumer = AIOKafkaConsumer(bootstrap_servers=pipeline.bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    records: dict[TopicPartition, list[Any]] = {tp: [] for tp in tps}
    try:
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        deadline = time.monotonic() + READ_TIMEOUT_S
        while any(_next_offset(records[tp]) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} not read to its end in {READ_TIMEOUT_S:g} s")
            for tp, batch in (await consumer.getmany(timeout_ms=500, max_records=20_000)).items():
                records[tp].extend(batch)
    finally:
        await consumer.stop()
    return [r for tp in tps for r in records[tp]]


def _next_offset(records: Sequence[Any]) -> int:
    return int(records[-1].offset) + 1 if records else 0

