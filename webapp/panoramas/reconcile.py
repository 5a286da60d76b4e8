"""Bring the database's Job rows and RQ back into agreement.

Run at every worker start, periodically by the workers (one at a time) and by
`manage.py reconcile_jobs`. After a Redis crash, a lost worker or a job whose
work horse died, nothing stays "queued" or "running" without an RQ job behind
it: a row whose RQ job is gone (or stuck in a dead worker) is queued again
under the same RQ id, with its chain; a row whose RQ job failed for good is
marked failed with RQ's reason, and the rows waiting on it fail with it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import timedelta

from django.utils import timezone
from rq.job import JobStatus

from .models import Job, Stack, Status
from .pipeline import (
    OPEN,
    ROUTES,
    QueueSnapshot,
    _drop_rq,
    awaits_layout,
    chain_jobs,
    fail_dependents,
    fetch_rq,
    is_live,
    requeue_other,
    resume_chain,
)

LOCK_NAME = "reconcile"
#: rows read, and their RQ jobs fetched, per round trip
FETCH_BATCH = 500
GRACE_SECONDS = 10


@dataclass
class Report:
    checked: int = 0
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    #: per row queued again, what RQ said of it (for the operator, and the tests' messages)
    why: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"checked": self.checked, "requeued": self.requeued, "failed": self.failed, "why": self.why}


def _last_line(rq_job) -> str:  # noqa: ANN001
    text = ""
    with contextlib.suppress(Exception):
        text = rq_job.latest_result().exc_string or ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "failed in RQ (no reason recorded)"


def _mark_failed(job: Job, reason: str, report: Report) -> None:
    Job.objects.filter(pk=job.pk).update(
        status=Status.FAILED, error=reason[:5000], message="failed", ended=timezone.now()
    )
    job.status = Status.FAILED
    if job.stack_id:
        Stack.objects.filter(pk=job.stack_id).update(status=Status.FAILED, error=reason[:5000])
    report.failed.append(job.pk)
    if job.kind != Job.Kind.STACK:
        fail_dependents(job, f"{job.kind} #{job.pk} failed: {reason}")
    # A failed stack: RQ itself queues the composite that waits on it (allow_failure),
    # and the composite decides.


def _check_unplanned_root(job: Job, report: Report) -> None:
    """A farm root is queued by its layout job; it only needs repair when that layout
    finished without queuing it (it would wait for ever). A failed layout fails it itself."""
    after = job.params.get("after", [])
    if not after or not Job.objects.filter(pk__in=after, status=Status.DONE).exists():
        return
    job.refresh_from_db()  # the layout may have filled it in since it was read
    if job.status in OPEN and awaits_layout(job):
        _mark_failed(job, "its layout job finished without queuing the farm's jobs", report)


def reconcile(now_only: list[int] | None = None) -> Report:
    """Check every open Job row (or those in NOW_ONLY) against RQ and repair it."""
    report = Report()
    # Rows younger than GRACE may not have their RQ job yet (it is being queued).
    settled = timezone.now() - timedelta(seconds=GRACE_SECONDS)
    rows = Job.objects.filter(status__in=OPEN, created__lt=settled).order_by("created", "pk")
    if now_only is not None:
        rows = rows.filter(pk__in=now_only)
    done: set[int] = set()
    snapshot = QueueSnapshot()
    for batch in _batches(rows.iterator(chunk_size=FETCH_BATCH), FETCH_BATCH):
        fetched = _fetch_many([j.rq_id for j in batch])
        for job in batch:
            if job.pk not in done:
                _check(job, fetched.get(job.rq_id), snapshot, report, done)
    return report


def _batches(it, n: int):  # noqa: ANN001, ANN202
    batch = []
    for x in it:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _fetch_many(rq_ids: list[str]) -> dict[str, object]:
    import django_rq
    from rq.job import Job as RQJob

    ids = [r for r in rq_ids if r]
    try:
        jobs = RQJob.fetch_many(ids, connection=django_rq.get_connection("default"))
    except Exception:  # a hash left half-written by a crash: one by one
        jobs = [fetch_rq(r) for r in ids]
    return {r: j for r, j in zip(ids, jobs, strict=True) if j is not None}


def _check(job: Job, rq_job, snapshot: QueueSnapshot, report: Report, done: set[int]) -> None:  # noqa: ANN001
    """One open row against its RQ job (fetched with its batch; None: RQ has none). What
    the batch says is trusted only to leave a row alone; a repair looks again first."""
    report.checked += 1
    if rq_job is not None and rq_job.id != job.rq_id:
        rq_job = fetch_rq(job.rq_id)  # queued again since the batch was read
    if awaits_layout(job):
        _check_unplanned_root(job, report)
        return
    if rq_job is not None and is_live(job, rq_job, snapshot):
        return
    job.refresh_from_db()
    if job.status not in OPEN:
        return
    rq_job = fetch_rq(job.rq_id)
    state = rq_job.get_status(refresh=False) if rq_job is not None else None
    if state == JobStatus.FAILED:
        _mark_failed(job, _last_line(rq_job), report)
        return
    if state == JobStatus.FINISHED:
        # The function returned; only the row's last update was lost.
        return
    if awaits_layout(job):
        _check_unplanned_root(job, report)
        return
    if is_live(job, rq_job):
        return
    job.refresh_from_db()
    if job.status not in OPEN:
        return  # it ended while we looked
    why = f"{job.kind} {job.status}: RQ job {state or 'missing'}"
    if rq_job is not None and rq_job.worker_name:
        why += f" (worker {rq_job.worker_name})"
    message = "queued again by reconcile (its RQ job was lost)"
    if job.kind in ROUTES or job.params.get("rq_func"):
        _drop_rq(job.rq_id)
        resume_chain(job, message=message)
        for j in chain_jobs(job):
            done.add(j.pk)
    elif not requeue_other(job, message=message):
        return
    report.requeued.append(job.pk)
    report.why[job.pk] = why


def reconcile_once_among_workers() -> Report | None:
    """reconcile() unless another live process is doing it right now (a lease:
    one left by a worker killed mid-reconcile is broken at once)."""
    from .leases import LeaseTimeout, lease

    try:
        with lease(LOCK_NAME, wait_seconds=0):
            return reconcile()
    except LeaseTimeout:
        return None
