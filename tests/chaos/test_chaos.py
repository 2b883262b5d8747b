"""The chaos suite at CI size: the whole pipeline under every kind of fault while 10k events
flow, then every customer's state, Redis membership, the membership topic and the provider's
tag against a full recomputation, and no secret in any log, file or API answer.

One run serves the checks of a scenario (module-scoped fixture): a chaos run is the costly
part, and each test reads a different side of what it found. The long run is
`benchmarks/chaos.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.chaos.plans import ci_scenario, cluster_scenario
from tests.chaos.runner import Report, Scenario, run_chaos


async def _run(scenario: Scenario, workdir: Path) -> Report:
    report = await run_chaos(scenario, workdir)
    print(report.table())  # shown by pytest -rA or on failure
    return report


@pytest.fixture(scope="module")
async def ci_run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Report]:
    yield await _run(ci_scenario(), tmp_path_factory.mktemp("chaos"))


def _every_fault_landed(report: Report) -> None:
    planned = {kind for kind, n in report.scenario.plan.counts.items() if n}
    missing = planned - set(report.faults)
    assert not missing, f"faults planned but not injected: {missing}\n{report.table()}"


def _converged_to_recomputation(report: Report) -> None:
    """0 lost, 0 applied twice, no output differing from the recomputation, no role exited."""
    assert report.ok or report.leaks, report.table()
    assert report.verdict.segment_sizes.get("spent-100"), (
        f"the synced segment has members, so the provider check compares something\n"
        f"{report.table()}")


async def test_every_fault_kind_loses_nothing_and_applies_nothing_twice(ci_run: Report) -> None:
    _every_fault_landed(ci_run)
    _converged_to_recomputation(ci_run)
    assert not ci_run.tracebacks, (
        f"a role riding through its outages logs no traceback: {ci_run.tracebacks} "
        f"(logs in {ci_run.workdir})")


async def test_no_secret_in_any_log_file_or_api_answer(ci_run: Report) -> None:
    """The provider's API key, the API token and the secret key appear nowhere a run leaves
    readable: role and service logs, the Redis append-only file, the API's answers (profiles,
    lists, segments, members, customers, metrics)."""
    assert not ci_run.unread, ci_run.unread
    assert not ci_run.leaks, "\n".join(f"{leak.secret} in {leak.where}" for leak in ci_run.leaks)


@pytest.mark.slow
async def test_on_a_redis_cluster_every_fault_kind_loses_nothing(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same faults (Redis's aside: the cluster's nodes are not killed) with the state on a
    3-master Redis Cluster."""
    report = await _run(cluster_scenario(), tmp_path_factory.mktemp("chaos-cluster"))
    _every_fault_landed(report)
    _converged_to_recomputation(report)
    assert not report.leaks, report.table()
