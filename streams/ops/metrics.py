"""The process's Prometheus metrics: one registry, built here, handed to the roles.

`Metrics` owns a `CollectorRegistry` (not the library's global one) holding:

- what is observed as it happens, once per batch, chunk or provider call: the histograms and
  the provider counters. `Metrics` is the `EngineObserver`, `SyncObserver` and provider
  `CallObserver` the roles are given;
- what the roles count anyway (`EngineStats`, `SyncCounters`, `Outages`), read when Prometheus
  scrapes by `_CountersCollector`: the hot path pays nothing for them;
- readings of the broker and Redis taken on scrape (`LagReader`, segment member counts), each
  bounded by the scrape's timeout: when a reading does not end in time its families are left
  out of that scrape, and `segstream_reading_ok{reading}` says 0.

Every family is `segstream_*`, in base units, with HELP text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Final

from aiokafka.errors import KafkaError
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from streams.engine.stats import EngineStats
from streams.ops.lag import LagReader
from streams.ops.outages import Outages
from streams.sync.worker import SyncCounters

log = logging.getLogger("segstream.metrics")

SCRAPE_TIMEOUT_S: Final = 1.0
"""How long a scrape waits for the readings taken on scrape (lag, member counts)."""
SERVICES: Final = ("kafka", "redis")

_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                           60.0, 300.0)
_BATCH_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SIZE_BUCKETS: Final = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 20000, 50000)

Reading = Callable[[float], Awaitable[bool]]
"""Refreshes a reading taken on scrape, waiting at most the given seconds; whether it ended."""
MemberCounts = Callable[[], Awaitable[dict[str, int]]]


class Metrics:
    """The registry and the families observed as things happen; see the module docstring."""

    def __init__(self, *, platform: bool = True, scrape_timeout: float = SCRAPE_TIMEOUT_S
                 ) -> None:
        self.scrape_timeout = scrape_timeout
        self.registry = registry = CollectorRegistry()
        if platform:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.batch_seconds = Histogram(
            "segstream_batch_processing_seconds",
            "Time the processor took to apply one batch of input records (decode, Redis loads, "
            "apply, evaluate, emit).", buckets=_BATCH_BUCKETS, registry=registry)
        self.batch_size = Histogram(
            "segstream_batch_size_records", "Input records per batch the processor applied.",
            buckets=_SIZE_BUCKETS, registry=registry)
        self.event_to_membership = Histogram(
            "segstream_event_to_membership_seconds",
            "Per batch that changed memberships: from the record timestamp of its oldest input "
            "record to the broker's acknowledgement of its membership records.",
            buckets=_LATENCY_BUCKETS, registry=registry)
        self.timer_lateness = Histogram(
            "segstream_timer_lateness_seconds",
            "Per chunk of fired timers: how late its most overdue timer fired.",
            buckets=_LATENCY_BUCKETS, registry=registry)
        self.provider_call_seconds = Histogram(
            "segstream_provider_call_seconds",
            "Duration of one HTTP attempt to an auto-responder provider.", ["provider"],
            buckets=_LATENCY_BUCKETS, registry=registry)
        self.membership_to_provider = Histogram(
            "segstream_membership_to_provider_seconds",
            "From a membership change's record timestamp to the provider confirming it, per "
            "customer synced.", buckets=_LATENCY_BUCKETS, registry=registry)
        self.provider_calls = Counter(
            "segstream_provider_calls",
            "HTTP attempts to auto-responder providers by outcome (ok, rate_limited, transient, "
            "auth, permanent, network) and HTTP status (none: no answer).",
            ["provider", "outcome", "status"], registry=registry)
        self.provider_retries = Counter(
            "segstream_provider_retries", "Provider calls tried again after a retriable failure.",
            ["provider"], registry=registry)
        self.limit_waits = Counter(
            "segstream_provider_rate_limit_waits",
            "Provider calls that waited for a permit of a rate or concurrency limit, or a "
            "Retry-After.", ["limit"], registry=registry)
        self.limit_wait_seconds = Counter(
            "segstream_provider_rate_limit_wait_seconds",
            "Time provider calls spent waiting for a permit.", ["limit"], registry=registry)
        self._counters = _CountersCollector()
        registry.register(self._counters)
        self._readings: dict[str, Reading] = {}
        self._reading_ok: dict[str, bool] = {}
        self._lag: LagReader | None = None
        self._members: dict[str, int] | None = None
        registry.register(_ReadingsCollector(self))

    # -- what the roles count, read on scrape --------------------------------------------------

    def watch_engine(self, stats: EngineStats) -> None:
        self._counters.engine = stats

    def watch_sync(self, counters: SyncCounters) -> None:
        self._counters.sync = counters

    def watch_outages(self, outages: Outages) -> None:
        self._counters.outages = outages

    def watch_lag(self, reader: LagReader) -> None:
        """Serve `reader`'s lag and time lag, refreshed on each scrape."""
        self._lag = reader
        self._readings["lag"] = reader.refresh

    def watch_members(self, counts: MemberCounts) -> None:
        """Serve members per segment, read with `counts` on each scrape."""

        async def refresh(within: float) -> bool:
            try:
                self._members = await asyncio.wait_for(counts(), within)
            except (TimeoutError, OSError, RedisError, KafkaError) as exc:
                log.debug("member counts not read: %r", exc)
                self._members = None
                return False
            return True

        self._readings["members"] = refresh

    # -- scraping -----------------------------------------------------------------------------

    async def render(self, within: float | None = None) -> bytes:
        """The text exposition, after refreshing the readings taken on scrape (waited for at
        most `within` seconds together, `scrape_timeout` by default)."""
        wait = self.scrape_timeout if within is None else within
        names = list(self._readings)
        results = await asyncio.gather(*(self._readings[n](wait) for n in names),
                                       return_exceptions=True)
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("the %s reading failed: %r", name, result)
            self._reading_ok[name] = result is True
        return generate_latest(self.registry)

    # -- EngineObserver ------------------------------------------------------------------------

    def batch_applied(self, events: int, seconds: float) -> None:
        self.batch_seconds.observe(seconds)
        self.batch_size.observe(events)

    def changes_acknowledged(self, seconds: float) -> None:
        self.event_to_membership.observe(seconds)

    def timers_fired(self, count: int, lateness_seconds: float) -> None:
        self.timer_lateness.observe(max(0.0, lateness_seconds))

    # -- SyncObserver ---------------------------------------------------------------------------

    def confirmed(self, seconds: Sequence[float]) -> None:
        observe = self.membership_to_provider.observe
        for value in seconds:
            observe(value)

    # -- providers.observe.CallObserver -------------------------------------------------------

    def call_finished(self, provider: str, outcome: str, status: int | None,
                      seconds: float) -> None:
        self.provider_calls.labels(provider, outcome, "none" if status is None else str(status)
                                   ).inc()
        self.provider_call_seconds.labels(provider).observe(seconds)

    def retried(self, provider: str) -> None:
        self.provider_retries.labels(provider).inc()

    def limit_waited(self, limit: str, seconds: float) -> None:
        self.limit_waits.labels(limit).inc()
        self.limit_wait_seconds.labels(limit).inc(seconds)


class _CountersCollector(Collector):
    """The roles' own counters (`EngineStats`, `SyncCounters`, `Outages`), read on scrape."""

    def __init__(self) -> None:
        self.engine: EngineStats | None = None
        self.sync: SyncCounters | None = None
        self.outages: Outages | None = None

    def collect(self) -> Iterator[Metric]:
        dead: dict[tuple[str, ...], int] = {}
        if self.engine is not None:
            yield from _engine_families(self.engine)
            dead |= {("process", k): v for k, v in self.engine.dead_letters_by_reason.items()}
        if self.sync is not None:
            yield from _sync_families(self.sync)
            dead |= {("sync", k): v for k, v in self.sync.dead_letters_by_reason.items()}
        if self.engine is not None or self.sync is not None:
            yield _labelled(
                "segstream_dead_letters",
                "Records written to segments.dlq, by stage (process, sync) and reason code.",
                ["stage", "reason"], dead)
        if self.outages is not None:
            kafka = sum(source.kafka_errors for source in (self.engine, self.sync)
                        if source is not None)
            yield from _outage_families(self.outages, kafka)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _labelled(name: str, documentation: str, labels: Sequence[str],
              values: Mapping[Any, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=list(labels))
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def _engine_families(stats: EngineStats) -> Iterator[Metric]:
    yield _counter("segstream_records_consumed", "Input records the processor consumed.",
                   stats.events)
    yield _labelled("segstream_events_applied", "Input events applied to a customer's state.",
                    ["type"], {(k,): v for k, v in stats.applied_by_type.items()})
    yield _labelled("segstream_events_duplicate",
                    "Input events not applied because their event_id was applied before.",
                    ["type"], {(k,): v for k, v in stats.duplicates_by_type.items()})
    yield _counter("segstream_events_forwarded",
                   "Input events forwarded to their owner's partition of the repartition topic.",
                   stats.forwarded)
    yield _labelled("segstream_membership_changes",
                    "Membership records emitted (added, removed), by segment and reason.",
                    ["segment", "reason", "change"], stats.changes)
    yield _counter("segstream_membership_email_updates",
                   "segment.member_updated records emitted (a member's email set or changed).",
                   stats.email_updates)
    yield _counter("segstream_timers_scheduled",
                   "Timers set: a customer's next re-evaluation by time alone.",
                   stats.timers_scheduled)
    yield _counter("segstream_timers_fired", "Due timers whose customer was re-evaluated.",
                   stats.timers_fired)


def _sync_families(counters: SyncCounters) -> Iterator[Metric]:
    yield _counter("segstream_sync_members_synced",
                   "Customers whose membership changes a provider confirmed.", counters.synced)
    yield _counter("segstream_sync_members_moved",
                   "Members moved to a new email at their provider (also counted as synced).",
                   counters.moved)
    yield _counter("segstream_sync_changes_skipped",
                   "Membership changes of segments without an auto-responder.", counters.skipped)
    yield _counter("segstream_sync_changes_duplicate",
                   "Membership changes whose event_id the sync worker had already taken.",
                   counters.duplicates)
    yield _counter("segstream_sync_batch_retries",
                   "Provider calls retried by the sync worker, and batches held to be sent "
                   "again.", counters.retries)
    yield _counter("segstream_sync_profile_holds",
                   "Times a provider profile was held after its calls kept failing.",
                   counters.outages)


def _outage_families(outages: Outages, kafka_errors: int) -> Iterator[Metric]:
    """Up, errors and outages per service; `kafka_errors` are the roles' own failed Kafka
    calls (offset commits, dead-letter produces) beside the ones `outages` saw."""
    up = GaugeMetricFamily("segstream_service_up",
                           "Whether a backing service answers (1) or is in an outage (0).",
                           labels=["service"])
    errors = CounterMetricFamily("segstream_service_errors",
                                 "Failures of calls to a backing service (Redis, Kafka).",
                                 labels=["service"])
    count = CounterMetricFamily("segstream_service_outages",
                                "Outages of a backing service since the process started.",
                                labels=["service"])
    for service in sorted({*SERVICES, *outages.counts, *outages.errors}):
        up.add_metric([service], 0 if outages.is_down(service) else 1)
        extra = kafka_errors if service == "kafka" else 0
        errors.add_metric([service], outages.errors.get(service, 0) + extra)
        count.add_metric([service], outages.counts.get(service, 0))
    yield from (up, errors, count)


class _ReadingsCollector(Collector):
    """Lag, time lag and members per segment as the last refresh left them."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        ok = GaugeMetricFamily(
            "segstream_reading_ok", "Whether the reading taken on this scrape ended in time "
            "(1); when 0, its families are absent from the scrape.", labels=["reading"])
        for name in metrics._readings:
            ok.add_metric([name], 1 if metrics._reading_ok.get(name) else 0)
        yield ok
        if metrics._lag is not None:
            yield from _lag_families(metrics._lag)
        if metrics._members is not None and metrics._reading_ok.get("members"):
            members = GaugeMetricFamily("segstream_segment_members",
                                        "Customers in each segment.", labels=["segment"])
            for segment, count in sorted(metrics._members.items()):
                members.add_metric([segment], count)
            yield members


def _lag_families(reader: LagReader) -> Iterator[Metric]:
    labels = ["group", "topic", "partition"]
    lag = GaugeMetricFamily("segstream_consumer_lag_records",
                            "Records not yet processed by a consumer group, per partition.",
                            labels=labels)
    age = GaugeMetricFamily("segstream_consumer_time_lag_seconds",
                            "Age of the oldest record a consumer group has not processed, per "
                            "partition (0 when caught up).", labels=labels)
    for row in reader.rows or ():
        key = [row.group, row.topic, str(row.partition)]
        lag.add_metric(key, row.lag)
        if row.time_lag_seconds is not None:
            age.add_metric(key, row.time_lag_seconds)
    yield lag
    yield age
    if reader.read_seconds is not None:
        yield GaugeMetricFamily("segstream_consumer_lag_read_seconds",
                                "How long the last lag reading took.", value=reader.read_seconds)
