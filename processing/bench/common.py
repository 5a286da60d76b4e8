"""Helpers shared by benchmarks: timing, peak memory, JSON output."""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def peak_rss_mb() -> float:
    """Peak resident set size of this process (and waited-for children), MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


@contextmanager
def timed(store: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        store[key] = store.get(key, 0.0) + time.perf_counter() - t0


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, sort_keys=False, default=float), file=sys.stdout, flush=True)
