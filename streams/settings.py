"""Runtime settings: the environment read once, in one place, into one frozen object.

Every field of :class:`Settings` is the variable ``SEGSTREAM_<FIELD>`` (``http_port`` is
``SEGSTREAM_HTTP_PORT``); unset or empty variables take the default. Components receive a
`Settings` and never read ``os.environ`` for configuration. Secrets are ``SecretStr``: they show
as ``**********`` in reprs, logs and tracebacks, and are read with ``get_secret_value()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.broker.connection import (
    SASL_PROTOCOLS,
    KafkaConnection,
    SaslMechanism,
    SecurityProtocol,
)

MIN_SECRET_KEY_LENGTH: Final = 32
ENV_PREFIX: Final = "SEGSTREAM_"

Positive = Annotated[int, Field(ge=1)]


class Settings(BaseSettings):
    """Configuration of one segstream process: `Settings()` reads the environment, keyword
    arguments override it (tests, the embedded services' addresses)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True, extra="forbid",
    )

    kafka_bootstrap: str | None = None
    """Unset: `segstream up` starts the embedded broker."""
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    """`SSL` or `SASL_SSL` for TLS; `SASL_*` authenticate with the `kafka_sasl_*` settings."""
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: FilePath | None = None
    """CA bundle that verifies the broker (unset: the system's CAs)."""
    kafka_ssl_certfile: FilePath | None = None
    """Client certificate, for brokers that require mutual TLS (with `kafka_ssl_keyfile`)."""
    kafka_ssl_keyfile: FilePath | None = None
    redis_url: str | None = None
    """Unset: `segstream up` starts the embedded Redis-compatible server."""
    redis_cluster: bool = False
    """`redis_url` names a node of a Redis Cluster (the others are discovered)."""
    topic_prefix: str = ""
    key_prefix: str = "segstream"
    """Prefix of every Redis key."""
    api_token: SecretStr | None = None
    secret_key: SecretStr | None = None
    """Encrypts provider credentials at rest; at least 32 characters (a Fernet key works)."""
    http_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    http_host: str = "127.0.0.1"
    partitions: Positive = 8
    """Partition count of the topics segstream creates."""
    replication_factor: Positive = 1
    run_dir: Path = Path(".segstream/run")
    batch_max: Positive = 20_000
    """Most records one poll hands the processor."""
    commit_group_from: Positive = 2_000
    """A fetched batch this large (a backlog) may leave its Redis commit to a later batch's."""
    commit_group_max: Positive = 60_000
    """The most events one Redis commit covers under a backlog (1: every batch commits)."""
    state_cache: Annotated[int, Field(ge=0)] = 200_000
    """Customer states a processor keeps decoded in memory, over all its partitions."""
    group_id: str = "segstream-processor"
    kafka_idempotence: bool = False
    """Enable the idempotent producer (real Kafka; the embedded broker has no InitProducerId)."""
    session_timeout_ms: Positive = 10_000
    task_idle_ms: Annotated[int, Field(ge=0)] = 300
    """How long a partition's inputs wait for one of them that has records at the broker but
    none fetched, before the others' records go ahead (event-time order across topics)."""
    backfill_chunk: Positive = 2000
    """Customers re-evaluated per backfill step, between live batches."""
    provider_refresh_s: Positive = 900
    """Seconds between refreshes of every provider profile's lists."""
    log_format: Literal["text", "json", "auto"] = "text"
    """Log lines as readable text, JSON objects one a line, or `auto` (text on a terminal)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """The least severe log records written (`-v` on the command line: DEBUG)."""

    @field_validator("secret_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(
                f"must be at least {MIN_SECRET_KEY_LENGTH} characters "
                f"(got {len(value.get_secret_value())}); a Fernet key works"
            )
        return value

    @model_validator(mode="after")
    def _kafka_security_complete(self) -> Settings:
        protocol = self.kafka_security_protocol
        if protocol != "PLAINTEXT" and self.kafka_bootstrap is None:
            raise ValueError(
                f"SEGSTREAM_KAFKA_SECURITY_PROTOCOL={protocol} needs SEGSTREAM_KAFKA_BOOTSTRAP: "
                "the embedded broker `segstream up` starts is plaintext")
        if protocol in SASL_PROTOCOLS:
            missing = [f"{ENV_PREFIX}KAFKA_SASL_{name.upper()}" for name in
                       ("mechanism", "username", "password")
                       if getattr(self, f"kafka_sasl_{name}") is None]
            if missing:
                raise ValueError(f"SEGSTREAM_KAFKA_SECURITY_PROTOCOL={protocol} needs "
                                 f"{', '.join(missing)}")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("SEGSTREAM_KAFKA_SSL_CERTFILE and SEGSTREAM_KAFKA_SSL_KEYFILE go "
                             "together (a client certificate and its key)")
        return self

    def kafka_connection(self) -> KafkaConnection:
        """How the roles reach the broker (set `kafka_bootstrap` first: `up` fills it)."""
        assert self.kafka_bootstrap is not None, "kafka_bootstrap is set before clients open"
        password = self.kafka_sasl_password
        return KafkaConnection(
            bootstrap=self.kafka_bootstrap, security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism, sasl_username=self.kafka_sasl_username,
            sasl_password=password.get_secret_value() if password is not None else None,
            ssl_cafile=self.kafka_ssl_cafile, ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile)

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _any_case(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    @classmethod
    def from_env(cls) -> Settings:
        """`Settings()` with errors that name the variable, for the command line."""
        try:
            return cls()
        except ValidationError as exc:
            raise SettingsError(exc) from None

    def with_changes(self, **changes: Any) -> Settings:
        """A validated copy with `changes` (`model_copy` would skip validation)."""
        return type(self).model_validate({**self.model_dump(), **changes})


class SettingsError(ValueError):
    """Invalid configuration; the message names each variable and what is wrong with it."""

    def __init__(self, error: ValidationError) -> None:
        problems = []
        for item in error.errors():
            if not item["loc"]:  # a rule across variables names them in its message
                problems.append(item["msg"].removeprefix("Value error, "))
                continue
            name = ENV_PREFIX + "_".join(str(part) for part in item["loc"]).upper()
            hidden = any(word in name.lower() for word in ("secret", "token", "password"))
            shown = "" if hidden else f"={item.get('input')!r}"
            problems.append(f"{name}{shown} is invalid: {item['msg']}")
        super().__init__("; ".join(problems))
