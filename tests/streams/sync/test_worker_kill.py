"""The sync worker SIGKILLed mid-batch, as a real `segstream sync` process: nothing is lost."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from redis.asyncio import Redis

from streams.settings import Settings
from tests.providers.harness import Harness
from tests.streams.helpers import role_env, wait_for
from tests.streams.sync.test_worker import (
    all_committed,
    change,
    final_members,
    send,
    setup_target,
    sync_settings,  # noqa: F401  (fixture)
)


def _spawn(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    assert settings.secret_key is not None
    env = role_env(settings, SEGSTREAM_SESSION_TIMEOUT_MS="3000", SEGSTREAM_API_TOKEN="t",
                   SEGSTREAM_SECRET_KEY=settings.secret_key.get_secret_value())
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "streams.cli", "sync"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


async def test_worker_killed_mid_batch_then_restarted_delivers_everything(
    sync_settings: Settings, redis_client: Redis, mailchimp: Harness, tmp_path: Path  # noqa: F811
) -> None:
    list_id, tag = await setup_target(sync_settings, redis_client, mailchimp, "VIP")
    assert tag is not None
    mailchimp.fake.faults.latency = 0.05  # calls in flight when the kill lands
    changes = [change("seg-vip", f"k{i}", True) for i in range(400)]
    changes += [change("seg-vip", f"k{i}", False) for i in range(0, 400, 3)]
    await send(sync_settings, changes)
    log = tmp_path / "sync.log"
    worker = _spawn(sync_settings, log)
    try:
        def some_synced() -> bool:
            return any(mailchimp.in_segment(list_id, tag, f"k{i}@shop.test") for i in range(400))

        await wait_for(lambda: asyncio.sleep(0, some_synced()), timeout=60, what="first sync")
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        assert not await all_committed(sync_settings), "killed before it finished"
        mailchimp.fake.faults.latency = 0.0
        worker = _spawn(sync_settings, log)
        await wait_for(lambda: all_committed(sync_settings), timeout=90,
                       what=f"offsets committed (log: {log})")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    want = final_members(changes)
    assert {e: mailchimp.in_segment(list_id, tag, e) for e in want} == want
    assert mailchimp.resubscribes() == 0
