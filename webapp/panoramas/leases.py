"""Locks that cannot outlive the process holding them.

A lease is a Redis lock with a short TTL (LEASE_SECONDS) that a daemon thread
of the holder renews while the job runs. When the process dies (SIGKILL, OOM
killer, a lost machine) the renewals stop and the lock is free again within
LEASE_SECONDS, so a retry never waits hours on a dead holder's key.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import django_rq
from redis.exceptions import LockError

LEASE_SECONDS = 30
PREFIX = "terapan:lock:"


class LeaseTimeout(RuntimeError):
    """Another live job held the lease for longer than we may wait."""


@contextlib.contextmanager
def lease(name: str, wait_seconds: float, ttl: int = LEASE_SECONDS) -> Iterator[None]:
    """Hold the lock NAME while the block runs; wait at most WAIT_SECONDS for it."""
    conn = django_rq.get_connection("default")
    # thread_local=False: the renewing thread must see the token of this thread.
    lock = conn.lock(PREFIX + name, timeout=ttl, blocking_timeout=wait_seconds, thread_local=False)
    if not lock.acquire():
        raise LeaseTimeout(f"lock {name} still held by a live job after {wait_seconds:.0f} s")
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl / 3):
            try:
                lock.extend(ttl, replace_ttl=True)
            except LockError:  # lost (e.g. Redis restarted without it): nothing to renew
                return
            except Exception:  # a Redis hiccup: try again at the next tick
                continue

    thread = threading.Thread(target=renew, name=f"lease:{name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        with contextlib.suppress(LockError, Exception):
            lock.release()


def remaining_ttls(conn=None) -> dict[str, int]:  # noqa: ANN001
    """Seconds left on every Terapan lock (for tests and the docs' measurements)."""
    conn = conn or django_rq.get_connection("default")
    return {k.decode()[len(PREFIX) :]: int(conn.ttl(k)) for k in conn.scan_iter(PREFIX + "*")}
