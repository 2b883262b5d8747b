"""The security check of a chaos run: no secret shows in what the run leaves readable.

A run knows three secrets: the fake provider's API key (a profile's credentials), the API
token and `SEGSTREAM_SECRET_KEY`. None may appear in any role's log, in a service's files
(the Redis append-only file holds the credentials encrypted, never in the clear) or in an
answer of the HTTP API. Each finding names the secret by kind, never by value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

READ_PATHS_MAX = 40


@dataclass(frozen=True)
class Leak:
    secret: str
    """Which secret: `provider api key`, `api token` or `secret key`."""
    where: str


def leaks_in_files(root: Path, secrets: Mapping[str, str]) -> list[Leak]:
    """Every file under `root` that holds a secret in the clear."""
    found: list[Leak] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found.extend(Leak(kind, str(path.relative_to(root)))
                     for kind, value in secrets.items() if value.encode() in data)
    return found


async def leaks_in_api(base_url: str, token: str, paths: Iterable[str],
                       secrets: Mapping[str, str]) -> tuple[list[Leak], list[str]]:
    """GET each path with the token; the leaks in the answers, and the paths that did not
    answer 200 (a check that read nothing proves nothing)."""
    found: list[Leak] = []
    failed: list[str] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        for path in list(paths)[:READ_PATHS_MAX]:
            answer = await client.get(path)
            if answer.status_code != 200:
                failed.append(f"{path}: {answer.status_code}")
            found.extend(Leak(kind, f"GET {path}")
                         for kind, value in secrets.items() if value in answer.text)
    return found, failed
