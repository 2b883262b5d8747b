"""What the API needs from the running system, handed in by the composition root.

`create_app` keeps the one `ApiDeps` on the app; every route asks for it as a parameter
`deps: Deps`, so a route says what it uses and a test can replace it
(`app.dependency_overrides[get_deps]`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from segments.evaluator import SegmentIndex
from streams.broker.topics import TopicNames
from streams.clock import wall_clock_ms
from streams.ops.http import HealthChecks, MetricsSource
from streams.settings import Settings
from streams.storage.definitions import DefinitionSet, DefinitionStore
from streams.storage.profiles import ProfileStore
from streams.storage.state import StateStore


@dataclass
class ApiDeps:
    """Services of one API process. `producer` is a started AIOKafkaProducer (for POST /events);
    `partitions` is the shared partition count of the input topics; `profiles` keeps the
    auto-responder profiles and opens their provider clients (with the provider limits the
    sync workers share, given to it by the composition root)."""

    settings: Settings
    definitions: DefinitionStore
    states: StateStore
    producer: Any
    checks: HealthChecks
    metrics: MetricsSource | None
    partitions: int
    profiles: ProfileStore
    clock: Callable[[], int] = wall_clock_ms
    _cached: tuple[DefinitionSet, SegmentIndex] | None = field(default=None, repr=False)

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.settings.topic_prefix)

    async def current(self) -> tuple[DefinitionSet, SegmentIndex]:
        """The live definitions and their compiled index, reloaded when the revision moved."""
        revision = await self.definitions.revision()
        if self._cached is None or self._cached[0].revision != revision:
            loaded = await self.definitions.load()
            self._cached = (loaded, SegmentIndex(loaded.live.values()))
        return self._cached


def get_deps(request: Request) -> ApiDeps:
    deps: ApiDeps = request.app.state.deps
    return deps


Deps = Annotated[ApiDeps, Depends(get_deps)]
