"""The garbage collector's schedule while a processor loop runs.

Customer states are long-lived and acyclic, so the collector has little to find among them and
much to walk: after every batch `gc.freeze()` moves everything alive into the permanent
generation, young collections run every `YOUNG_THRESHOLD` allocations instead of CPython's 700
(a batch's records, decoded events and new states were otherwise scanned twice before the
freeze), and a full collection runs every `FULL_COLLECT_SECONDS` for what cycles there are
(docs/design.md, "Garbage collection").
"""

from __future__ import annotations

import gc
import time
from typing import Final

FULL_COLLECT_SECONDS: Final = 600.0
YOUNG_THRESHOLD: Final = 100_000


class Collector:
    """`YOUNG_THRESHOLD` while any processor loop of this process runs; CPython's own
    thresholds again once the last one stops (tests and `segstream up` run several roles, and
    sometimes several processors, in one process)."""

    def __init__(self) -> None:
        self._loops = 0
        self._saved = gc.get_threshold()
        self._last_full = time.monotonic()

    def enter(self) -> None:
        if self._loops == 0:
            self._saved = gc.get_threshold()
            gc.set_threshold(YOUNG_THRESHOLD, *self._saved[1:])
        self._loops += 1

    def exit(self) -> None:
        self._loops -= 1
        if self._loops == 0:
            gc.set_threshold(*self._saved)

    def after_batch(self) -> None:
        """Freeze what the batch left alive; a full collection when one is due."""
        gc.freeze()
        if time.monotonic() - self._last_full > FULL_COLLECT_SECONDS:
            self._last_full = time.monotonic()
            gc.unfreeze()
            gc.collect()


collector = Collector()
"""One per process: the thresholds are process-wide."""
