"""`segstream lag --watch`: the lag table refreshed in place, with a trend per partition.

Each refresh reads the lag with one long-lived `LagReader` and compares every partition's lag
with its previous reading: the rate (records per second, positive while the group falls behind)
and its direction (growing, shrinking, steady), so a reversal shows at the next refresh. A
reading that does not end within the refresh interval (the broker is away) leaves the last table
up, marked stale, instead of ending the watch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from rich.console import Console
from rich.live import Live
from rich.table import Table

from streams.aio import pause
from streams.ops.lag import LagReader, LagRow, Trend, lag_key

MIN_READ_WAIT_S: Final = 2.0
_ARROWS: Final = {"growing": "[red]↑ growing[/red]", "shrinking": "[green]↓ shrinking[/green]",
                  "steady": "→ steady"}


@dataclass(frozen=True)
class Watched:
    """A partition's lag now, and how it moved over the window."""

    row: LagRow
    trend: Trend


class LagWatch:
    """Keeps the recent readings of each partition's lag, for its trend."""

    def __init__(self, reader: LagReader, clock: Callable[[], float] = time.monotonic) -> None:
        self.reader = reader
        self._clock = clock
        self._last: dict[tuple[str, str, int], tuple[float, int]] = {}
        self.rows: list[Watched] = []
        self.stale_since: float | None = None
        """When readings stopped ending in time (None while they do)."""

    async def refresh(self, within: float) -> list[Watched]:
        """Read the lag (waiting at most `within` seconds) and compute each trend; the last
        rows stay, and `stale_since` is set, when the reading did not end in time."""
        if not await self.reader.refresh(within):
            if self.stale_since is None:
                self.stale_since = self._clock()
            return self.rows
        self.stale_since = None
        now = self._clock()
        watched = []
        for row in self.reader.rows or ():
            before = self._last.get(lag_key(row))
            self._last[lag_key(row)] = (now, row.lag)
            watched.append(Watched(row, _trend(before, now, row.lag)))
        self.rows = watched
        return watched


def _trend(before: tuple[float, int] | None, now: float, lag: int) -> Trend:
    if before is None or now <= before[0]:
        return Trend("steady", 0.0)
    rate = (lag - before[1]) / (now - before[0])
    return Trend("growing" if rate > 0 else "shrinking" if rate < 0 else "steady", rate)


def lag_table(rows: list[Watched], caption: str | None = None) -> Table:
    """The table `segstream lag --watch` shows."""
    table = Table("group", "topic", "partition", "committed", "end", "lag", "time lag",
                  "trend", "rate", caption=caption)
    for watched in rows:
        r, trend = watched.row, watched.trend
        table.add_row(
            r.group, r.topic, str(r.partition), "-" if r.committed is None else str(r.committed),
            str(r.end), str(r.lag), _age(r.time_lag_seconds), _ARROWS[trend.direction],
            f"{trend.rate:+.1f}/s")
    return table


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


async def watch(
    reader: LagReader, interval: float, console: Console, stop: asyncio.Event,
    count: int | None = None,
) -> None:
    """Refresh the table every `interval` seconds until `stop` is set (or `count` refreshes)."""
    lag_watch = LagWatch(reader)
    done = 0
    with Live(lag_table([]), console=console, auto_refresh=False) as live:
        while not stop.is_set() and (count is None or done < count):
            started = time.monotonic()
            rows = await lag_watch.refresh(max(interval, MIN_READ_WAIT_S))
            live.update(lag_table(rows, _caption(lag_watch, interval)), refresh=True)
            done += 1
            if count is None or done < count:
                await pause(stop, max(0.0, interval - (time.monotonic() - started)))


def _caption(lag_watch: LagWatch, interval: float) -> str:
    stamp = time.strftime("%H:%M:%S")
    if lag_watch.stale_since is not None:
        away = time.monotonic() - lag_watch.stale_since
        return (f"[yellow]{stamp}: the broker does not answer (for {away:.0f} s); "
                "these rows are the last read[/yellow]")
    return f"{stamp}, every {interval:g} s; trend since the previous reading. Ctrl-C stops"
