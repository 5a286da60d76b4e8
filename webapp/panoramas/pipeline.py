"""Enqueue the render chain: stack jobs (queue gpu) -> composite -> pyramid.

Every Job row has one fixed RQ id (terapan-<kind>-<pk>), so queuing a row
again replaces its RQ job instead of adding a second one. The jobs of one
chain share params["chain"]; params["after"] lists the rows a job waits on.
A failed stack does not stop RQ from running the composite (allow_failure):
the composite itself decides whether the chain can go on (jobs.py). A chain
that failed is resumed, never duplicated: resume_chain() queues again the
rows of that chain that are not done and that nothing is running.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

import django_rq
from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from rq import Retry
from rq.job import Dependency, JobStatus
from rq.job import Job as RQJob

from .models import Job, Panorama, Stack, Status

#: kind -> (queue, function, timeout key)
ROUTES = {
    Job.Kind.STACK: ("gpu", "webapp.panoramas.jobs.run_stack"),
    Job.Kind.COMPOSITE: ("default", "webapp.panoramas.jobs.run_composite"),
    Job.Kind.PYRAMID: ("default", "webapp.panoramas.jobs.run_pyramid"),
}
#: the order a chain's rows run in (a farm chain: stacks, layout, blocks, reduces, root)
CHAIN_ORDER = {
    Job.Kind.STACK: 0,
    Job.Kind.COMPOSITE: 1,
    Job.Kind.LAYOUT: 1,
    Job.Kind.BLOCK: 2,
    Job.Kind.REDUCE: 3,
    Job.Kind.PYRAMID: 4,
}
#: rows that run after their stacks whatever became of them, and decide themselves
DECIDE_ON_FAILED = (Job.Kind.COMPOSITE, Job.Kind.LAYOUT)
LIVE_RQ_STATES = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}
OPEN = (Status.PENDING, Status.QUEUED, Status.RUNNING)
#: how long after its last dependency ended a deferred job may still be waiting for RQ
MISSED_END_SECONDS = 10


def _retry() -> Retry | None:
    n = settings.TERAPAN_JOB_RETRIES
    return Retry(max=n, interval=settings.TERAPAN_RETRY_INTERVALS) if n else None


def rq_job_id(job: Job) -> str:
    return f"terapan-{job.kind}-{job.pk}"


@dataclass
class RenderPlan:
    stack_jobs: list[Job] = field(default_factory=list)
    composite_job: Job | None = None
    pyramid_job: Job | None = None

    def all_jobs(self) -> list[Job]:
        return [
            *self.stack_jobs,
            *(j for j in (self.composite_job, self.pyramid_job) if j),
        ]


def fetch_rq(rq_id: str) -> RQJob | None:
    if not rq_id:
        return None
    try:
        return RQJob.fetch(rq_id, connection=django_rq.get_connection("default"))
    except Exception:  # NoSuchJobError, or a hash left half-written by a crash
        return None


def _drop_rq(rq_id: str) -> None:
    rq_job = fetch_rq(rq_id)
    if rq_job is not None:
        with contextlib.suppress(Exception):
            rq_job.delete(remove_from_queue=True, delete_dependents=False)


def awaits_layout(job: Job) -> bool:
    """A farm chain's pyramid (root) row before its layout job has planned the farm: it
    has no function to run yet, and only the layout job queues it."""
    return bool(job.params.get("farm")) and not job.params.get("rq_func")


def enqueue_job(job: Job) -> None:
    """Queue the render job JOB under its fixed RQ id, after the unfinished rows it waits on."""
    if job.params.get("rq_func"):
        # Farm stages (stack with features, layout, block, reduce, root) run their own functions.
        queue, func = job.params["rq_queue"], job.params["rq_func"]
    elif awaits_layout(job):
        raise ValueError(f"job #{job.pk}: the farm's pyramid is queued by its layout job")
    elif job.kind in ROUTES:
        queue, func = ROUTES[job.kind]
    else:
        raise ValueError(f"job #{job.pk}: {job.kind} jobs are not part of a render chain")
    timeouts = settings.TERAPAN_JOB_TIMEOUTS
    timeout = int(job.params.get("rq_timeout") or timeouts.get(job.kind) or timeouts["composite"])
    after = [int(pk) for pk in job.params.get("after", [])]
    waiting = list(Job.objects.filter(pk__in=after).exclude(status=Status.DONE).values_list("rq_id", flat=True))
    waiting = [r for r in waiting if r and fetch_rq(r) is not None]
    depends_on = None
    if waiting:
        # The composite (or farm layout) runs after its stacks whatever became of them,
        # and decides; every other row runs only after rows that succeeded.
        depends_on = Dependency(jobs=waiting, allow_failure=job.kind in DECIDE_ON_FAILED)
    rq_job = django_rq.get_queue(queue).enqueue(
        func,
        job.pk,
        job_id=rq_job_id(job),
        job_timeout=timeout,
        retry=_retry(),
        depends_on=depends_on,
        result_ttl=7 * 24 * 3600,
        failure_ttl=30 * 24 * 3600,
        description=f"{job.kind} #{job.pk} {job.params.get('id', '')}".strip(),
    )
    Job.objects.filter(pk=job.pk).update(rq_id=rq_job.id)
    job.rq_id = rq_job.id


def enqueue_with(job: Job, queue: str, func: str, timeout: int) -> None:
    """Queue JOB to run FUNC (the farm chain's stages, whose functions differ from ROUTES'),
    after the rows in its params["after"]. The function is kept in the row's params so a
    re-queue (reconcile, admin retry) runs the same one."""
    job.params = {**(job.params or {}), "rq_queue": queue, "rq_func": func, "rq_timeout": timeout}
    Job.objects.filter(pk=job.pk).update(params=job.params)
    enqueue_job(job)


def enqueue_render(
    pano: Panorama,
    stacks: Iterable[Stack] | None = None,
    *,
    composite: bool = True,
    pyramid: bool = True,
    publish: bool = True,
    partial: dict | None = None,
) -> RenderPlan:
    """Queue stack jobs for STACKS (default: all) and the composite/pyramid after them."""
    if stacks is None:
        stacks = Stack.objects.filter(subpanorama__panorama=pano)
    chain = uuid.uuid4().hex
    plan = RenderPlan()
    for s in stacks:
        job = Job.objects.create(
            kind=Job.Kind.STACK, panorama=pano, stack=s, params={"scale": pano.scale, "chain": chain}
        )
        Stack.objects.filter(pk=s.pk).update(status=Status.QUEUED, progress=0.0)
        enqueue_job(job)
        plan.stack_jobs.append(job)
    after = [j.pk for j in plan.stack_jobs]
    if composite:
        cj = Job.objects.create(
            kind=Job.Kind.COMPOSITE, panorama=pano, params={**(partial or {}), "chain": chain, "after": after}
        )
        enqueue_job(cj)
        plan.composite_job = cj
        after = [cj.pk]
    if pyramid:
        pj = Job.objects.create(
            kind=Job.Kind.PYRAMID,
            panorama=pano,
            params={**(partial or {}), "publish": publish, "chain": chain, "after": after},
        )
        enqueue_job(pj)
        plan.pyramid_job = pj
    return plan


def chain_jobs(job: Job) -> list[Job]:
    """The rows of JOB's chain in the order they run (JOB alone when it has no chain)."""
    chain = job.params.get("chain")
    rows = list(Job.objects.filter(params__chain=chain)) if chain else [job]
    return sorted(rows, key=lambda j: (CHAIN_ORDER.get(j.kind, 9), j.pk))


def worker_alive(name: str | None) -> bool:
    """Whether the RQ worker NAME still runs (a dead local pid counts as dead at once)."""
    import os
    import socket

    from rq import Worker

    if not name:
        return False
    conn = django_rq.get_connection("default")
    w = Worker.find_by_key(Worker.redis_worker_namespace_prefix + name, connection=conn)
    if w is None:
        return False
    if w.hostname == socket.gethostname() and w.pid:
        try:
            os.kill(int(w.pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


class QueueSnapshot:
    """The ids in each queue (and its workers' intermediate list), read once per queue with
    one LRANGE: a reconcile pass over hundreds of thousands of farm rows asks about each
    row in O(1) instead of one O(queue) LPOS per row."""

    def __init__(self) -> None:
        self._ids: dict[str, set[str]] = {}

    def holds(self, rq_job: RQJob) -> bool:
        from rq.intermediate_queue import IntermediateQueue

        origin = rq_job.origin
        if origin not in self._ids:
            conn = django_rq.get_connection("default")
            key = f"rq:queue:{origin}"
            held = IntermediateQueue.get_intermediate_queue_key(key)
            ids = conn.lrange(key, 0, -1) + conn.lrange(held, 0, -1)
            self._ids[origin] = {i.decode() if isinstance(i, bytes) else i for i in ids}
        return rq_job.id in self._ids[origin]


def in_queue(rq_job: RQJob, snapshot: QueueSnapshot | None = None) -> bool:
    """A queued RQ job is really in its queue (a crash may lose the push). A
    worker that has just taken it holds it in the intermediate list until its
    status says started: look there too, and once more a moment later. With a
    SNAPSHOT, a job it saw is in (or was just taken from) its queue; one it did
    not see (queued since) is looked for as without."""
    import time

    from rq.intermediate_queue import IntermediateQueue

    if snapshot is not None and snapshot.holds(rq_job):
        return True
    conn = django_rq.get_connection("default")
    key = f"rq:queue:{rq_job.origin}"
    held = IntermediateQueue.get_intermediate_queue_key(key)
    for attempt in range(2):
        try:
            if conn.lpos(key, rq_job.id) is not None or conn.lpos(held, rq_job.id) is not None:
                return True
        except Exception:
            return True  # no LPOS: trust the status
        if attempt == 0:
            time.sleep(0.5)
            if rq_job.get_status(refresh=True) != JobStatus.QUEUED:
                return True
    return False


def is_live(job: Job, rq_job: RQJob | bool | None = False, snapshot: QueueSnapshot | None = None) -> bool:
    """Something in RQ will still run (or is running) JOB: queued in its
    queue, scheduled (a retry), deferred on rows that are still open, or
    started by a worker that is alive. RQ_JOB: JOB's RQ job when the caller
    has fetched it already (None: it has none)."""
    if rq_job is False:
        rq_job = fetch_rq(job.rq_id)
    if rq_job is None:
        return False
    state = rq_job.get_status(refresh=False)
    if state == JobStatus.FINISHED:
        return True  # it has just run: only its row is a moment behind (or lost its last update)
    if state == JobStatus.STARTED:
        return worker_alive(rq_job.worker_name)
    if state == JobStatus.QUEUED:
        return in_queue(rq_job, snapshot)
    if state == JobStatus.DEFERRED:
        # Waiting on rows that have all finished means RQ missed their end (a
        # Redis crash can lose a job's last second): it would wait forever.
        # Rows that ended a moment ago: RQ queues their dependents just after the row
        # says done, so give it time before calling the end missed.
        after = job.params.get("after", [])
        recent = timezone.now() - timedelta(seconds=MISSED_END_SECONDS)
        return not after or Job.objects.filter(pk__in=after).filter(Q(status__in=OPEN) | Q(ended__gt=recent)).exists()
    return state in LIVE_RQ_STATES


def is_running(job: Job) -> bool:
    rq_job = fetch_rq(job.rq_id)
    return (
        rq_job is not None
        and rq_job.get_status(refresh=False) == JobStatus.STARTED
        and worker_alive(rq_job.worker_name)
    )


def _reset(job: Job, message: str) -> None:
    stamp = timezone.now().strftime("%H:%M:%S")
    log = (Job.objects.filter(pk=job.pk).values_list("log", flat=True).first() or "") + f"[{stamp}] {message}\n"
    Job.objects.filter(pk=job.pk).update(status=Status.QUEUED, error="", message=message, ended=None, log=log[-20000:])
    job.status = Status.QUEUED
    if job.stack_id:
        Stack.objects.filter(pk=job.stack_id).update(status=Status.QUEUED, progress=0.0)


def resume_chain(job: Job, message: str = "queued again") -> int:
    """Queue again the unfinished rows of JOB's chain that nothing runs; the rows
    waiting on one queued again are queued again too (their RQ dependencies
    named the old job). Returns how many."""
    if job.kind not in ROUTES and not job.params.get("rq_func") and not awaits_layout(job):
        return requeue_other(job, message)
    again: set[int] = set()
    for j in chain_jobs(job):
        if j.status == Status.DONE or awaits_layout(j):
            continue  # done, or a farm root that its layout job will queue
        waits_on_new = any(int(pk) in again for pk in j.params.get("after", []))
        if j.status == Status.CANCELED and j.pk != job.pk and not waits_on_new:
            continue  # canceled by someone: only an explicit retry of it brings it back
        if j.status == Status.FAILED and is_running(j):
            continue  # a run already under way (it sets the row running)
        if not waits_on_new and j.status in OPEN and is_live(j):
            continue
        _drop_rq(j.rq_id or rq_job_id(j))
        _reset(j, message)
        enqueue_job(j)
        again.add(j.pk)
    return len(again)


def requeue_other(job: Job, message: str = "queued again") -> int:
    """Ingest and thumbnail jobs: queue the same row again unless RQ still has it."""
    if is_live(job):
        return 0
    _drop_rq(job.rq_id)
    _reset(job, message)
    if job.kind == Job.Kind.INGEST:
        from webapp.ingest.jobs import enqueue_import

        enqueue_import(job)
    elif job.kind == Job.Kind.THUMBNAILS:
        from webapp.ingest.jobs import make_thumbnails

        rq_job = django_rq.get_queue("default").enqueue(
            make_thumbnails, job.params.get("stack_ids", []), job.pk, job_timeout=3600
        )
        Job.objects.filter(pk=job.pk).update(rq_id=rq_job.id)
    else:
        return 0
    return 1


def fail_dependents(job: Job, reason: str) -> int:
    """Mark the rows of JOB's chain that wait on it (directly or not) failed with REASON."""
    chain = job.params.get("chain")
    if not chain:
        return 0
    n = 0
    todo = [job.pk]
    rows = chain_jobs(job)
    while todo:
        pk = todo.pop()
        for j in rows:
            if pk in j.params.get("after", []) and j.status in OPEN:
                _drop_rq(j.rq_id)
                Job.objects.filter(pk=j.pk).update(
                    status=Status.FAILED, error=reason[:5000], message="not run: " + reason[:480], ended=timezone.now()
                )
                j.status = Status.FAILED
                todo.append(j.pk)
                n += 1
    return n


def cancel_job(job: Job) -> None:
    """Cancel a queued or running job (a running one is stopped by its worker)."""
    from rq.command import send_stop_job_command

    conn = django_rq.get_connection("default")
    rq_job = fetch_rq(job.rq_id)
    if rq_job is not None:
        try:
            if rq_job.get_status() == "started":
                send_stop_job_command(conn, job.rq_id)
            else:
                rq_job.cancel()
        except Exception:
            pass
    Job.objects.filter(pk=job.pk).update(status=Status.CANCELED, message="canceled")
    if job.stack_id:
        Stack.objects.filter(pk=job.stack_id, status__in=[Status.QUEUED, Status.RUNNING]).update(status=Status.CANCELED)
    else:  # the composite decides about canceled stacks; later steps cannot run without it
        fail_dependents(job, f"{job.kind} #{job.pk} was canceled")
