"""Enqueue the render chain: stack jobs (queue gpu) -> composite -> pyramid.

RQ dependencies order the chain; a failed stack does not block the others
(allow_failure): the composite uses every stack that has an output.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import django_rq
from django.conf import settings
from rq import Retry
from rq.job import Dependency

from .models import Job, Panorama, Stack, Status


def _retry() -> Retry | None:
    n = settings.TERAPAN_JOB_RETRIES
    return Retry(max=n, interval=settings.TERAPAN_RETRY_INTERVALS) if n else None


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


def _enqueue(queue: str, func: str, job: Job, timeout: int, depends_on=None) -> None:
    rq_job = django_rq.get_queue(queue).enqueue(
        func,
        job.pk,
        job_id=f"terapan-{job.kind}-{job.pk}",
        job_timeout=timeout,
        retry=_retry(),
        depends_on=depends_on,
        result_ttl=7 * 24 * 3600,
        failure_ttl=30 * 24 * 3600,
        description=f"{job.kind} #{job.pk}",
    )
    Job.objects.filter(pk=job.pk).update(rq_id=rq_job.id)
    job.rq_id = rq_job.id


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
    timeouts = settings.TERAPAN_JOB_TIMEOUTS
    if stacks is None:
        stacks = Stack.objects.filter(subpanorama__panorama=pano)
    plan = RenderPlan()
    rq_ids: list[str] = []
    for s in stacks:
        job = Job.objects.create(kind=Job.Kind.STACK, panorama=pano, stack=s, params={"scale": pano.scale})
        Stack.objects.filter(pk=s.pk).update(status=Status.QUEUED, progress=0.0)
        _enqueue("gpu", "webapp.panoramas.jobs.run_stack", job, timeouts["stack"])
        plan.stack_jobs.append(job)
        rq_ids.append(job.rq_id)
    dep = Dependency(jobs=rq_ids, allow_failure=True) if rq_ids else None
    if composite:
        cj = Job.objects.create(kind=Job.Kind.COMPOSITE, panorama=pano, params=dict(partial or {}))
        _enqueue(
            "default",
            "webapp.panoramas.jobs.run_composite",
            cj,
            timeouts["composite"],
            dep,
        )
        plan.composite_job = cj
        dep = Dependency(jobs=[cj.rq_id])
    if pyramid:
        pj = Job.objects.create(
            kind=Job.Kind.PYRAMID,
            panorama=pano,
            params={"publish": publish, **(partial or {})},
        )
        _enqueue("default", "webapp.panoramas.jobs.run_pyramid", pj, timeouts["pyramid"], dep)
        plan.pyramid_job = pj
    return plan


def cancel_job(job: Job) -> None:
    """Cancel a queued or running job (a running one is stopped by its worker)."""
    from rq.command import send_stop_job_command
    from rq.job import Job as RQJob

    conn = django_rq.get_connection("default")
    if job.rq_id:
        try:
            rq_job = RQJob.fetch(job.rq_id, connection=conn)
            if rq_job.get_status() == "started":
                send_stop_job_command(conn, job.rq_id)
            else:
                rq_job.cancel()
        except Exception:
            pass
    Job.objects.filter(pk=job.pk).update(status=Status.CANCELED, message="canceled")
    if job.stack_id:
        Stack.objects.filter(pk=job.stack_id, status__in=[Status.QUEUED, Status.RUNNING]).update(status=Status.CANCELED)
