"""serve_fake on its own, and the standalone command the demo uses."""

from __future__ import annotations

import asyncio
import signal
import sys

import httpx
import orjson
import pytest

from providers.base import Member
from providers.errors import TransientError
from providers.fakes.base import Faults
from providers.fakes.mailchimp import MailchimpFake
from providers.fakes.server import build_fake, serve_fake
from providers.registry import make_client
from providers.retry import NoBackoff, Retry


async def test_serve_fake_gives_a_working_base_url() -> None:
    fake = MailchimpFake()
    list_id, _ = fake.seed_list("Served")
    async with serve_fake(fake) as base_url:
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/3.0")
        async with make_client("mailchimp", fake.credentials(), base_url) as client:
            assert (await client.upsert_members(list_id, [Member("a@shop.test")])).ok
    assert fake.state.member(list_id, "a@shop.test") is not None


async def test_a_dropped_connection_is_a_transient_error() -> None:
    fake = MailchimpFake(Faults(drop_rate=1.0))
    async with (
        serve_fake(fake) as base_url,
        make_client("mailchimp", fake.credentials(), base_url,
                    retry=Retry(NoBackoff(), 1)) as client,
    ):
        with pytest.raises(TransientError):
            await client.validate_credentials()
    assert fake.stats["drops"] == 1


def test_build_fake_names_the_provider() -> None:
    assert build_fake("sendlane").api_prefix == "/v2"
    with pytest.raises(ValueError, match="unknown provider"):
        build_fake("aweber")


async def test_standalone_command_serves_until_interrupted() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "providers.fakes.server", "mailchimp",
        "--list", "Demo", "--segment", "VIP",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        info = orjson.loads(await asyncio.wait_for(process.stdout.readline(), 20))
        assert info["provider"] == "mailchimp" and info["lists"][0]["segments"].keys() == {"VIP"}
        async with make_client("mailchimp", info["credentials"], info["base_url"]) as client:
            lists = await client.fetch_lists()  # listening once the line is printed
        assert [lst.name for lst in lists] == ["Demo"]
    finally:
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_unknown_routes_answer_in_the_providers_shape() -> None:
    fake = MailchimpFake()
    key = fake.credentials()["api_key"]
    async with serve_fake(fake) as base_url, httpx.AsyncClient(auth=("any", key)) as http:
        answer = await http.get(f"{base_url}/nowhere")
    assert answer.status_code == 404
    assert answer.json()["title"] == "Resource Not Found"
