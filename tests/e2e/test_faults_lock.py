"""Issue 15, fault injection: SIGKILL of work horses that hold leases.

Real RQ workers (subprocesses, with their scheduler) and the real embedded
Redis. A stack job's horse is killed while it holds its stack lease, then the
composite's horse while it holds the composite lease, with a dead job's
temporary file beside the composite. The chain must complete within two
minutes of the first kill, with nothing left behind and one version published.
"""

from __future__ import annotations

import os
import signal
import time

import django_rq
import pytest

from ._capture_helpers import make_panorama
from ._fault_helpers import fault_env, horse_of, temporaries, wait_done, wait_for  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _held(prefix: str):  # noqa: ANN202
    """(lock key, horse pid) of a job holding a lease named PREFIX*, or None."""
    from webapp.panoramas.leases import PREFIX
    from webapp.panoramas.models import Job

    conn = django_rq.get_connection("default")
    for key in conn.scan_iter(PREFIX + prefix + "*"):
        name = key.decode()[len(PREFIX) :]
        if name.startswith("stack:"):
            stack_pk = int(name.split(":")[1])
            rows = Job.objects.filter(stack_id=stack_pk, kind="stack", status="running")
        else:
            rows = Job.objects.filter(kind="composite", status="running")
        for j in rows:
            pid = horse_of(j.pk)
            if pid:
                return key.decode(), pid, j.pk
    return None


def test_sigkill_of_horses_holding_leases_chain_completes(fault_env) -> None:  # noqa: ANN001, F811
    from webapp.panoramas.leases import LEASE_SECONDS
    from webapp.panoramas.models import Job, Pyramid
    from webapp.panoramas.pipeline import enqueue_render
    from webapp.panoramas.workers import start_workers, stop_workers

    pano = make_panorama(fault_env, "lk", n_stacks=10, frames=3, view_height=240, seed=5)
    conn = django_rq.get_connection("default")
    workers = start_workers(2)
    try:
        plan = enqueue_render(pano)
        key, horse, stack_job = wait_for(lambda: _held("stack:"), 120, "a stack job inside its lease")
        os.kill(horse, signal.SIGKILL)
        t_kill = time.monotonic()
        ttl = conn.ttl(key)
        # Never the hour-long TTL of the old locks: at most a lease, or already broken
        # by the retry (-2) because its holder's pid is gone.
        assert ttl == -2 or 0 < ttl <= LEASE_SECONDS, ttl

        key2, horse2, comp_job = wait_for(lambda: _held("composite:"), 150, "the composite inside its lease")
        chash = key2.rsplit(":", 1)[1]
        comp_dir = fault_env / "media" / "panoramas" / str(pano.pk) / "composites"
        comp_dir.mkdir(parents=True, exist_ok=True)
        dead = comp_dir / f".{chash}.deadjob.tmp.tif"
        dead.write_bytes(b"half a composite")  # what a job killed mid-write leaves
        os.kill(horse2, signal.SIGKILL)
        t_kill2 = time.monotonic()

        wait_done([j.pk for j in plan.all_jobs()], timeout=max(10.0, 120 - (time.monotonic() - t_kill)))
        recovery = time.monotonic() - t_kill
        after_second = time.monotonic() - t_kill2
    finally:
        stop_workers(workers)

    assert recovery < 120
    assert Job.objects.get(pk=stack_job).attempts >= 2 and Job.objects.get(pk=comp_job).attempts >= 2
    assert not dead.exists()
    assert temporaries(fault_env / "media") == []
    pano.refresh_from_db()
    assert list(Pyramid.objects.filter(panorama=pano).values_list("version", flat=True)) == [1]
    assert pano.published_pyramid.version == 1
    assert not list(conn.scan_iter("terapan:lock:*"))  # every lease released
    print(f"\nrecovery after SIGKILL of a stack horse holding its lease: chain done {recovery:.1f} s after the kill")
    print(f"composite horse killed with a dead temporary beside it: chain done {after_second:.1f} s after that kill")
