"""What `segstream up` keeps for its next start and for other shells: the API token and secret
key it generated (owner-only, reused), and where its services are (found from any folder);
and every role refusing to start with a key that cannot read the stored provider profiles."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from streams.app import (
    _published,
    discover_running,
    fill_generated_secrets,
    published_for_user,
    refuse_unreadable_profiles,
    secrets_file,
    user_state_dir,
)
from streams.local.embedded import EmbeddedServices
from streams.settings import Settings
from streams.storage.profiles import ProfileStore
from tests.providers.harness import Harness
from tests.streams.helpers import create_topics, event, role_env

KEY_SAVED = "the key the profiles were saved with, 32+ chars"
KEY_OTHER = "another key, also long enough for the settings"


def _unconfigured(run_dir: Path, **changes: object) -> Settings:
    """Settings as `up` sees them with nothing set (whatever this process's environment)."""
    return Settings(run_dir=run_dir, api_token=None, secret_key=None, kafka_bootstrap=None,
                    redis_url=None).with_changes(**changes)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the keys `up` generates --------------------------------------------------------------


def test_up_keeps_its_generated_keys_owner_only_and_reuses_them(tmp_path: Path) -> None:
    said: list[str] = []
    previous = os.umask(0o000)  # the file is owner-only whatever the umask
    try:
        first = fill_generated_secrets(_unconfigured(tmp_path / "run"), said.append)
    finally:
        os.umask(previous)
    path = secrets_file(first)
    assert _mode(path) == 0o600
    assert first.api_token is not None and first.secret_key is not None
    token, key = first.api_token.get_secret_value(), first.secret_key.get_secret_value()
    assert json.loads(path.read_text()) == {"api_token": token, "secret_key": key}
    assert f"API token (generated for this run): {token}" in said
    assert any(str(path.resolve()) in line for line in said)

    again: list[str] = []
    second = fill_generated_secrets(_unconfigured(tmp_path / "run"), again.append)
    assert second.api_token == first.api_token and second.secret_key == first.secret_key
    assert f"API token (from {path.resolve()}): {token}" in again
    assert not any(key in line for line in said + again)  # the key is never printed
    assert _mode(path) == 0o600


def test_keys_set_in_the_environment_win_and_are_not_written(tmp_path: Path) -> None:
    run = tmp_path / "run"
    given = fill_generated_secrets(_unconfigured(run, api_token=SecretStr("my-token")),
                                   lambda _: None)
    assert given.api_token is not None and given.api_token.get_secret_value() == "my-token"
    kept = json.loads(secrets_file(given).read_text())
    assert set(kept) == {"secret_key"}
    assert given.secret_key is not None and given.secret_key.get_secret_value() == kept[
        "secret_key"]

    said: list[str] = []
    both = _unconfigured(run, api_token=SecretStr("t" * 20), secret_key=SecretStr(KEY_OTHER))
    assert fill_generated_secrets(both, said.append) == both and said == []
    later = fill_generated_secrets(_unconfigured(run, secret_key=SecretStr(KEY_OTHER)),
                                   lambda _: None)
    assert later.secret_key is not None and later.secret_key.get_secret_value() == KEY_OTHER
    assert json.loads(secrets_file(later).read_text())["secret_key"] == kept["secret_key"]


def test_a_readable_secrets_file_is_made_owner_only_and_a_damaged_one_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _unconfigured(tmp_path / "run")
    path = secrets_file(settings)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"api_token": "kept-token", "secret_key": KEY_SAVED}))
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        filled = fill_generated_secrets(settings, lambda _: None)
    assert filled.secret_key is not None and filled.secret_key.get_secret_value() == KEY_SAVED
    assert _mode(path) == 0o600 and "readable by its owner only" in caplog.text

    path.write_text("{not json")
    with pytest.raises(ValueError, match="damaged"):
        fill_generated_secrets(settings, lambda _: None)
    assert path.read_text() == "{not json"  # not replaced by new keys behind the user's back


# -- a key that cannot read the stored profiles -------------------------------------------


async def _saved_profile(redis: Redis, key_prefix: str, mailchimp: Harness) -> str:
    store = ProfileStore(redis, key_prefix, KEY_SAVED)
    profile = await store.create("Shop", "mailchimp", mailchimp.fake.credentials(),
                                 mailchimp.base_url)
    return profile.id


@pytest.mark.parametrize("role", ["api", "sync", "process"])
async def test_a_role_with_another_key_refuses_to_start_and_says_what_to_do(
    settings: Settings, redis_client: Redis, mailchimp: Harness, role: str
) -> None:
    profile_id = await _saved_profile(redis_client, settings.key_prefix, mailchimp)
    env = role_env(settings, SEGSTREAM_SECRET_KEY=KEY_OTHER, SEGSTREAM_API_TOKEN="t" * 20,
                   COLUMNS="400")
    code, _, output = await _segstream(role, env=env)
    assert code == 2, output
    message = " ".join(output.split())
    assert f"`segstream {role}` refuses to start" in message
    assert "cannot decrypt the credentials of 1 of 1 stored auto-responder profiles" in message
    assert f"'Shop' (id {profile_id})" in message
    assert "Start it with the SEGSTREAM_SECRET_KEY they were saved with" in message
    assert f"HDEL {settings.key_prefix}:profiles {profile_id}" in message
    assert KEY_OTHER not in output and KEY_SAVED not in output


async def test_the_check_passes_with_the_saving_key_and_skips_an_unreachable_redis(
    settings: Settings, redis_client: Redis, mailchimp: Harness,
    caplog: pytest.LogCaptureFixture
) -> None:
    await _saved_profile(redis_client, settings.key_prefix, mailchimp)
    await refuse_unreadable_profiles(settings.with_changes(secret_key=KEY_SAVED), "api")
    with pytest.raises(ValueError, match="refuses to start"):
        await refuse_unreadable_profiles(settings.with_changes(secret_key=KEY_OTHER), "api")
    away = settings.with_changes(secret_key=KEY_OTHER, redis_url="redis://127.0.0.1:1/0")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        await refuse_unreadable_profiles(away, "api")
    assert "could not check" in caplog.text and time.monotonic() - started < 10


async def test_up_reads_its_embedded_redis_files_to_check_the_key(
    tmp_path: Path, mailchimp: Harness
) -> None:
    """`up` with the embedded server: the profiles are in its append-only file, read by a server
    started for the check (the first `up` in a folder has none, and checks nothing)."""
    run = tmp_path / "run"
    fresh = _unconfigured(run, secret_key=SecretStr(KEY_OTHER))
    await refuse_unreadable_profiles(fresh, "up")  # nothing stored yet: no server started
    assert not (run / "valkey").exists()
    async with EmbeddedServices(run, kafka=False, redis=True, redis_aof_dir=run / "valkey") as up:
        from streams.storage.client import redis_client

        async with redis_client(up.redis_url) as redis:
            await _saved_profile(redis, fresh.key_prefix, mailchimp)
    await refuse_unreadable_profiles(fresh.with_changes(secret_key=KEY_SAVED), "up")
    with pytest.raises(ValueError) as refused:
        await refuse_unreadable_profiles(fresh, "up")
    message = str(refused.value)
    assert "`segstream up` refuses to start" in message and "'Shop'" in message
    assert str(secrets_file(fresh).resolve()) in message
    assert str((run / "valkey").resolve()) in message


# -- where a running `up` is found ---------------------------------------------------------


def _stale_pid() -> int:
    """The pid of a process that has exited."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, check=True).stdout)


def test_the_state_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.delenv("SEGSTREAM_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert user_state_dir() == tmp_path / "xdg" / "segstream"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_state_dir() == tmp_path / "home" / ".local" / "state" / "segstream"
    monkeypatch.setenv("SEGSTREAM_STATE_DIR", str(tmp_path / "mine"))
    assert user_state_dir() == tmp_path / "mine"


def test_discovery_prefers_the_run_folder_then_the_newest_live_one_and_drops_stale_ones(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("SEGSTREAM_STATE_DIR", str(state))
    state.mkdir()

    def publish(path: Path, pid: int, kafka: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"pid": pid, "kafka_bootstrap": kafka,
                                    "redis_url": f"redis://{kafka}/0"}))

    stale = state / "services-1.json"
    publish(stale, _stale_pid(), "stale:1")
    publish(state / "services-2.json", os.getpid(), "older:1")
    os.utime(state / "services-2.json", (1, 1))
    publish(state / "services-3.json", os.getppid(), "newer:1")
    elsewhere = _unconfigured(tmp_path / "elsewhere" / "run")
    found = discover_running(elsewhere)
    assert (found.kafka_bootstrap, found.redis_url) == ("newer:1", "redis://newer:1/0")
    assert not stale.exists()

    here = _unconfigured(tmp_path / "here" / "run")
    publish(here.run_dir / "services.json", os.getpid(), "here:1")
    assert discover_running(here).kafka_bootstrap == "here:1"
    configured = here.with_changes(kafka_bootstrap="mine:9092")
    assert discover_running(configured).kafka_bootstrap == "mine:9092"
    assert discover_running(configured).redis_url == "redis://here:1/0"


async def test_produce_and_lag_find_a_running_up_from_another_folder(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run published as `up` publishes it (this test's process stands in for `up`); `lag`
    and `produce` started in another folder, with no service configured, find its broker."""
    await create_topics(settings)
    state = tmp_path / "state"
    monkeypatch.setenv("SEGSTREAM_STATE_DIR", str(state))
    up = settings.with_changes(run_dir=tmp_path / "up-folder" / ".segstream" / "run")
    elsewhere = tmp_path / "another-folder"
    elsewhere.mkdir()
    env = {k: v for k, v in role_env(settings).items()
           if k not in {"SEGSTREAM_KAFKA_BOOTSTRAP", "SEGSTREAM_REDIS_URL"}}
    env["SEGSTREAM_STATE_DIR"] = str(state)
    with _published(up), published_for_user(up) as published:
        assert published == state / f"services-{os.getpid()}.json"
        assert _mode(published) == 0o600 and _mode(state) == 0o700
        code, out, err = await _segstream("lag", "--json", env=env, cwd=elsewhere)
        assert code == 0, err
        assert f"{settings.topic_prefix}orders" in {r["topic"] for r in json.loads(out)}
        line = orjson.dumps(event("customer.created", "c-found", "found-1"))
        code, out, err = await _segstream("produce", "-", env=env, cwd=elsewhere, stdin=line)
        assert code == 0 and "sent 1 to" in err, err
    assert not published.exists() and not (up.run_dir / "services.json").exists()
    code, out, err = await _segstream("lag", env=env, cwd=elsewhere)
    assert code == 2 and "needs a broker" in " ".join(err.split()), err


async def _segstream(*args: str, env: dict[str, str], cwd: Path | None = None,
                     stdin: bytes | None = None) -> tuple[int, str, str]:
    """A `segstream` subprocess that leaves this loop running (it serves the fakes)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.cli", *args, env=env, cwd=cwd,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.slow
def test_up_restarted_keeps_its_token_and_is_found_from_another_folder(tmp_path: Path) -> None:
    """The whole story: `up` prints where its keys are, `lag` in another folder finds it, and
    the next `up` in the same folder answers to the same token."""
    folder, elsewhere, state = tmp_path / "shop", tmp_path / "elsewhere", tmp_path / "state"
    folder.mkdir()
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGSTREAM_")}
    env |= {"SEGSTREAM_PARTITIONS": "2", "SEGSTREAM_STATE_DIR": str(state), "COLUMNS": "400"}
    tokens = []
    for _ in range(2):
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "up"], cwd=folder,
            env=env | {"SEGSTREAM_HTTP_PORT": str(port)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            _wait_ready(port)
            lag = subprocess.run([sys.executable, "-m", "streams.cli", "lag", "--json"],
                                 env=env, cwd=elsewhere, capture_output=True, timeout=60)
            assert lag.returncode == 0, lag.stderr.decode()
        finally:
            proc.send_signal(signal.SIGINT)
            output = proc.communicate(timeout=60)[0].decode()
        assert proc.returncode == 0, output
        assert "\nexport SEGSTREAM_KAFKA_BOOTSTRAP=127.0.0.1:" in output
        tokens.append(output.split("API token (")[1].split("): ")[1].split()[0])
    kept = folder / ".segstream" / "run" / "secrets.json"
    assert tokens[0] == tokens[1] == json.loads(kept.read_text())["api_token"]
    assert _mode(kept) == 0o600
    assert list(state.glob("services-*.json")) == []


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("segstream up never became ready")
