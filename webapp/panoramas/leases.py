"""Locks that cannot outlive the process holding them.

A lease is a Redis lock with a short TTL (LEASE_SECONDS) that a daemon thread
of the holder renews while the job runs. When the process dies (SIGKILL, OOM
killer, a lost machine) the renewals stop and the lock is free again within
LEASE_SECONDS, so a retry never waits hours on a dead holder's key. The
lock's value names its holder (host, pid): a waiter on the same host breaks
the lease of a holder whose process is gone at once, without waiting for the
TTL (after a SIGKILL, or a Redis restarted from its AOF with the key in it).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
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
    lock = conn.lock(PREFIX + name, timeout=ttl, thread_local=False)
    token = f"{_machine()}|{os.getpid()}|{uuid.uuid4().hex}"
    deadline = time.monotonic() + wait_seconds
    while not lock.acquire(blocking=False, token=token):
        if _break_if_dead(conn, PREFIX + name):
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            raise LeaseTimeout(f"lock {name} still held by a live job after {wait_seconds:.0f} s")
        if lock.acquire(blocking_timeout=min(1.0, left), token=token):
            break
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


def _machine() -> str:
    """Who can see our pids: host name, boot and pid namespace (containers differ)."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(open("/proc/sys/kernel/random/boot_id").read().strip()[:8])  # noqa: SIM115
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return ":".join(parts)


_DELETE_IF_EQUAL = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def _break_if_dead(conn, key: str) -> bool:  # noqa: ANN001
    """Delete KEY if its holder is a process that we can see and that no longer exists."""
    raw = conn.get(key)
    if raw is None:
        return False
    host, _, rest = raw.decode(errors="replace").partition("|")
    pid = rest.partition("|")[0]
    if host != _machine() or not pid.isdigit():
        return False  # another machine's (or container's) holder: its lease runs out on its own
    try:
        os.kill(int(pid), 0)
        return False
    except ProcessLookupError:
        return bool(conn.eval(_DELETE_IF_EQUAL, 1, key, raw))
    except PermissionError:
        return False


def remaining_ttls(conn=None) -> dict[str, int]:  # noqa: ANN001
    """Seconds left on every Terapan lock (for tests and the docs' measurements)."""
    conn = conn or django_rq.get_connection("default")
    return {k.decode()[len(PREFIX) :]: int(conn.ttl(k)) for k in conn.scan_iter(PREFIX + "*")}
