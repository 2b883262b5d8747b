"""How every Kafka client segstream opens reaches the broker: the bootstrap servers and the
security of the connection (TLS, SASL), one value built from the settings.

Every producer, consumer, admin and metadata client takes its options from `client_options`, so
a broker that needs TLS or SASL (a managed Kafka) is configured once, in the environment. A bare
bootstrap string is a plaintext connection without authentication (the embedded broker, tests,
tools).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Final, Literal

from aiokafka.helpers import create_ssl_context

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

TLS_PROTOCOLS: Final = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS: Final = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


@dataclass(frozen=True)
class KafkaConnection:
    """The broker's address and how to talk to it.

    `ssl_cafile` verifies the broker against a private CA (the system's CAs otherwise);
    `ssl_certfile` and `ssl_keyfile` present a client certificate (mutual TLS).
    """

    bootstrap: str
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client: `bootstrap_servers` and the security."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap, "security_protocol": self.security_protocol,
        }
        if self.security_protocol in TLS_PROTOCOLS:
            options["ssl_context"] = self._ssl_context
        if self.security_protocol in SASL_PROTOCOLS:
            options |= {"sasl_mechanism": self.sasl_mechanism,
                        "sasl_plain_username": self.sasl_username,
                        "sasl_plain_password": self.sasl_password}
        return options

    @cached_property
    def _ssl_context(self) -> ssl.SSLContext:
        # one context per connection value: its files are read once, not per client
        context: ssl.SSLContext = create_ssl_context(
            cafile=_name(self.ssl_cafile), certfile=_name(self.ssl_certfile),
            keyfile=_name(self.ssl_keyfile))
        return context


KafkaTarget = KafkaConnection | str
"""A connection, or a bare bootstrap string for a plaintext broker without authentication."""


def client_options(kafka: KafkaTarget) -> dict[str, Any]:
    """`KafkaConnection.client_options` of `kafka`, a bare string being a plaintext one."""
    if isinstance(kafka, str):
        return {"bootstrap_servers": kafka}
    return kafka.client_options()


def bootstrap_of(kafka: KafkaTarget) -> str:
    return kafka if isinstance(kafka, str) else kafka.bootstrap


def _name(path: Path | None) -> str | None:
    return None if path is None else str(path)
