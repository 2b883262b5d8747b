"""One chaos scenario end to end: `run_chaos(scenario, workdir)` returns its `Report`.

The run owns everything it breaks: an embedded broker (Tansu, frozen but never killed), a
valkey-server with an append-only file (killed -9 and started again from it, and frozen) or a
3-master Redis Cluster, a fake Mailchimp served in this process (its fault knobs turned), and
the roles as real subprocesses: `segstream api`, 2-3 `segstream process` and 2 `segstream sync`
in their groups. Seeded storefront traffic flows while the faults land at seeded moments; after
the input stops and every fault healed, the run waits until the pipeline converged and holds
what it produced against a full recomputation (`checks`), then looks for secrets in every log,
file and API answer (`leaks`). A role that exits by itself is a finding, never restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
from pydantic import SecretStr

from providers.fakes.mailchimp import MailchimpFake
from providers.fakes.server import serve_fake
from streams.broker.topics import TopicNames, ensure_topics
from streams.local.embedded import EmbeddedServices
from streams.settings import Settings
from streams.storage.client import redis_client
from tests.chaos.checks import Pipeline, Verdict, verify, wait_converged
from tests.chaos.faults import KINDS, Chaos, FaultPlan
from tests.chaos.leaks import Leak, leaks_in_api, leaks_in_files
from tests.chaos.roles import STOP_TIMEOUT_S, RoleExit, Roles, Slot
from tests.chaos.services import AofValkey, redis_cluster
from tests.chaos.traffic import ProduceStats, SteadyProducer, chaos_events

log = logging.getLogger("chaos.runner")

ASSIGN_TIMEOUT_S: Final = 90.0
API_TIMEOUT_S: Final = 60.0
ROLE_ENV: Final = {
    # small batches and commit groups, so kills land inside open groups
    "SEGSTREAM_BATCH_MAX": "500",
    "SEGSTREAM_COMMIT_GROUP_FROM": "50",
    "SEGSTREAM_COMMIT_GROUP_MAX": "2000",
}
SEGMENTS: Final[dict[str, dict[str, Any]]] = {
    "refunded": {"name": "Refunded", "groups": [{"conditions": [
        {"field": "refund_count", "op": "gte", "value": 1}]}]},
    "espresso-us": {"name": "Espresso buyers in the US", "groups": [{"conditions": [
        {"field": "products_purchased", "op": "includes_any", "value": ["p-espresso"]},
        {"field": "billing_country", "op": "eq", "value": "US"}]}]},
    "prospects": {"name": "Prospects", "groups": [{"conditions": [
        {"field": "contact_type", "op": "eq", "value": "prospect"}]}]},
}
RESPONDER: Final = "spent-100"
"""The segment synced to the provider: members enter with orders and leave with refunds."""
RESPONDER_BODY: Final[dict[str, Any]] = {
    "id": RESPONDER, "name": "Spent 100+", "groups": [{"conditions": [
        {"field": "total_spent", "op": "gte", "value": 100}]}]}


@dataclass(frozen=True)
class Scenario:
    """What one run does. The fault counts and durations are in `plan`."""

    plan: FaultPlan
    events: int = 10_000
    customers: int = 1_500
    seed: int = 1
    processors: int = 2
    syncs: int = 2
    partitions: int = 6
    rate: float = 500.0
    """Events per second the storefront sends."""
    cluster: bool = False
    """A 3-master Redis Cluster instead of the AOF valkey (no Redis faults then)."""
    converge_timeout: float = 240.0
    session_timeout_ms: int = 4_000


@dataclass
class Report:
    """What a run did and found; `ok` when every check held."""

    scenario: Scenario
    distinct_events: int = 0
    sent_events: int = 0
    email_changes: int = 0
    produced: ProduceStats = field(default_factory=ProduceStats)
    faults: Counter[str] = field(default_factory=Counter)
    fault_log: list[str] = field(default_factory=list)
    verdict: Verdict = field(default_factory=Verdict)
    converge_s: float | None = None
    behind: str = ""
    """What had not caught up when the convergence wait gave up."""
    exits: list[RoleExit] = field(default_factory=list)
    tracebacks: dict[str, int] = field(default_factory=dict)
    leaks: list[Leak] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)
    """API paths that did not answer 200 in the security check."""
    workdir: Path = Path()

    @property
    def ok(self) -> bool:
        return (self.converge_s is not None and self.verdict.ok and not self.exits
                and not self.leaks and not self.unread)

    def table(self) -> str:
        s = self.scenario
        rows: list[tuple[str, str]] = [
            ("events (distinct)", f"{self.distinct_events:,}"),
            ("events sent (with duplicate event_ids)", f"{self.sent_events:,}"),
            ("records acknowledged (re-sends counted again)", f"{self.produced.records:,}"),
            ("email changes", f"{self.email_changes:,}"),
        ]
        rows += [(f"fault: {text}", str(self.faults.get(kind, 0))) for kind, text in KINDS.items()
                 if kind in s.plan.counts or self.faults.get(kind)]
        v = self.verdict
        rows += [(f"members of {segment} (recomputed)", f"{size:,}")
                 for segment, size in sorted(v.segment_sizes.items())]
        rows += [
            ("lost", str(v.lost)),
            ("applied twice", str(v.applied_twice)),
            ("mismatches (states, Redis, topic, provider)",
             f"{v.mismatches} ({v.states_differing}, {v.redis_mismatches}, "
             f"{v.topic_mismatches}, {v.provider_mismatches + v.resubscribed})"),
            ("not on the input topics (producer)", str(v.not_on_inputs + v.reordered_on_inputs)),
            (f"roles exited by themselves or not stopped in {STOP_TIMEOUT_S:g} s",
             str(len(self.exits))),
            ("secrets found in logs, files, API answers", str(len(self.leaks))),
            ("seconds to converge", "did not" if self.converge_s is None
             else f"{self.converge_s:.1f}"),
        ]
        width = max(len(name) for name, _ in rows)
        head = (f"chaos run: seed {s.seed}, {s.processors} processors + joiners, {s.syncs} sync "
                f"workers, {s.partitions} partitions, Redis "
                f"{'Cluster (3 masters)' if s.cluster else 'with AOF (everysec)'}")
        lines = [head, *(f"  {name:<{width}}  {value:>10}" for name, value in rows)]
        if not self.ok:
            lines += ["FAILED:", *self.problems()]
        return "\n".join(lines)

    def problems(self) -> list[str]:
        found = [f"  {e}" for e in self.verdict.examples]
        if self.converge_s is None:
            found.append(f"  not converged: {self.behind}")
        found += [f"  {e.describe()}" for e in self.exits]
        found += [f"  {leak.secret} in {leak.where}" for leak in self.leaks]
        found += [f"  API answer unread: {path}" for path in self.unread]
        found.append(f"  logs in {self.workdir}")
        return found


@dataclass(frozen=True)
class Secrets:
    api_token: str
    secret_key: str
    provider_key: str

    def by_kind(self) -> dict[str, str]:
        return {"api token": self.api_token, "secret key": self.secret_key,
                "provider api key": self.provider_key}


async def run_chaos(scenario: Scenario, workdir: Path) -> Report:
    """Run one scenario in `workdir` (logs stay there) and report what it found."""
    workdir.mkdir(parents=True, exist_ok=True)
    report = Report(scenario, workdir=workdir)
    known = Secrets(api_token=secrets.token_urlsafe(24), secret_key=secrets.token_urlsafe(36),
                    provider_key=f"{secrets.token_hex(16)}-us6")
    rng = random.Random(scenario.seed)
    traffic = chaos_events(scenario.seed, scenario.events, scenario.customers)
    report.distinct_events, report.sent_events = len(traffic.distinct), len(traffic.sent)
    report.email_changes = traffic.email_changes
    async with _services(scenario, workdir) as (settings, broker_pid, valkey):
        settings = settings.with_changes(secret_key=SecretStr(known.secret_key))
        provider = MailchimpFake(api_keys=[known.provider_key], seed=scenario.seed)
        list_id, tags = provider.seed_list("Chaos shop", ["Spent 100+"])
        async with serve_fake(provider) as provider_url, redis_client(
                settings.redis_url or "", cluster=settings.redis_cluster) as redis:
            assert settings.kafka_bootstrap
            await ensure_topics(settings.kafka_bootstrap, TopicNames(settings.topic_prefix),
                                settings.partitions, settings.replication_factor)
            roles = Roles(workdir, settings, ROLE_ENV | {"SEGSTREAM_API_TOKEN": known.api_token})
            watcher: asyncio.Task[None] | None = None
            try:
                api_url, profile_id = await _start_api(roles, known, provider_url, list_id,
                                                       tags["Spent 100+"])
                base = await _start_group(roles, scenario)
                watcher = asyncio.create_task(roles.watch(), name="chaos-watch")
                chaos = Chaos(scenario.plan, rng, roles, broker_pid, valkey, provider, list_id,
                              tags["Spent 100+"], [s.name for s in base])
                producer = SteadyProducer(settings.kafka_bootstrap,
                                          TopicNames(settings.topic_prefix))
                duration = len(traffic.sent) / scenario.rate
                report.produced, _ = await asyncio.gather(
                    producer.run(traffic.sent, scenario.rate), chaos.run(duration))
                input_done = time.monotonic()
                report.faults = chaos.counts()
                report.fault_log = [f"t+{i.at:.1f}s {i.kind}: {i.detail}" for i in chaos.injected]
                pipeline = Pipeline(settings, redis, provider, list_id, tags["Spent 100+"],
                                    RESPONDER)
                report.converge_s, report.behind = await wait_converged(
                    pipeline, input_done, scenario.converge_timeout)
                report.verdict = await verify(pipeline, traffic.distinct, chaos.unsubscribed)
                roles.check()
                leaks, report.unread = await leaks_in_api(
                    api_url, known.api_token, _api_paths(profile_id, traffic.distinct),
                    known.by_kind())
                report.leaks.extend(leaks)
                await roles.stop_all()
            finally:
                if watcher is not None:
                    watcher.cancel()
                    await asyncio.gather(watcher, return_exceptions=True)
                roles.kill_all()
            report.exits = roles.exits
            report.tracebacks = roles.tracebacks()
    report.leaks.extend(leaks_in_files(workdir, known.by_kind()))
    return report


@contextlib.asynccontextmanager
async def _services(scenario: Scenario, workdir: Path
                    ) -> AsyncIterator[tuple[Settings, int, AofValkey | None]]:
    """The run's broker and Redis, and settings with names of their own on them."""
    unique = f"chaos{uuid.uuid4().hex[:6]}"
    async with contextlib.AsyncExitStack() as stack:
        broker = EmbeddedServices(workdir / "broker", redis=False)
        await broker.astart()
        stack.push_async_callback(broker.astop)
        valkey: AofValkey | None = None
        if scenario.cluster:
            url = stack.enter_context(redis_cluster(workdir / "cluster"))
        else:
            valkey = AofValkey(workdir / "valkey")
            await valkey.start()
            stack.callback(valkey.stop)
            url = valkey.url
        settings = Settings(
            kafka_bootstrap=broker.kafka_bootstrap, redis_url=url,
            redis_cluster=scenario.cluster, topic_prefix=f"{unique}.", key_prefix=unique,
            group_id=f"{unique}-processor", partitions=scenario.partitions,
            session_timeout_ms=scenario.session_timeout_ms, run_dir=workdir / "run")
        yield settings, broker.pids["tansu"], valkey


async def _start_api(roles: Roles, known: Secrets, provider_url: str, list_id: str,
                     tag: str) -> tuple[str, str]:
    """`segstream api`, then what a user sets up through it: a Mailchimp profile (the key
    sent once, in the request), its lists fetched, the segments, one synced to a tag."""
    slot = roles.add("api-1", "api")
    port = int(slot.env["SEGSTREAM_HTTP_PORT"])
    roles.start(slot)
    api_url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {known.api_token}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as client:
        await _until_live(roles, slot, client)
        profile = await _created(client.post("/providers/profiles", json={
            "name": "chaos shop", "provider": "mailchimp",
            "credentials": {"api_key": known.provider_key}, "base_url": provider_url}))
        await _created(client.post(f"/providers/profiles/{profile['id']}/sync"))
        for segment_id, body in SEGMENTS.items():
            await _created(client.post("/segments", json={"id": segment_id, **body}))
        await _created(client.post("/segments", json={**RESPONDER_BODY, "auto_responder": {
            "profile_id": profile["id"], "list_id": list_id, "segment_id": tag}}))
    return api_url, str(profile["id"])


async def _until_live(roles: Roles, slot: Slot, client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + API_TIMEOUT_S
    while time.monotonic() < deadline:
        roles.check()
        if roles.exits:
            raise RuntimeError(roles.exits[0].describe())
        with contextlib.suppress(httpx.TransportError):
            if (await client.get("/health/ready")).status_code == 200:
                return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"segstream api not ready within {API_TIMEOUT_S:g} s "
                       f"(log {slot.log_path})")


async def _created(request: Any) -> dict[str, Any]:
    answer: httpx.Response = await request
    if answer.status_code not in (200, 201):
        raise RuntimeError(f"{answer.request.method} {answer.request.url.path}: "
                           f"{answer.status_code} {answer.text}")
    body: dict[str, Any] = answer.json()
    return body


async def _start_group(roles: Roles, scenario: Scenario) -> list[Slot]:
    """The base processors and the sync workers, once each was assigned its partitions."""
    base = [roles.add(f"process-{n}", "process") for n in range(1, scenario.processors + 1)]
    syncs = [roles.add(f"sync-{n}", "sync") for n in range(1, scenario.syncs + 1)]
    for slot in base + syncs:
        roles.start(slot)
    await roles.wait_assigned(base + syncs, ASSIGN_TIMEOUT_S)
    return base


def _api_paths(profile_id: str, distinct: list[dict[str, Any]]) -> list[str]:
    """What the security check reads: profiles, lists, segments, members, a few customers."""
    customers = sorted({e["customer_id"] for e in distinct})[:5]
    return ["/providers/profiles", f"/providers/profiles/{profile_id}",
            f"/providers/profiles/{profile_id}/lists", "/segments", f"/segments/{RESPONDER}",
            f"/segments/{RESPONDER}/members", "/fields", "/health/ready", "/metrics",
            *(f"/customers/{c}" for c in customers)]
