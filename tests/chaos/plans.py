"""The chaos suite's sizes: the CI scenarios (`tests/chaos/test_chaos.py`) and the long run
(`benchmarks/chaos.py`), so both run the same faults at different scales."""

from __future__ import annotations

from typing import Final

from tests.chaos.faults import FaultPlan
from tests.chaos.runner import Scenario

EVERY_KIND_ONCE: Final = {
    "kill_processor": 2, "kill_sync": 2, "join_leave": 1, "freeze_broker": 1,
    "kill_redis": 1, "freeze_redis": 1, "provider_errors": 1, "provider_stall": 1,
    "unsubscribe": 1,
}
REDIS_FAULTS: Final = ("kill_redis", "freeze_redis")


def ci_scenario(seed: int = 1) -> Scenario:
    """10k events with a handful of faults of every kind, the broker frozen 10-12 s."""
    return Scenario(FaultPlan(EVERY_KIND_ONCE, broker_freeze=(10.0, 12.0)), events=10_000,
                    customers=1_500, seed=seed, rate=700.0)


def cluster_scenario(seed: int = 2) -> Scenario:
    """The CI scenario's role and provider faults with the state on a 3-master Redis Cluster:
    what the cluster changes is where commits go, which kills and rebalances exercise. Its
    nodes are not faulted, and the broker freeze (10 s of the run, unrelated to Redis) is
    left to `ci_scenario`."""
    counts = {k: n for k, n in EVERY_KIND_ONCE.items()
              if k not in (*REDIS_FAULTS, "freeze_broker")}
    return Scenario(FaultPlan(counts), events=6_000, customers=1_000, seed=seed, rate=700.0,
                    cluster=True)


def long_scenario(events: int = 100_000, seed: int = 1, kills: int = 20) -> Scenario:
    """The long run: `kills` kill -9 of processors and sync workers (split evenly), every
    other kind several times, spread over the run."""
    scale = max(1, events // 25_000)
    counts = {
        "kill_processor": kills - kills // 2, "kill_sync": kills // 2,
        "join_leave": 2 * scale, "freeze_broker": scale, "kill_redis": 2 * scale,
        "freeze_redis": 2 * scale, "provider_errors": 2 * scale, "provider_stall": scale,
        "unsubscribe": 2 * scale,
    }
    return Scenario(FaultPlan(counts, broker_freeze=(10.0, 20.0)), events=events,
                    customers=max(1_500, events // 8), seed=seed, processors=3,
                    rate=1_000.0, converge_timeout=600.0)
