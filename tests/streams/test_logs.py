"""Logs as an operator reads them: JSON lines with their fields, the level honoured, secrets
redacted; and `segstream process` writing JSON lines when asked."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from streams.ops.logs import (
    Redactor,
    bind,
    build_handler,
    configure_logging,
    log_context,
    register_credentials,
)
from streams.settings import Settings
from tests.providers.harness import Harness
from tests.streams.helpers import create_topics, role_env, wait_for

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO, Redactor]]:
    """A private logger writing JSON through the process's handler setup into a buffer."""
    stream, redactor = io.StringIO(), Redactor()
    logger = logging.getLogger(f"segstream.test.{id(stream)}")
    logger.propagate, logger.level = False, logging.DEBUG
    logger.addHandler(build_handler("json", stream, redactor=redactor))
    yield logger, stream, redactor
    logger.handlers.clear()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_message_and_context(
    logged: tuple[logging.Logger, io.StringIO, Redactor],
) -> None:
    logger, stream, _ = logged
    with log_context(role="process"):
        logger.info("partition %d: backfill done", 3, extra={"partition": 3, "segment": "vip"})
        with log_context(provider="mailchimp"):
            logger.warning("provider away")
    logger.error("outside")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")
    first, second, outside, failed = _lines(stream)
    assert RFC3339.match(str(first["ts"]))
    assert first == {"ts": first["ts"], "level": "INFO", "logger": logger.name,
                     "message": "partition 3: backfill done", "role": "process",
                     "partition": 3, "segment": "vip"}
    assert (second["level"], second["role"], second["provider"]) == (
        "WARNING", "process", "mailchimp")
    assert "role" not in outside  # the context ended with its block
    assert failed["level"] == "ERROR" and "RuntimeError: boom" in str(failed["exception"])


async def test_tasks_inherit_the_context_bound_before_they_start(
    logged: tuple[logging.Logger, io.StringIO, Redactor],
) -> None:
    logger, stream, _ = logged

    async def role() -> None:
        bind(role="sync")
        await asyncio.create_task(asyncio.sleep(0))
        logger.info("in the role")

    await asyncio.create_task(role())
    logger.info("in the test")
    in_role, in_test = _lines(stream)
    assert in_role["role"] == "sync" and "role" not in in_test


def test_secrets_are_redacted_wherever_they_appear(
    logged: tuple[logging.Logger, io.StringIO, Redactor],
) -> None:
    logger, stream, redactor = logged
    redactor.register("tok-3f9a1c22e0", "a-secret-key-of-thirty-two-chars-xx")
    logger.info("token %s and key %s", "tok-3f9a1c22e0", "a-secret-key-of-thirty-two-chars-xx")
    logger.info("headers %s", {"Authorization": "Bearer abc.def-123"})
    logger.info("redis at redis://:s3cretpw@cache:6379/0 and https://u:pw2@x.example/a")
    logger.info("GET /3.0/lists?apikey=0123456789abcdef0123456789abcdef-us21&count=5")
    logger.info("ActiveCampaign said %s", {"api_key": "ac-key-9911", "api_url": "https://a.b"})
    try:
        raise ValueError("bad token tok-3f9a1c22e0")
    except ValueError:
        logger.exception("failed", extra={"detail": "Basic dXNlcjpwYXNz"})
    text = stream.getvalue()
    for secret in ("tok-3f9a1c22e0", "a-secret-key-of-thirty-two", "abc.def-123", "s3cretpw",
                   "pw2", "0123456789abcdef", "ac-key-9911", "dXNlcjpwYXNz"):
        assert secret not in text
    lines = _lines(stream)
    assert lines[2]["message"] == ("redis at redis://:[redacted]@cache:6379/0 and "
                                   "https://u:[redacted]@x.example/a")
    assert "https://a.b" in str(lines[4]["message"])  # where, not who: kept
    assert "[redacted]" in str(lines[5]["exception"])


def test_provider_credentials_register_only_their_secret_values() -> None:
    from streams.ops.logs import secrets

    register_credentials({"api_url": "https://acct.api-us1.com", "api_key": "ak-77aa88bb99"})
    assert secrets.redact("https://acct.api-us1.com ak-77aa88bb99") == (
        "https://acct.api-us1.com [redacted]")


def test_level_and_format_come_from_configure_logging() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    try:
        configure_logging("json", "WARNING", stream=stream)
        logging.getLogger("segstream.test.level").info("not written")
        logging.getLogger("segstream.test.level").warning("written")
        logging.getLogger("httpx").warning("httpx at warning")
        logging.getLogger("httpx").info("HTTP Request: GET https://x/?token=1")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert [line["message"] for line in _lines(stream)] == ["written", "httpx at warning"]


def test_text_is_readable_with_its_fields() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("segstream.test.text")
    logger.propagate = False
    logger.addHandler(build_handler("text", stream))
    try:
        with log_context(role="api"):
            logger.warning("slow", extra={"partition": 2})
    finally:
        logger.handlers.clear()
    line = stream.getvalue().strip()
    assert line.endswith("WARNING segstream.test.text: slow  role=api partition=2")


@pytest.mark.parametrize(("variable", "value"), [("SEGSTREAM_LOG_FORMAT", "xml"),
                                                 ("SEGSTREAM_LOG_LEVEL", "loud")])
def test_a_bad_log_setting_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str,
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=variable):
        Settings.from_env()


async def test_segstream_process_writes_json_lines(settings: Settings, tmp_path: Path) -> None:
    """A real `segstream process`: every stderr line is a JSON object with the fields, the
    startup lines included, and the token never appears."""
    await create_topics(settings)
    token = "log-test-token-81c2f"
    env = role_env(settings, SEGSTREAM_LOG_FORMAT="json", SEGSTREAM_LOG_LEVEL="info",
                   SEGSTREAM_API_TOKEN=token, SEGSTREAM_SECRET_KEY="k" * 40)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.cli", "process", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert process.stderr is not None
    seen: list[dict[str, object]] = []
    try:
        async with asyncio.timeout(60):
            while line := await process.stderr.readline():
                seen.append(json.loads(line))
                if "assigned partitions" in str(seen[-1]["message"]):
                    break
    finally:
        process.send_signal(signal.SIGINT)
        rest = await process.stderr.read()
        await process.wait()
    seen += [json.loads(line) for line in rest.splitlines() if line.strip()]
    assert process.returncode == 0
    assigned = [line for line in seen if "assigned partitions" in str(line["message"])]
    assert assigned and assigned[0]["role"] == "process" and assigned[0]["level"] == "INFO"
    assert all(RFC3339.match(str(line["ts"])) and line["logger"] for line in seen)
    assert any(str(line["message"]).startswith("Kafka: ") for line in seen)  # startup line
    assert token not in json.dumps(seen)


async def test_a_provider_that_stays_away_is_logged_once_then_once_when_back(
    settings: Settings, redis_client: Redis, mailchimp: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Many held retries of a provider that answers 5xx: one WARNING when it goes, one INFO
    when it delivers again, nothing per retry above DEBUG."""
    from tests.streams.sync.test_worker import FAST, all_committed, change, send, setup_target
    from tests.streams.sync.test_worker import worker as sync_worker

    settings = settings.with_changes(secret_key=SecretStr("s" * 40), session_timeout_ms=3000)
    await setup_target(settings, redis_client, mailchimp)
    mailchimp.fake.faults.rate_5xx = 1.0
    await send(settings, [change("seg-vip", f"l{i}", True) for i in range(5)])
    caplog.set_level(logging.INFO, logger="streams.sync.worker")
    async with sync_worker(settings, redis_client, dataclasses.replace(FAST, max_attempts=2)
                           ) as (counters, _):
        await wait_for(lambda: asyncio.sleep(0, counters.outages >= 4), what="held retries")
        mailchimp.fake.faults.rate_5xx = 0.0
        await wait_for(lambda: all_committed(settings), what="offsets committed")
    said = [(r.levelname, r.getMessage()) for r in caplog.records
            if r.name == "streams.sync.worker" and r.levelno >= logging.INFO]
    warnings = [m for level, m in said if level != "INFO"]
    assert len(warnings) == 1 and "unavailable for profile" in warnings[0], said
    assert sum("delivers again" in m for _, m in said) == 1, said
    assert sum("holding profile" in m for _, m in said) == 1, said
