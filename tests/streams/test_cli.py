"""The command line as a user runs it: `up`, `produce`, `lag`, `reconcile`, in real
subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import psutil
import pytest
from redis.asyncio import Redis

from streams.broker.partitioning import owner_partition
from streams.settings import Settings
from streams.storage.definitions import DefinitionStore
from streams.storage.profiles import ProfileStore
from tests.providers.harness import Harness
from tests.streams.helpers import (
    create_topics,
    event,
    role_env,
    running_processor,
    seed_member,
    slot_of,
    state_of,
    wait_for,
)


def _segstream(*args: str, env: dict[str, str], stdin: bytes | None = None,
               cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, input=stdin,
                          capture_output=True, timeout=120, cwd=cwd)


async def test_produce_validates_sends_valid_lines_and_names_bad_ones(
    settings: Settings, redis_client: Redis, tmp_path: Path
):
    await create_topics(settings)
    lines = [
        orjson.dumps(event("customer.created", "c-p1", "p1", {"email": "p@example.com"})),
        b"",
        b'{"event_id": "p2", "type": "order.placed"}',
        orjson.dumps(event("order.placed", "c-p1", "p3", {"order_id": "o1", "total": "9.5"})),
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = _segstream("produce", str(path), env=role_env(settings))
    output = result.stderr.decode()
    assert result.returncode == 1, output  # a rejected line makes the exit code say so
    assert "line 3" in output and "missing_field" in output
    assert "sent 1 to" in output and "rejected 1" in output
    async with running_processor(settings, redis_client):
        await wait_for(lambda: _applied(settings, redis_client, "c-p1"), what="produced events")

    from_stdin = _segstream("produce", "-", env=role_env(settings), stdin=lines[0] + b"\n")
    assert from_stdin.returncode == 0, from_stdin.stderr.decode()


async def _applied(settings: Settings, redis: Redis, customer_id: str) -> bool:
    state = await state_of(settings, redis, customer_id)
    return state is not None and state.order_count == 1 and state.email == "p@example.com"


async def test_lag_reports_every_partition_as_table_and_json(settings: Settings):
    await create_topics(settings)
    from tests.streams.helpers import produce

    await produce(settings, [event("customer.created", f"c-l{n}", f"l{n}") for n in range(6)])
    result = _segstream("lag", "--json", env=role_env(settings))
    assert result.returncode == 0, result.stderr.decode()
    rows = json.loads(result.stdout)
    customers = [r for r in rows if r["topic"] == f"{settings.topic_prefix}customers"]
    assert len(customers) == settings.partitions
    assert sum(r["lag"] for r in customers) == 6  # nothing consumed yet
    assert all(r["group"] == settings.group_id and r["committed"] is None for r in customers)
    table = _segstream("lag", env=role_env(settings))
    assert "customers" in table.stdout.decode() and "lag" in table.stdout.decode()


async def _segstream_async(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """A `segstream` subprocess that leaves this loop running (it serves the fakes)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_reconcile_says_what_it_would_change_then_changes_it(
    settings: Settings, redis_client: Redis, mailchimp: Harness
) -> None:
    secret, prefix = "k" * 40, settings.key_prefix
    await create_topics(settings)
    profile = await ProfileStore(redis_client, prefix, secret).create(
        "shop", "mailchimp", mailchimp.fake.credentials(), mailchimp.base_url)
    list_id, segments = mailchimp.seed_list("Shop", "VIP")
    vip = segments["VIP"]
    await DefinitionStore(redis_client, prefix).put("vip", {
        "name": "vip", "groups": [{"conditions": [{"field": "total_spent", "op": "gt",
                                                   "value": 1}]}],
        "auto_responder": {"profile_id": profile.id, "list_id": list_id, "segment_id": vip}})
    slot = await slot_of(redis_client, prefix, "vip")
    members: dict[str, str | None] = {f"c-{n}": f"c{n}@shop.test" for n in range(7)}
    members |= {"c-bad": "bad@shop.test", "c-nomail": None}
    for customer, email in members.items():
        partition = owner_partition(customer, settings.partitions)
        await seed_member(redis_client, prefix, partition, slot, "vip", customer, email)
    mailchimp.seed_invalid("bad@shop.test")
    for email in ("c0@shop.test", "stale@shop.test"):
        mailchimp.seed_member(list_id, email)
    async with mailchimp.client() as client:
        await client.add_to_segment(list_id, vip, ["c0@shop.test", "stale@shop.test"])
    env = role_env(settings, SEGSTREAM_SECRET_KEY=secret)

    code, out, err = await _segstream_async("reconcile", profile.id, "vip", "--dry-run", env=env)
    assert code == 0, out + err
    assert out.splitlines() == [
        "would add 7: bad@shop.test, c1@shop.test, c2@shop.test, c3@shop.test, c4@shop.test, "
        "and 2 more",
        "would remove 1: stale@shop.test",
        "failed 0",
        "members without email 1: c-nomail",
    ]
    assert mailchimp.fake.state.segment_emails(list_id, vip) == {"c0@shop.test",
                                                                "stale@shop.test"}

    code, out, err = await _segstream_async("reconcile", profile.id, "vip", env=env)
    assert code == 1, out + err  # the provider refused one member
    lines = out.splitlines()
    assert lines[0].startswith("added 6: c1@shop.test, ") and lines[0].endswith("and 1 more")
    assert lines[1:3] == ["removed 1: stale@shop.test", "failed 1"]
    assert lines[3].startswith("  bad@shop.test: ") and "invalid" in lines[3].lower()
    assert mailchimp.fake.state.segment_emails(list_id, vip) == set(
        e for e in members.values() if e and e != "bad@shop.test")
    assert mailchimp.subscribed(list_id, "stale@shop.test")  # out of the tag, still subscribed

    code, out, err = await _segstream_async("reconcile", profile.id, "nope", env=env)
    assert code == 2 and "no segment 'nope'" in err
    code, out, err = await _segstream_async(
        "reconcile", profile.id, "vip", env={**env, "SEGSTREAM_SECRET_KEY": ""})
    assert code == 2 and "needs SEGSTREAM_SECRET_KEY" in err, err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_up_starts_everything_answers_health_and_stops_cleanly_on_ctrl_c(tmp_path: Path):
    port = _free_port()
    segments = tmp_path / "segments.json"
    segments.write_text(json.dumps([{"id": "vip", "name": "VIP", "groups": [
        {"conditions": [{"field": "total_spent", "op": "gt", "value": 300}]}]}]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGSTREAM_")}
    env |= {"SEGSTREAM_HTTP_PORT": str(port), "SEGSTREAM_PARTITIONS": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "up", "--segments", str(segments)],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        ready = _wait_ready(port)
        assert ready["checks"] == {"redis": "ok", "kafka": "ok", "processor": "ok",
                                   "sync": "ok"}
        children = psutil.Process(proc.pid).children(recursive=True)
        assert {"tansu", "valkey"} <= {_kind(c) for c in children}
        services = json.loads((tmp_path / ".segstream/run/services.json").read_text())
        lag = _segstream("lag", "--json", env=env, cwd=tmp_path)  # finds the running system
        assert lag.returncode == 0, lag.stderr.decode()
        assert services["http_port"] == port
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, output
    assert "Segments from" in output and "vip (v1)" in output
    assert "API token (generated for this run)" in output
    assert "stopped cleanly" in output
    psutil.wait_procs(children, timeout=10)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
def test_up_demo_stops_after_the_sync_worker_delivered_to_its_fake_provider(tmp_path: Path):
    """Ctrl-C while the demo's members stream to its fake Mailchimp: the sync worker's last
    deliveries still reach it (the fake stops after the roles), so the demo stops at once,
    without retrying against a closed port and holding the profile."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGSTREAM_")}
    env |= {"SEGSTREAM_HTTP_PORT": str(port), "SEGSTREAM_PARTITIONS": "2", "COLUMNS": "120"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "up", "--demo", "--demo-rate", "3000"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(port)
        synced = _wait_for_sync(port, at_least=1)
        _wait_for_sync(port, at_least=synced + 1)  # stop while deliveries are flowing
    finally:
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == 0, output
    assert "stopped cleanly" in output
    assert "ConnectError" not in output and "holding profile" not in output, output
    assert time.monotonic() - stopped_at < 30, output


def _wait_for_sync(port: int, at_least: int) -> int:
    """Poll /metrics until the sync worker confirmed `at_least` changes; the count."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith("segstream_sync_members_synced_total "):
                synced = int(float(line.split()[1]))
                if synced >= at_least:
                    return synced
        time.sleep(0.05)
    raise AssertionError(f"the demo's sync worker never confirmed {at_least} changes")


def _kind(process: psutil.Process) -> str:
    name = " ".join(process.cmdline())
    return "tansu" if "tansu" in name else "valkey" if "valkey" in name else name


def _wait_ready(port: int) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2)
            if answer.status_code == 200:
                body: dict[str, object] = answer.json()
                return body
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("segstream up never became ready")
