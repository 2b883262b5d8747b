"""The API under fire: every route of its OpenAPI document refuses a missing or wrong bearer
token, hostile `POST /events` bodies get a 4xx in the error shape (never a 500), and a role's
log never shows its secret key, its token or a provider's credentials."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from streams.api import ApiDeps, create_app
from streams.ops.http import HealthChecks
from streams.settings import Settings
from streams.storage.definitions import DefinitionStore
from streams.storage.profiles import ProfileStore
from streams.storage.state import StateStore
from tests.api.conftest import Api
from tests.api.test_auth import assert_error
from tests.providers.harness import Harness
from tests.streams.helpers import create_topics, role_env

OPEN = re.compile(r"^/(health/.*|metrics|openapi\.json|docs.*)$")
"""Open on purpose: health, metrics and the API's own description."""
_BODY_METHODS = {"post", "put", "patch"}


@contextlib.asynccontextmanager
async def in_process_app(settings: Settings, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    """An unauthenticated client of the API app, in process (no producer: nothing here gets
    as far as sending)."""
    assert settings.kafka_bootstrap and settings.secret_key
    checks = HealthChecks(settings.kafka_bootstrap, redis)
    profiles = ProfileStore(redis, settings.key_prefix, settings.secret_key.get_secret_value())
    app = create_app(ApiDeps(
        settings=settings, definitions=DefinitionStore(redis, settings.key_prefix),
        states=StateStore(redis, settings.key_prefix), producer=None, checks=checks,
        metrics=None, partitions=settings.partitions, profiles=profiles))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://api") as client:
            yield client
    finally:
        await checks.close()


async def _operations(client: httpx.AsyncClient, token: str) -> list[tuple[str, str]]:
    """(method, path with its parameters filled in) of every operation the API describes."""
    answer = await client.get("/openapi.json", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    paths: dict[str, dict[str, Any]] = answer.json()["paths"]
    return [(method, re.sub(r"\{[^}]+\}", "x-1", path))
            for path, operations in sorted(paths.items()) if not OPEN.match(path)
            for method in sorted(operations) if method in {"get", "delete", *_BODY_METHODS}]


@pytest.mark.parametrize("authorization", [
    None, "Bearer wrong-token", "Bearer", "Bearer test-token-012345678", "Basic dGVzdDp0ZXN0",
    "Bearer test-token-0123456789x", "test-token-0123456789",
])
async def test_every_described_route_refuses_a_missing_or_wrong_token(
    api_settings: Settings, redis_client: Redis, authorization: str | None
) -> None:
    assert api_settings.api_token is not None
    token = api_settings.api_token.get_secret_value()
    async with in_process_app(api_settings, redis_client) as client:
        operations = await _operations(client, token)
        assert len(operations) >= 12, operations  # segments, customers, events, profiles
        headers = {} if authorization is None else {"Authorization": authorization}
        for method, path in operations:
            body = {"json": {}} if method in _BODY_METHODS else {}
            answer = await client.request(method, path, headers=headers, **body)
            error = assert_error(answer, 401, "unauthorized")
            assert token not in error["message"], (method, path)
            assert answer.headers["www-authenticate"] == "Bearer", (method, path)


async def test_every_contract_route_is_described_and_none_is_left_out_as_open(
    api_settings: Settings, redis_client: Redis
) -> None:
    assert api_settings.api_token is not None
    token = api_settings.api_token.get_secret_value()
    async with in_process_app(api_settings, redis_client) as client:
        described = (await client.get("/openapi.json", headers={
            "Authorization": f"Bearer {token}"})).json()["paths"]
    assert {"/fields", "/segments", "/segments/{segment_id}", "/segments/{segment_id}/members",
            "/customers/{customer_id}", "/events", "/providers/profiles",
            "/providers/profiles/{profile_id}", "/providers/profiles/{profile_id}/sync",
            "/providers/profiles/{profile_id}/lists"} <= set(described)
    assert [path for path in described if OPEN.match(path)] == []


# -- hostile bodies for POST /events ----------------------------------------------------

_EVENT = {"event_id": "e-1", "type": "order.placed", "occurred_at": "2026-11-28T17:32:00Z",
          "customer_id": "c-1", "data": {"order_id": "o-1", "total": 10}}
_VALID = orjson.dumps(_EVENT)


def _nested(depth: int) -> bytes:
    return (_VALID[:-2] + b',"x":' + b"[" * depth + b"]" * depth + b"}}")


HOSTILE: list[tuple[str, bytes, dict[str, str]]] = [
    ("invalid UTF-8 in a value", _VALID.replace(b'"c-1"', b'"c-\xff"'), {}),
    ("invalid UTF-8 in an ignored field", _VALID[:-1] + b',"note":"\xc3\x28"}', {}),
    ("a lone surrogate", _VALID.replace(b'"c-1"', b'"\\ud800"'), {}),
    ("NaN", _VALID.replace(b"10}", b"NaN}"), {}),
    ("Infinity", _VALID.replace(b"10}", b"Infinity}"), {}),
    ("1e999", _VALID.replace(b"10}", b"1e999}"), {}),
    ("NaN as a decimal string", _VALID.replace(b"10}", b'"NaN"}'), {}),
    ("an integer past 64 bits", _VALID.replace(b"10}", b"18446744073709551616}"), {}),
    ("nesting within orjson's depth but past its encoder's", _nested(300), {}),
    ("nesting at orjson's depth", _nested(1020), {}),
    ("nesting past every depth", _nested(100_000), {}),
    ("a body of 4 MiB and one byte", b'"' + b"x" * (4 << 20) + b'"', {}),
    ("a 4 MiB string in an event", _VALID.replace(b'"c-1"', b'"' + b"c" * (4 << 20) + b'"'), {}),
    ("duplicate keys, the last one wrong", _VALID[:-1] + b',"customer_id":7}', {}),
    ("a year past the range once offset", _VALID.replace(b"2026-11-28T17:32:00Z",
                                                          b"0001-01-01T00:00:00+01:00"), {}),
    ("year 0", _VALID.replace(b"2026", b"0000"), {}),
    ("an unknown type", _VALID.replace(b"order.placed", b"order.exploded"), {}),
    ("a missing field", orjson.dumps({k: v for k, v in _EVENT.items() if k != "data"}), {}),
    ("a wrong type", orjson.dumps({**_EVENT, "data": []}), {}),
    ("no events", b"[]", {}),
    ("a list of lists", b"[[]]", {}),
    ("null", b"null", {}),
    ("a string", b'"event"', {}),
    ("1001 events", orjson.dumps([_EVENT] * 1001), {}),
    ("an empty body", b"", {}),
    ("not JSON", b"{'event_id': 1}", {}),
    ("a form", b"a=1", {"Content-Type": "application/x-www-form-urlencoded"}),
    ("JSON declared as text", _VALID, {"Content-Type": "text/plain"}),
]


@pytest.mark.parametrize(("what", "body", "headers"), HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_hostile_event_bodies_get_a_4xx_in_the_error_shape(
    api: Api, what: str, body: bytes, headers: dict[str, str]
) -> None:
    answer = await api.client.post("/events", content=body, headers=headers)
    assert 400 <= answer.status_code < 500, (what, answer.status_code, answer.text[:300])
    assert_error(answer, answer.status_code)
    assert len(answer.content) < 64 << 10, what  # no echo of a huge body


# -- secrets stay out of the logs ---------------------------------------------------------


async def test_a_role_never_logs_its_secret_key_token_or_provider_credentials(
    settings: Settings, mailchimp: Harness, tmp_path: Path
) -> None:
    """`segstream api -v` with a known key and token; a profile created through it (its
    credentials checked against the fake provider, its lists synced); none of the three in
    anything the role wrote."""
    secret, token = "s3cret-key-" + "k" * 30, "t0ken-" + "t" * 20
    credentials = mailchimp.fake.credentials()
    await create_topics(settings)
    port = await _free_port()
    env = role_env(settings, SEGSTREAM_SECRET_KEY=secret, SEGSTREAM_API_TOKEN=token,
                   SEGSTREAM_HTTP_PORT=str(port), COLUMNS="5000")  # no line wraps in a value
    log = tmp_path / "api.log"
    with log.open("wb") as written:
        role = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streams.cli", "-v", "api", env=env, stdout=written,
            stderr=asyncio.subprocess.STDOUT)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            await _until_ready(client, role)
            created = await client.post("/providers/profiles", json={
                "name": "Shop", "provider": "mailchimp", "credentials": credentials,
                "base_url": mailchimp.base_url})
            assert created.status_code == 201, created.text
            profile = created.json()["id"]
            synced = await client.post(f"/providers/profiles/{profile}/sync")
            assert synced.status_code == 200, synced.text
            wrong = {**credentials, "api_key": "wrong" + credentials["api_key"]}
            refused = await client.post("/providers/profiles", json={
                "name": "Bad", "provider": "mailchimp", "credentials": wrong,
                "base_url": mailchimp.base_url})
            assert 400 <= refused.status_code < 500, refused.text
            await client.get("/segments", headers={"Authorization": f"Bearer {token}x"})
    finally:
        role.terminate()
        await asyncio.wait_for(role.wait(), 60)
    output = log.read_text(errors="replace")
    assert "HTTP: http://" in output, output  # it did run, and logged
    for name, value in [("secret key", secret), ("API token", token),
                        *((f"credential {k}", v) for k, v in credentials.items()),
                        ("refused credential", wrong["api_key"])]:
        assert value not in output, f"the {name} is in the role's output:\n{output}"


async def _free_port() -> int:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()
    return port


async def _until_ready(client: httpx.AsyncClient, role: asyncio.subprocess.Process) -> None:
    for _ in range(300):
        if role.returncode is not None:
            raise AssertionError(f"the role exited with {role.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if (await client.get("/health/ready")).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the role never became ready")

