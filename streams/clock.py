"""The wall clock the runtime reads: epoch milliseconds, as event times and `now` are kept."""

from __future__ import annotations

import time


def wall_clock_ms() -> int:
    return int(time.time() * 1000)
