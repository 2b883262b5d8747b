"""Settings: every SEGSTREAM_ variable read in one place, errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from streams.settings import Settings, SettingsError


def test_variables_are_read_and_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "SEGSTREAM_KAFKA_BOOTSTRAP": "k:9092", "SEGSTREAM_REDIS_URL": "redis://r:6379/0",
        "SEGSTREAM_TOPIC_PREFIX": "shop.", "SEGSTREAM_HTTP_PORT": "9000",
        "SEGSTREAM_PARTITIONS": "12", "SEGSTREAM_STATE_CACHE": "0",
        "SEGSTREAM_KAFKA_IDEMPOTENCE": "true", "SEGSTREAM_RUN_DIR": "/tmp/x",
        "SEGSTREAM_API_TOKEN": "tok", "SEGSTREAM_SECRET_KEY": "s" * 32,
        "SEGSTREAM_GROUP_ID": "", "SEGSTREAM_NOT_A_SETTING": "ignored",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert (settings.kafka_bootstrap, settings.redis_url) == ("k:9092", "redis://r:6379/0")
    assert (settings.topic_prefix, settings.http_port, settings.partitions) == ("shop.", 9000, 12)
    assert settings.state_cache == 0 and settings.kafka_idempotence is True
    assert settings.run_dir == Path("/tmp/x")
    assert settings.group_id == "segstream-processor"  # empty means the default
    assert settings.api_token is not None and settings.api_token.get_secret_value() == "tok"


def test_secrets_never_show(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGSTREAM_API_TOKEN", "very-secret-token")
    monkeypatch.setenv("SEGSTREAM_SECRET_KEY", "k" * 40)
    settings = Settings.from_env()
    assert "very-secret-token" not in repr(settings) and "k" * 40 not in repr(settings)
    assert "very-secret-token" not in str(settings.model_dump())


@pytest.mark.parametrize(("name", "value", "says"), [
    ("SEGSTREAM_HTTP_PORT", "70000", "SEGSTREAM_HTTP_PORT='70000' is invalid"),
    ("SEGSTREAM_PARTITIONS", "0", "SEGSTREAM_PARTITIONS='0' is invalid"),
    ("SEGSTREAM_BATCH_MAX", "many", "SEGSTREAM_BATCH_MAX='many' is invalid"),
    ("SEGSTREAM_KAFKA_IDEMPOTENCE", "maybe", "SEGSTREAM_KAFKA_IDEMPOTENCE='maybe' is invalid"),
    ("SEGSTREAM_SECRET_KEY", "short", "SEGSTREAM_SECRET_KEY is invalid"),
])
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    assert says in str(caught.value)
    if "SECRET" in name:
        assert "short" not in str(caught.value)  # a bad secret is not echoed


def test_settings_are_frozen_and_copies_are_validated() -> None:
    settings = Settings(kafka_bootstrap="k:1")
    with pytest.raises(ValidationError):
        settings.partitions = 3  # type: ignore[misc]
    changed = settings.with_changes(partitions=3, api_token=SecretStr("t"))
    assert (changed.partitions, changed.kafka_bootstrap) == (3, "k:1")
    with pytest.raises(ValidationError):
        settings.with_changes(partitions=0)
