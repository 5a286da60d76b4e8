"""Leases (webapp/panoramas/leases.py) on the real embedded Redis: renewed while
held, free within their TTL when the holder stops renewing, broken at once
when the holder is a dead process of this machine, never broken when it lives."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import django_rq
import pytest

from webapp.panoramas.leases import PREFIX, LeaseTimeout, _machine, lease


@pytest.fixture
def conn():  # noqa: ANN201
    c = django_rq.get_connection("default")
    for k in c.scan_iter(PREFIX + "test-*"):
        c.delete(k)
    yield c
    for k in c.scan_iter(PREFIX + "test-*"):
        c.delete(k)


def test_renewed_while_held_released_after(conn) -> None:  # noqa: ANN001
    with lease("test-renew", 5, ttl=2):
        time.sleep(3.5)  # longer than the TTL: only renewals keep it
        assert conn.exists(PREFIX + "test-renew")
        assert 0 < conn.ttl(PREFIX + "test-renew") <= 2
    assert not conn.exists(PREFIX + "test-renew")


def test_dead_local_holder_is_broken_at_once(conn) -> None:  # noqa: ANN001
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    conn.set(PREFIX + "test-dead", f"{_machine()}|{p.pid}|x", ex=600)
    t0 = time.monotonic()
    with lease("test-dead", 5):
        waited = time.monotonic() - t0
    assert waited < 0.5, waited


def test_foreign_holder_waits_for_its_ttl(conn) -> None:  # noqa: ANN001
    conn.set(PREFIX + "test-foreign", "another-machine|1|x", ex=2)
    t0 = time.monotonic()
    with lease("test-foreign", 10):
        waited = time.monotonic() - t0
    assert 1.0 < waited < 4.0, waited


def test_live_holder_is_never_broken(conn) -> None:  # noqa: ANN001
    conn.set(PREFIX + "test-live", f"{_machine()}|{os.getpid()}|x", ex=600)
    with pytest.raises(LeaseTimeout), lease("test-live", 1.5):
        pass
    assert conn.exists(PREFIX + "test-live")


def test_one_holder_at_a_time(conn) -> None:  # noqa: ANN001
    inside, overlaps = [0], [0]

    def work() -> None:
        with lease("test-mutex", 10):
            inside[0] += 1
            overlaps[0] = max(overlaps[0], inside[0])
            time.sleep(0.2)
            inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps[0] == 1
