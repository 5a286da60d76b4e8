"""Issue 15, fault injection: the embedded Redis is SIGKILLed mid-chain.

Redis persists (AOF, fsync every second); the workers are killed with it (a
machine crash), then Redis and the workers start again. The workers reconcile
the Job rows with RQ at start, so the chain completes and publishes once.
A second test empties Redis outright (a lost server) and reconcile() queues the
open rows again, chain by chain.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import django_rq
import pytest

from ._capture_helpers import make_panorama
from ._fault_helpers import fault_env, wait_done, wait_for  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_sigkill_of_redis_mid_chain_then_chain_completes(fault_env, settings) -> None:  # noqa: ANN001, F811
    from webapp.embedded_redis import ensure_server
    from webapp.panoramas.models import Job, Pyramid, Status
    from webapp.panoramas.pipeline import enqueue_render
    from webapp.panoramas.workers import start_workers, stop_workers

    if not settings.EMBEDDED_REDIS:
        pytest.skip("REDIS_URL points at an outside Redis: not ours to kill")
    conn = django_rq.get_connection("default")
    assert conn.config_get("appendonly")["appendonly"] == "yes"
    pano = make_panorama(fault_env, "rd", n_stacks=10, frames=3, view_height=240, seed=5)
    workers = start_workers(2)
    plan = enqueue_render(pano)
    stack_pks = [j.pk for j in plan.stack_jobs]
    try:
        wait_for(
            lambda: Job.objects.filter(pk__in=stack_pks, status=Status.DONE).count() >= 3,
            240,
            "three stacks done",
            every=0.1,
        )
        time.sleep(1.5)  # let the AOF's once-a-second fsync happen at least once
        pid = int((Path(settings.VAR_DIR) / "redis.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        for p in workers:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        open_rows = Job.objects.filter(pk__in=[j.pk for j in plan.all_jobs()]).exclude(status=Status.DONE).count()
        assert open_rows > 0  # killed mid-chain
    finally:
        stop_workers(workers)
    t0 = time.monotonic()
    ensure_server(Path(settings.VAR_DIR))  # the same data folder: the AOF is replayed
    workers = start_workers(2)
    try:
        wait_done([j.pk for j in plan.all_jobs()], timeout=180)
        recovery = time.monotonic() - t0
        print(f"\nrestart at {time.strftime('%H:%M:%S')} minus {recovery:.0f} s; the jobs' logs:")
        for j in Job.objects.filter(pk__in=[x.pk for x in plan.all_jobs()]).order_by("pk"):
            print(f"  {j.kind} #{j.pk}: " + " | ".join(ln for ln in j.log.splitlines() if "Traceback" not in ln)[-400:])
    finally:
        stop_workers(workers)
    pano.refresh_from_db()
    assert list(Pyramid.objects.filter(panorama=pano).values_list("version", flat=True)) == [1]
    assert pano.published_pyramid.version == 1
    assert Job.objects.filter(panorama=pano).count() == len(plan.all_jobs())  # no second chain
    print(f"\nRedis SIGKILLed mid-chain ({open_rows} jobs open): chain done {recovery:.1f} s after the restart")


def test_reconcile_requeues_a_chain_lost_with_redis(fault_env) -> None:  # noqa: ANN001, F811
    from datetime import timedelta

    from django.utils import timezone
    from rq.job import Job as RQJob

    from webapp.panoramas.models import Job, Status
    from webapp.panoramas.pipeline import enqueue_render
    from webapp.panoramas.reconcile import reconcile

    pano = make_panorama(fault_env, "lost", n_stacks=3, frames=2, view_height=120, seed=2)
    plan = enqueue_render(pano)
    conn = django_rq.get_connection("default")
    # Rows younger than a few seconds may still be being queued: reconcile leaves them.
    assert reconcile().checked == 0
    Job.objects.filter(panorama=pano).update(created=timezone.now() - timedelta(minutes=1))
    conn.flushdb()  # everything RQ knew is gone; the rows still say "queued"
    report = reconcile()
    assert report.requeued and not report.failed
    gpu = django_rq.get_queue("gpu")
    assert sorted(gpu.job_ids) == sorted(f"terapan-stack-{j.pk}" for j in plan.stack_jobs)
    comp = RQJob.fetch(plan.composite_job.rq_id, connection=conn)
    pyr = RQJob.fetch(plan.pyramid_job.rq_id, connection=conn)
    assert comp.get_status() == "deferred" and pyr.get_status() == "deferred"
    assert sorted(comp._dependency_ids) == sorted(j.rq_id for j in plan.stack_jobs)
    assert all(j.status == Status.QUEUED for j in Job.objects.filter(pk__in=[x.pk for x in plan.all_jobs()]))
    # Nothing is lost twice: a second pass finds every row backed by RQ.
    assert reconcile().requeued == []
    # RQ failed a job for good (e.g. its horse died with no retries left): the row says so,
    # with RQ's reason, and the composite no longer waits on it forever.
    Job.objects.filter(pk=plan.composite_job.pk).update(status=Status.RUNNING)
    comp.set_status("failed")
    report = reconcile()
    assert plan.composite_job.pk in report.failed
    assert Job.objects.get(pk=plan.composite_job.pk).status == Status.FAILED
    pj = Job.objects.get(pk=plan.pyramid_job.pk)
    assert pj.status == Status.FAILED and "composite" in pj.error
