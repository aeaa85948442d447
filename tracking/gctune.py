"""Garbage-collector thresholds for our long-running processes that hold a large live heap.

The API process with thousands of customer sockets (a few hundred GC-tracked objects each) and
the ingest process (per-driver state for every driver it has seen) keep hundreds of thousands
to millions of objects alive for hours. With CPython's default thresholds (700, 10, 10) the
oldest generation was collected every couple of seconds under load, and a full collection
stops the process: ~2 s in the API with 10,000 sockets, ~0.12 s in an ingest replica at 5,000
pings/s (measured with gc.callbacks by `benchmarks/ingest.py`, "gc_in_window"). Those stalls
were the publish → customer p99. With (50,000, 20, 100) young collections are ~70x rarer and
a full one needs 2,000 of them (100 million net allocations) instead of 100.

Short-lived garbage is still freed at once by reference counting; only reference cycles wait
longer. The rejected alternative, `gc.freeze()`, never collects cycles among frozen objects
(a closed socket's tasks and frames), a leak in a process that runs for days.
"""

from __future__ import annotations

import gc
import logging
import os

log = logging.getLogger("serena.tracking.gctune")

THRESHOLDS = (50_000, 20, 100)
ENV = "SERENA_GC_THRESHOLDS"  # "a,b,c": an operator's override of THRESHOLDS (for measuring other settings)


def thresholds() -> tuple[int, ...]:
    raw = os.environ.get(ENV, "").strip()
    if raw:
        try:
            t = tuple(int(x) for x in raw.split(","))
            if len(t) == 3 and all(x > 0 for x in t):
                return t
        except ValueError:
            pass
        log.warning("%s=%r is not three positive integers; using %s", ENV, raw, THRESHOLDS)
    return THRESHOLDS


def for_large_live_heap() -> None:
    """Raise the collector's thresholds to THRESHOLDS (never lowers a higher setting); an override is set as given."""
    t = thresholds()
    if gc.get_threshold() == t or (t == THRESHOLDS and gc.get_threshold()[0] >= t[0]):
        return
    gc.set_threshold(*t)
    log.info("gc thresholds %s for a large live heap", t)
