"""The farm chain under the reconciler and the admin's retry (real Redis, no workers):
the pyramid row that the layout job fills in is left to it, lost farm jobs are queued
again with their own functions and dependencies, and a failed layout fails the root."""

from __future__ import annotations

from datetime import timedelta

import django_rq
import pytest
from django.utils import timezone
from rq.job import Job as RQJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def farm_chain(stacked_pano):  # noqa: ANN201
    from webapp.panoramas.farm import enqueue_farm_render
    from webapp.panoramas.models import Job

    pano = stacked_pano("farmed")
    plan = enqueue_farm_render(pano)
    # old enough for the reconciler to look at them
    Job.objects.filter(panorama=pano).update(created=timezone.now() - timedelta(minutes=5))
    return plan


def _rq(job_id: str) -> RQJob:
    return RQJob.fetch(job_id, connection=django_rq.get_connection("default"))


def test_reconcile_leaves_the_unplanned_root_to_its_layout(farm_chain) -> None:  # noqa: ANN001
    from webapp.panoramas.models import Job, Status
    from webapp.panoramas.reconcile import reconcile

    report = reconcile()
    assert report.requeued == [] and report.failed == []
    root = Job.objects.get(pk=farm_chain.pyramid_job.pk)
    # before the fix the root was queued as a plain pyramid job (run_pyramid), which
    # failed with "no composite to tile" while the stacks were still running
    assert root.rq_id == "" and root.status == Status.QUEUED
    assert f"terapan-pyramid-{root.pk}" not in django_rq.get_queue("default").job_ids
    layout = _rq(farm_chain.composite_job.rq_id)
    assert layout.func_name == "webapp.panoramas.farm.run_layout"
    assert layout.get_status() == "deferred"


def test_a_lost_layout_job_is_queued_again_as_a_layout(farm_chain) -> None:  # noqa: ANN001
    from webapp.panoramas.models import Job
    from webapp.panoramas.reconcile import reconcile

    lj = farm_chain.composite_job
    _rq(lj.rq_id).delete(remove_from_queue=True, delete_dependents=False)  # lost in a Redis crash
    report = reconcile()
    assert lj.pk in report.requeued
    again = _rq(f"terapan-layout-{lj.pk}")
    assert again.func_name == "webapp.panoramas.farm.run_layout"
    # still after the stacks, whatever became of them
    deps = again.fetch_dependencies()
    assert sorted(d.id for d in deps) == sorted(j.rq_id for j in farm_chain.stack_jobs)
    assert again.allow_dependency_failures
    assert Job.objects.get(pk=farm_chain.pyramid_job.pk).rq_id == ""


def test_failed_layout_fails_the_root_and_a_retry_brings_both_back(farm_chain) -> None:  # noqa: ANN001
    from webapp.panoramas.admin_views import retry_jobs
    from webapp.panoramas.models import Job, Status
    from webapp.panoramas.pipeline import fail_dependents

    lj = Job.objects.get(pk=farm_chain.composite_job.pk)
    Job.objects.filter(pk=lj.pk).update(status=Status.FAILED, error="ValueError: no rendered stacks")
    assert fail_dependents(lj, "layout failed") == 1
    root = Job.objects.get(pk=farm_chain.pyramid_job.pk)
    assert root.status == Status.FAILED
    assert retry_jobs([Job.objects.get(pk=lj.pk)]) >= 1
    assert _rq(f"terapan-layout-{lj.pk}").func_name == "webapp.panoramas.farm.run_layout"
    assert Job.objects.get(pk=root.pk).rq_id == ""  # still the layout's to queue


def test_root_of_a_layout_that_finished_without_it_fails(farm_chain) -> None:  # noqa: ANN001
    from webapp.panoramas.models import Job, Status
    from webapp.panoramas.reconcile import reconcile

    Job.objects.filter(pk=farm_chain.composite_job.pk).update(status=Status.DONE)
    report = reconcile()
    root = Job.objects.get(pk=farm_chain.pyramid_job.pk)
    assert root.pk in report.failed and root.status == Status.FAILED
    assert "without queuing" in root.error


def test_lost_block_jobs_are_queued_again_after_their_own_dependencies(farm_chain, tmp_path, settings) -> None:  # noqa: ANN001
    """A graph as the layout job queues it; one block's and one reduce's RQ jobs lost."""
    from webapp.panoramas.farm import enqueue_graph
    from webapp.panoramas.models import Job
    from webapp.panoramas.reconcile import reconcile

    settings.MEDIA_ROOT = tmp_path
    pano = farm_chain.pyramid_job.panorama
    lj = Job.objects.get(pk=farm_chain.composite_job.pk)
    root = Job.objects.get(pk=farm_chain.pyramid_job.pk)
    graph = [
        {"id": "b0", "kind": "block", "after": []},
        {"id": "b1", "kind": "block", "after": []},
        {"id": "r0", "kind": "reduce", "after": ["b0", "b1"]},
        {"id": "root", "kind": "reduce", "after": ["r0"]},
    ]
    assert enqueue_graph(pano, tmp_path / "work", graph, root, lj) == 4
    rows = {j.params["id"]: j for j in Job.objects.filter(params__layout=lj.pk)}
    assert rows["root"].pk == root.pk and len(rows) == 4
    Job.objects.filter(pk__in=[j.pk for j in rows.values()]).update(created=timezone.now() - timedelta(minutes=5))
    for name in ("b1", "r0"):
        _rq(rows[name].rq_id).delete(remove_from_queue=True, delete_dependents=False)
    report = reconcile()
    assert rows["b1"].pk in report.requeued
    b1 = _rq(f"terapan-block-{rows['b1'].pk}")
    assert b1.func_name == "webapp.panoramas.farm.run_node" and b1.get_status() == "queued"
    r0 = _rq(f"terapan-reduce-{rows['r0'].pk}")
    assert r0.func_name == "webapp.panoramas.farm.run_node" and r0.get_status() == "deferred"
    assert sorted(d.id for d in r0.fetch_dependencies()) == sorted(rows[k].rq_id for k in ("b0", "b1"))
    top = _rq(f"terapan-pyramid-{root.pk}")
    assert top.func_name == "webapp.panoramas.farm.run_root"
    assert [d.id for d in top.fetch_dependencies()] == [f"terapan-reduce-{rows['r0'].pk}"]
    # a second run of the same layout job replaces its graph instead of adding to it
    assert enqueue_graph(pano, tmp_path / "work", graph, root, lj) == 4
    assert Job.objects.filter(params__layout=lj.pk).count() == 4


def test_a_reconcile_pass_over_a_large_farm_reads_each_queue_once(farm_chain, tmp_path, settings) -> None:  # noqa: ANN001
    """Hundreds of queued block jobs: the pass reads each queue with one LRANGE (no LPOS
    per row, which is O(queue) each) and repairs nothing."""
    from webapp.panoramas.farm import enqueue_graph
    from webapp.panoramas.models import Job
    from webapp.panoramas.reconcile import reconcile

    settings.MEDIA_ROOT = tmp_path
    lj = Job.objects.get(pk=farm_chain.composite_job.pk)
    root = Job.objects.get(pk=farm_chain.pyramid_job.pk)
    n = 600
    graph = [{"id": f"b{i}", "kind": "block", "after": []} for i in range(n)]
    graph += [{"id": "root", "kind": "reduce", "after": [f"b{i}" for i in range(n)]}]
    enqueue_graph(root.panorama, tmp_path / "work", graph, root, lj)
    Job.objects.all().update(created=timezone.now() - timedelta(minutes=5))
    conn = django_rq.get_connection("default")
    conn.config_resetstat()
    report = reconcile()
    stats = conn.info("commandstats")
    assert report.checked >= n + 1 and report.requeued == [] and report.failed == []
    assert "cmdstat_lpos" not in stats  # every queued block was in the snapshot
    assert stats["cmdstat_lrange"]["calls"] <= 4  # default and gpu queues, each with its intermediate list
