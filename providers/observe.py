"""What a provider client tells whoever watches it: each HTTP attempt, retries, limit waits.

``providers`` knows nothing of metrics; the runtime implements ``CallObserver`` (Prometheus
counters and histograms in ``streams.ops.metrics``) and hands it to ``ProviderLimits``, the one
object every client of a process shares, so every account's session reports to it. Each method
is called once per HTTP attempt or wait, from the event loop, and must not block.
"""

from __future__ import annotations

from typing import Final, Protocol


class CallObserver(Protocol):
    """Receives what provider sessions observe."""

    def call_finished(self, provider: str, outcome: str, status: int | None,
                      seconds: float) -> None:
        """One HTTP attempt ended: ``outcome`` is ``ok``, ``rate_limited``, ``transient``,
        ``auth``, ``permanent`` or ``network``; ``status`` the HTTP status (None when no
        answer came)."""

    def retried(self, provider: str) -> None:
        """A call is tried again after a retriable failure."""

    def limit_waited(self, limit: str, seconds: float) -> None:
        """A call waited ``seconds`` for a permit of the limiter ``limit`` (a provider, or
        ``<provider>.<endpoint>``): a provider's rate or concurrency limit, or its
        ``Retry-After``."""


class NoObserver:
    """A ``CallObserver`` that keeps nothing."""

    def call_finished(self, provider: str, outcome: str, status: int | None,
                      seconds: float) -> None:
        pass

    def retried(self, provider: str) -> None:
        pass

    def limit_waited(self, limit: str, seconds: float) -> None:
        pass


NO_OBSERVER: Final[CallObserver] = NoObserver()

WAIT_REPORTED_S: Final = 0.001
"""A permit taken after less than this is not a wait worth reporting."""
