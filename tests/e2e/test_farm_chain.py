"""The farm chain on real RQ workers and a real Redis: stacks -> layout -> block
jobs -> reduce jobs -> published pyramid, equal tile by tile to dzsave of the
same composite."""

from __future__ import annotations

import os
import time
from pathlib import Path

import django_rq
import pytest

from ._capture_helpers import make_panorama

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def clean_queues():
    for name in ("gpu", "default"):
        django_rq.get_queue(name).empty()
    yield
    for name in ("gpu", "default"):
        django_rq.get_queue(name).empty()


def test_farm_chain_on_real_workers(settings, tmp_path: Path, clean_queues) -> None:
    from processing.stitch.blocks import export_composite, load_layout
    from processing.tiles.pyramid import PyramidParams, build_pyramid
    from webapp.panoramas.farm import enqueue_farm_render
    from webapp.panoramas.models import Job, Status
    from webapp.panoramas.workers import start_workers, stop_workers

    settings.MEDIA_ROOT = tmp_path / "media"
    os.environ["MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
    os.environ["TERAPAN_FARM_RATES"] = str(tmp_path / "rates.json")
    pano = make_panorama(tmp_path, "farm", n_stacks=8, frames=3, view_height=160, seed=4)
    pano.recipe_defaults = {"pyramid": {"tile_size": 64, "quality": 80}, "farm": {"block_tiles": 2}}
    pano.save(update_fields=["recipe_defaults"])
    workers = start_workers(2)
    try:
        plan = enqueue_farm_render(pano)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if Job.objects.get(pk=plan.pyramid_job.pk).status == Status.DONE:
                break
            failed = Job.objects.filter(panorama=pano, status=Status.FAILED)
            assert not failed.exists(), [(j.kind, j.error) for j in failed]
            time.sleep(1)
        else:
            pytest.fail("farm chain did not finish: " + str(list(Job.objects.values_list("kind", "status", "message"))))
    finally:
        stop_workers(workers)

    pano.refresh_from_db()
    pyr = pano.published_pyramid
    assert pyr is not None and pyr.width > 1000
    blocks = Job.objects.filter(panorama=pano, kind=Job.Kind.BLOCK)
    reduces = Job.objects.filter(panorama=pano, kind=Job.Kind.REDUCE)
    assert blocks.count() >= 8 and reduces.count() >= 2
    assert not blocks.exclude(status=Status.DONE).exists() and not reduces.exclude(status=Status.DONE).exists()
    # the farm's pyramid is dzsave's pyramid of the same composite, tile by tile
    layout = Path(settings.MEDIA_ROOT) / pano.layout["path"]
    comp = export_composite(load_layout(layout), tmp_path / "composite.tif", 2 * 64)
    build_pyramid(comp, tmp_path / "ref", PyramidParams(tile_size=64, overlap=1, format="jpg", quality=80))
    ref = {p.relative_to(tmp_path / "ref"): p.read_bytes() for p in (tmp_path / "ref").rglob("*.jpg")}
    got = {p.relative_to(pyr.abs_path): p.read_bytes() for p in pyr.abs_path.rglob("*.jpg")}
    assert ref.keys() == got.keys()
    assert [k for k in ref if ref[k] != got[k]] == []
    assert (pyr.abs_path / "image.dzi").is_file()
    # the stack jobs stored their features; the layout job used them instead of decoding
    from webapp.panoramas.models import Stack

    for st in Stack.objects.filter(subpanorama__panorama=pano):
        assert (Path(settings.MEDIA_ROOT) / (st.output_path + ".features.npz")).is_file()
    layout_job = Job.objects.get(panorama=pano, kind=Job.Kind.LAYOUT)
    assert layout_job.result["timings"]["features_stored"] == 8
    # completed block jobs left their rate for the planner
    assert "block_mp_per_s" in (tmp_path / "rates.json").read_text()
