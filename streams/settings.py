"""Runtime settings: the environment read once, in one place, into a frozen object.

Every ``SEGSTREAM_*`` variable the runtime understands is listed in ``_ENV`` below
and parsed by :meth:`Settings.from_env`. Nothing else in the package reads
``os.environ`` for configuration; components receive a :class:`Settings`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

MIN_SECRET_KEY_LENGTH: Final = 32

_T = TypeVar("_T")


class Secret:
    """A string that does not show itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Configuration of one segstream process. Build it with :meth:`from_env`."""

    kafka_bootstrap: str | None = None
    redis_url: str | None = None
    topic_prefix: str = ""
    key_prefix: str = "segstream"
    api_token: Secret | None = None
    secret_key: Secret | None = None
    http_port: int = 8080
    http_host: str = "127.0.0.1"
    partitions: int = 8
    replication_factor: int = 1
    run_dir: Path = Path(".segstream/run")
    batch_max: int = 20_000
    commit_group_from: int = 2_000
    """A fetched batch this large (a backlog) may leave its Redis commit to a later batch's."""
    commit_group_max: int = 60_000
    """The most events one Redis commit covers under a backlog (1: every batch commits)."""
    state_cache_size: int = 200_000
    group_id: str = "segstream-processor"
    idempotent_producer: bool = False
    session_timeout_ms: int = 10_000
    backfill_chunk: int = 2000
    provider_refresh_s: int = 900

    def __post_init__(self) -> None:
        if self.secret_key is not None and len(self.secret_key.get()) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(
                f"SEGSTREAM_SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters "
                f"(got {len(self.secret_key.get())}); a Fernet key works"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every ``SEGSTREAM_*`` variable; unset or empty ones take the default."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field, (variable, parse) in _ENV.items():
            raw = env.get(variable, "").strip()
            if raw:
                values[field] = _parse(variable, raw, parse)
        return cls(**values)

    def with_services(self, kafka_bootstrap: str, redis_url: str) -> Settings:
        """A copy pointing at these services (e.g. the embedded ones just started)."""
        return dataclasses.replace(self, kafka_bootstrap=kafka_bootstrap, redis_url=redis_url)


def _parse(variable: str, raw: str, parse: Callable[[str], _T]) -> _T:
    try:
        return parse(raw)
    except ValueError as exc:
        raise ValueError(f"{variable}={raw!r} is invalid: {exc}") from None


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("expected an integer") from None
    if value < 1:
        raise ValueError("expected an integer of at least 1")
    return value


def _non_negative_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("expected an integer") from None
    if value < 0:
        raise ValueError("expected an integer of at least 0")
    return value


def _port(raw: str) -> int:
    value = _non_negative_int(raw)
    if value > 65535:
        raise ValueError("expected a port number, 0 (any free port) to 65535")
    return value


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false (1/0, yes/no, on/off)")


def _str(raw: str) -> str:
    return raw


_ENV: Final[dict[str, tuple[str, Callable[[str], object]]]] = {
    "kafka_bootstrap": ("SEGSTREAM_KAFKA_BOOTSTRAP", _str),
    "redis_url": ("SEGSTREAM_REDIS_URL", _str),
    "topic_prefix": ("SEGSTREAM_TOPIC_PREFIX", _str),
    "key_prefix": ("SEGSTREAM_KEY_PREFIX", _str),
    "api_token": ("SEGSTREAM_API_TOKEN", Secret),
    "secret_key": ("SEGSTREAM_SECRET_KEY", Secret),
    "http_port": ("SEGSTREAM_HTTP_PORT", _port),
    "http_host": ("SEGSTREAM_HTTP_HOST", _str),
    "partitions": ("SEGSTREAM_PARTITIONS", _positive_int),
    "replication_factor": ("SEGSTREAM_REPLICATION_FACTOR", _positive_int),
    "run_dir": ("SEGSTREAM_RUN_DIR", Path),
    "batch_max": ("SEGSTREAM_BATCH_MAX", _positive_int),
    "commit_group_from": ("SEGSTREAM_COMMIT_GROUP_FROM", _positive_int),
    "commit_group_max": ("SEGSTREAM_COMMIT_GROUP_MAX", _positive_int),
    "state_cache_size": ("SEGSTREAM_STATE_CACHE", _non_negative_int),
    "group_id": ("SEGSTREAM_GROUP_ID", _str),
    "idempotent_producer": ("SEGSTREAM_KAFKA_IDEMPOTENCE", _bool),
    "session_timeout_ms": ("SEGSTREAM_SESSION_TIMEOUT_MS", _positive_int),
    "backfill_chunk": ("SEGSTREAM_BACKFILL_CHUNK", _positive_int),
    "provider_refresh_s": ("SEGSTREAM_PROVIDER_REFRESH_S", _positive_int),
}
