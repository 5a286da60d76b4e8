"""Job repair without workers (real Redis): errors that name their path, the
reconcile command, retries that resume a chain once, and failures that take
the rest of their chain with them."""

from __future__ import annotations

import errno
import json
from io import StringIO

import django_rq
import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain(stacked_pano):  # noqa: ANN201
    from webapp.panoramas.pipeline import enqueue_render

    pano = stacked_pano("chained")
    plan = enqueue_render(pano)
    return plan


def test_errors_name_the_path_and_the_stage() -> None:
    from webapp.panoramas.jobs import _describe, _writing
    from webapp.panoramas.models import Job

    job = Job(pk=7, kind="composite", stage="render")
    _writing(job, "/media/panoramas/1/composites/abc.tif")
    full = _describe(job, OSError(errno.ENOSPC, "No space left on device"))
    assert full.endswith("(writing /media/panoramas/1/composites/abc.tif)") and "Errno 28" in full
    named = _describe(job, FileNotFoundError(errno.ENOENT, "No such file", "/x/y.tif"))
    assert "writing" not in named and "/x/y.tif" in named  # it names its own path
    oom = _describe(job, MemoryError())
    assert "out of memory in composite #7 (render)" in oom and "abc.tif" in oom


def test_retrying_many_jobs_of_one_chain_resumes_it_once(chain) -> None:  # noqa: ANN001
    from webapp.panoramas.admin_views import retry_jobs
    from webapp.panoramas.models import Job, Status
    from webapp.panoramas.pipeline import fail_dependents

    rows = chain.all_jobs()
    # Every stack failed for good and the composite with them; its pyramid "not run".
    for j in chain.stack_jobs:
        Job.objects.filter(pk=j.pk).update(status=Status.FAILED, error="OSError: disk full")
        django_rq.get_queue("gpu").remove(j.rq_id)
    Job.objects.filter(pk=chain.composite_job.pk).update(status=Status.FAILED, error="ChainError: stack s0")
    comp = Job.objects.get(pk=chain.composite_job.pk)
    assert fail_dependents(comp, "composite failed") == 1
    assert Job.objects.get(pk=chain.pyramid_job.pk).status == Status.FAILED
    n_rows = Job.objects.count()
    failed = list(Job.objects.filter(status=Status.FAILED))
    assert retry_jobs(failed) == len(rows)  # every row of the chain, once
    assert retry_jobs(list(Job.objects.all())) == 0  # all queued again: nothing more to do
    assert Job.objects.count() == n_rows  # no new rows: the same chain, the same RQ ids
    gpu = django_rq.get_queue("gpu")
    assert sorted(gpu.job_ids) == sorted(f"terapan-stack-{j.pk}" for j in chain.stack_jobs)
    assert all(j.status == Status.QUEUED for j in Job.objects.filter(pk__in=[r.pk for r in rows]))


def test_cancel_takes_the_rest_of_the_chain(chain) -> None:  # noqa: ANN001
    from webapp.panoramas.models import Job, Status
    from webapp.panoramas.pipeline import cancel_job

    cancel_job(Job.objects.get(pk=chain.composite_job.pk))
    assert Job.objects.get(pk=chain.composite_job.pk).status == Status.CANCELED
    pj = Job.objects.get(pk=chain.pyramid_job.pk)
    assert pj.status == Status.FAILED and "canceled" in pj.error


def test_reconcile_command_reports(chain) -> None:  # noqa: ANN001
    out = StringIO()
    call_command("reconcile_jobs", stdout=out)
    report = json.loads(out.getvalue())
    assert report == {"checked": 0, "requeued": [], "failed": [], "why": {}}  # fresh rows are left alone
