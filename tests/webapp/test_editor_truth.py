"""Editors told the truth: missing workers, recipe errors with the valid
parameters, regions marked re-rendered, the Stacks action, runs with an ETA."""

from __future__ import annotations

from datetime import timedelta

import django_rq
import pytest
from django.utils import timezone
from rq import Worker

from webapp.panoramas.models import Job, Panorama, Pyramid, Stack, SubPanorama

pytestmark = pytest.mark.django_db


@pytest.fixture
def pano(db) -> Panorama:
    p = Panorama.objects.create(slug="p", title="P", composite_path="panoramas/1/composites/x.tif")
    pyr = Pyramid.objects.create(panorama=p, version=1, path="x", width=1000, height=200, state="ready")
    p.published_pyramid = pyr
    p.save()
    sub = SubPanorama.objects.create(panorama=p, name="main")
    for i in range(5):
        Stack.objects.create(
            subpanorama=sub, name=f"s{i}", col=i, footprint={"x": i * 200 - 20, "y": 10, "w": 240, "h": 180}
        )
    return p


@pytest.fixture
def empty_queues():
    for q in ("gpu", "default"):
        django_rq.get_queue(q).empty()
    yield
    for q in ("gpu", "default"):
        django_rq.get_queue(q).empty()


@pytest.fixture
def listening_worker():
    """A real RQ worker registered in the (real, embedded) Redis on both queues."""
    queues = [django_rq.get_queue("gpu"), django_rq.get_queue("default")]
    w = Worker(queues, connection=queues[0].connection, name="test-listener")
    w.register_birth()
    yield w
    w.register_death()


# ---------------------------------------------------------------- workers


def test_confirmation_warns_when_no_worker_listens(admin_client, pano):
    s = Stack.objects.get(name="s1")
    body = admin_client.get(f"/admin/panoramas/panorama/{pano.pk}/rerender/?stacks={s.pk}").content.decode()
    assert "No worker is listening to the &#x27;gpu&#x27; queue" in body
    assert "No worker is listening to the &#x27;default&#x27; queue" in body


def test_no_warning_with_a_worker(admin_client, pano, listening_worker):
    s = Stack.objects.get(name="s1")
    body = admin_client.get(f"/admin/panoramas/panorama/{pano.pk}/rerender/?stacks={s.pk}").content.decode()
    assert "No worker is listening" not in body


def test_progress_json_warns_about_queued_jobs_without_worker(admin_client, pano, empty_queues):
    s = Stack.objects.get(name="s2")
    admin_client.post(f"/admin/panoramas/panorama/{pano.pk}/rerender/", {"stacks": str(s.pk), "confirm": "yes"})
    data = admin_client.get(f"/admin/panoramas/panorama/{pano.pk}/progress.json").json()
    assert data["workers"] == {"gpu": 0, "default": 0}
    assert any("'gpu' queue" in w for w in data["warnings"])
    assert data["runs"][0]["stalled"] is True and data["runs"][0]["eta"] is None
    page = admin_client.get(f"/admin/panoramas/panorama/{pano.pk}/progress/").content.decode()
    assert 'id="warnings"' in page and "waiting for a worker" in page


# ---------------------------------------------------------------- recipe errors


def test_recipe_typo_keeps_plan_and_lists_valid_names(admin_client, pano, empty_queues):
    s = Stack.objects.get(name="s3")
    url = f"/admin/panoramas/panorama/{pano.pk}/rerender/"
    r = admin_client.get(url, {"stacks": str(s.pk), "params": "sharpen.amout=0.3"})
    assert r.status_code == 400
    body = r.content.decode()
    assert "s3" in body and "Tiles to re-encode" in body  # the plan is still there
    assert "unknown parameter(s) [&#x27;amout&#x27;]" in body
    assert "Did you mean <code>sharpen.amount</code>" in body
    assert "<code>sharpen.radius</code>" in body and "<code>fuse.method</code>" in body
    assert "sharpen: radius &gt; 0, amount &gt;= 0, threshold &gt;= 0" in body  # a stage's range rule
    assert 'value="yes" class="default" disabled' in body
    assert "sharpen.amout=0.3" in body  # the typed lines come back for correcting
    # Confirming anyway changes nothing.
    r = admin_client.post(url, {"stacks": str(s.pk), "params": "sharpen.amout=0.3", "confirm": "yes"})
    assert r.status_code == 400 and Job.objects.count() == 0
    s.refresh_from_db()
    assert s.recipe == {}
    # An out-of-range value is an error too.
    r = admin_client.get(url, {"stacks": str(s.pk), "params": "sharpen.radius=-2"})
    assert r.status_code == 400 and "radius &gt; 0" in r.content.decode()
    # The corrected line goes through.
    r = admin_client.post(url, {"stacks": str(s.pk), "params": "sharpen.amount=0.3", "confirm": "yes"})
    assert r.status_code == 302
    s.refresh_from_db()
    assert s.recipe == {"sharpen": {"amount": 0.3}}


def test_unknown_stage_suggests_stages():
    from webapp.panoramas.recipe_help import suggestions

    assert "sharpen" in suggestions("invalid recipe: stack: unknown stage(s) ['sharpn']")
    assert suggestions("invalid recipe: fuse: unknown parameter(s) ['methd']") == ["fuse.method"]


# ---------------------------------------------------------------- Stacks action


def test_stacks_admin_action_leads_to_confirmation(admin_client, pano):
    ids = list(Stack.objects.filter(name__in=["s1", "s2"]).values_list("pk", flat=True))
    page = admin_client.get("/admin/panoramas/stack/")
    assert "Re-render selected stacks…" in page.content.decode()
    r = admin_client.post(
        "/admin/panoramas/stack/", {"action": "rerender_selected_stacks", "_selected_action": [str(i) for i in ids]}
    )
    assert r.status_code == 302
    assert r["Location"] == f"/admin/panoramas/panorama/{pano.pk}/rerender/?stacks={ids[0]},{ids[1]}"
    other = Panorama.objects.create(slug="q", title="Q")
    sub = SubPanorama.objects.create(panorama=other, name="m")
    t = Stack.objects.create(subpanorama=sub, name="t0")
    r = admin_client.post(
        "/admin/panoramas/stack/",
        {"action": "rerender_selected_stacks", "_selected_action": [str(ids[0]), str(t.pk)]},
        follow=True,
    )
    assert "select stacks of one panorama" in r.content.decode()
    assert Job.objects.count() == 0


# ---------------------------------------------------------------- runs


def _job(pano, kind, status, **kw):
    return Job.objects.create(kind=kind, panorama=pano, status=status, **kw)


def test_runs_grouped_with_overall_eta(admin_client, pano, listening_worker):
    now = timezone.now()
    # An earlier, finished run: 2 stacks of 40 s, composite 20 s, pyramid 10 s.
    for kind, secs in (("stack", 40), ("stack", 40), ("composite", 20), ("pyramid", 10)):
        _job(pano, kind, "done", started=now - timedelta(seconds=secs), ended=now, progress=100)
    # The current run: one stack running (30 s left), one queued, then composite and pyramid.
    _job(pano, "stack", "running", progress=25, eta_seconds=30, started=now)
    _job(pano, "stack", "queued")
    _job(pano, "composite", "queued", params={"region": [0, 0, 10, 10]})
    _job(pano, "pyramid", "queued", params={"region": [0, 0, 10, 10]})
    data = admin_client.get(f"/admin/panoramas/panorama/{pano.pk}/progress.json").json()
    assert len(data["runs"]) == 2
    current, earlier = data["runs"]
    assert earlier["state"] == "done" and earlier["progress"] == 100 and earlier["eta"] is None
    assert current["state"] == "running" and current["kind"] == "partial re-render"
    assert current["counts"] == {"running": 1, "queued": 3}
    # One gpu worker: 30 s + 40 s of stacks, then 20 s composite + 10 s pyramid.
    assert current["eta"] == 100
    assert current["progress"] == pytest.approx(25 / 4, abs=0.1)
    assert data["warnings"] == []


def test_group_runs_cuts_at_pyramid_jobs(pano):
    from webapp.panoramas.runs import group_runs

    jobs = [_job(pano, k, "done") for k in ("stack", "composite", "pyramid", "stack", "stack", "composite", "pyramid")]
    jobs.append(_job(pano, "ingest", "done"))
    jobs.append(_job(pano, "stack", "queued"))
    runs = group_runs(jobs)
    assert [[j.kind for j in r] for r in runs] == [
        ["stack"],
        ["ingest"],
        ["stack", "stack", "composite", "pyramid"],
        ["stack", "composite", "pyramid"],
    ]


# ---------------------------------------------------------------- region status


def test_published_rerender_marks_regions_rerendered(make_pano, users, media, tmp_path):
    """The real pyramid job publishes a new version; regions inside its rectangle move on."""
    from tests.webapp.conftest import make_image
    from webapp.panoramas.jobs import run_pyramid
    from webapp.review.models import Region

    pano = make_pano()
    comp = media / "panoramas" / str(pano.pk) / "composites" / "c.png"
    comp.parent.mkdir(parents=True)
    make_image(comp, seed=9)
    pano.composite_path = str(comp.relative_to(media))
    pano.save()

    def region(x, y, w, h, status="needs_rerender"):
        return Region.objects.create(panorama=pano, version=1, target={}, x=x, y=y, w=w, h=h, status=status)

    inside = region(20, 20, 40, 40)
    outside = region(200, 20, 40, 40)
    approved = region(30, 30, 10, 10, status="approved")
    job = Job.objects.create(kind="pyramid", panorama=pano, params={"publish": True, "region": [0, 0, 120, 100]})
    result = run_pyramid(job.pk)
    assert result["version"] == 2
    pano.refresh_from_db()
    assert pano.published_pyramid.version == 2
    statuses = {r.pk: r.status for r in Region.objects.all()}
    assert statuses == {inside.pk: "rerendered", outside.pk: "needs_rerender", approved.pk: "approved"}


def test_full_build_marks_every_waiting_region(make_pano, users):
    from webapp.panoramas.region_status import mark_rerendered
    from webapp.review.models import Region

    pano = make_pano(versions=2)
    old = Region.objects.create(panorama=pano, version=1, target={}, x=0, y=0, w=300, h=200, status="needs_rerender")
    new = Region.objects.create(panorama=pano, version=2, target={}, x=0, y=0, w=10, h=10, status="needs_rerender")
    assert mark_rerendered(None, pyramid=pano.published_pyramid, region=None) == 1
    old.refresh_from_db()
    new.refresh_from_db()
    # Drawn on the version being published: it has not been re-rendered yet.
    assert old.status == "rerendered" and new.status == "needs_rerender"
