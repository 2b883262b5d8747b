"""Reading a `/metrics` answer as a person's Prometheus would: families, samples, values."""

from __future__ import annotations

import socket
from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples `name` whose labels include `labels` (0 when there is none)."""
    return sum(s.value for s in samples(text) if s.name == name and _has(s.labels, labels))


def has_sample(text: str, name: str, **labels: str) -> bool:
    return any(s.name == name and _has(s.labels, labels) for s in samples(text))


def _has(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


async def scrape(http: httpx.AsyncClient) -> str:
    answer = await http.get("/metrics")
    assert answer.status_code == 200, answer.text
    return answer.text
