"""The whole chain on real RQ workers and a real Redis: stacks -> composite ->
pyramid, then the DZI and a tile fetched over HTTP from a live server."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import django_rq
import pytest

from ._capture_helpers import make_panorama

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def clean_queues():
    for name in ("gpu", "default"):
        q = django_rq.get_queue(name)
        q.empty()
    yield
    for name in ("gpu", "default"):
        django_rq.get_queue(name).empty()


def test_chain_on_real_workers(live_server, settings, tmp_path: Path, clean_queues) -> None:
    from webapp.panoramas.models import Job, Stack, Status
    from webapp.panoramas.pipeline import enqueue_render
    from webapp.panoramas.workers import start_workers, stop_workers

    settings.MEDIA_ROOT = tmp_path / "media"
    pano = make_panorama(tmp_path, "tiny", n_stacks=10, frames=3, view_height=240, seed=3)
    sub = pano.subpanoramas.get()

    import os

    os.environ["MEDIA_ROOT"] = str(settings.MEDIA_ROOT)  # the workers' MEDIA_ROOT
    workers = start_workers(2)
    try:
        plan = enqueue_render(pano)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            pj = Job.objects.get(pk=plan.pyramid_job.pk)
            if pj.status == Status.DONE:
                break
            failed = Job.objects.filter(pk__in=[j.pk for j in plan.all_jobs()], status=Status.FAILED)
            assert not failed.exists(), [(j.kind, j.error) for j in failed]
            time.sleep(1)
        else:
            pytest.fail(
                "chain did not finish in time: " + str(list(Job.objects.values_list("kind", "status", "message")))
            )
    finally:
        stop_workers(workers)

    pano.refresh_from_db()
    assert pano.published_pyramid is not None
    pyr = pano.published_pyramid
    assert pyr.width > 2000 and pyr.height > 100
    comp = Job.objects.get(pk=plan.composite_job.pk).result
    assert comp["placed"] == comp["total"] == 10, comp["dropped"]
    # Every stack job recorded progress and its output exists.
    for s in Stack.objects.filter(subpanorama=sub):
        assert s.status == Status.DONE
        assert (Path(settings.MEDIA_ROOT) / s.output_path).exists()
    for j in plan.stack_jobs:
        j.refresh_from_db()
        assert j.progress == 100.0 and j.status == Status.DONE

    from django.urls import reverse

    dzi_url = live_server.url + reverse("viewer:dzi", kwargs={"pyramid_id": pyr.pk, "version": pyr.version})
    with urllib.request.urlopen(dzi_url) as r:
        body = r.read().decode()
        assert r.status == 200 and "Image" in body and str(pyr.width) in body
    tile_url = dzi_url.replace("image.dzi", f"image_files/0/0_0.{pyr.format}")
    with urllib.request.urlopen(tile_url) as r:
        assert r.status == 200 and len(r.read()) > 50
        assert "immutable" in r.headers["Cache-Control"]
