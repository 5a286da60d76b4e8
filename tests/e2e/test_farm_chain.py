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
        _wait(plan.pyramid_job.pk, pano)
        pano.refresh_from_db()
        pyr = pano.published_pyramid
        partial = _partial_rerender(pano, tmp_path, settings)
    finally:
        stop_workers(workers)

    assert pyr is not None and pyr.width > 1000
    blocks = Job.objects.filter(panorama=pano, kind=Job.Kind.BLOCK)
    reduces = Job.objects.filter(panorama=pano, kind=Job.Kind.REDUCE)
    v2, n_blocks, partial_layout, first_blocks = partial
    assert first_blocks >= 6 and reduces.count() >= 2
    assert not blocks.exclude(status=Status.DONE).exists() and not reduces.exclude(status=Status.DONE).exists()
    # the farm's pyramid is dzsave's pyramid of the same composite, tile by tile
    layout = Path(settings.MEDIA_ROOT) / pano.layout["path"]
    comp = export_composite(load_layout(layout), tmp_path / "composite.tif", 4 * 64)
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
    layout_job = Job.objects.get(pk=plan.composite_job.pk)
    assert layout_job.result["timings"]["features_stored"] == 8
    # completed block jobs left their rate for the planner
    assert "block_mp_per_s" in (tmp_path / "rates.json").read_text()
    # the partial re-render: fewer block jobs, a new version equal to dzsave of its own composite
    assert v2.version == pyr.version + 1 and 0 < n_blocks < first_blocks
    comp2 = export_composite(load_layout(partial_layout), tmp_path / "composite2.tif", 4 * 64)
    build_pyramid(comp2, tmp_path / "ref2", PyramidParams(tile_size=64, overlap=1, format="jpg", quality=80))
    ref2 = {p.relative_to(tmp_path / "ref2"): p.read_bytes() for p in (tmp_path / "ref2").rglob("*.jpg")}
    got2 = {p.relative_to(v2.abs_path): p.read_bytes() for p in v2.abs_path.rglob("*.jpg")}
    assert ref2.keys() == got2.keys() and [k for k in ref2 if ref2[k] != got2[k]] == []
    assert got2 != got  # the re-rendered stack changed some tiles
    linked = sum(1 for k in got if (v2.abs_path / k).stat().st_ino == (pyr.abs_path / k).stat().st_ino)
    assert linked >= len(got) // 3  # tiles away from the region are the previous version's files


def _wait(job_pk: int, pano) -> None:  # noqa: ANN001
    """Wait for the chain, running the reconciler as the workers do, but every second and
    with a short grace: it must leave a healthy farm chain alone (it once queued the root
    as a plain pyramid job before the layout had planned the farm)."""
    from webapp.panoramas import reconcile

    grace, reconcile.GRACE_SECONDS = reconcile.GRACE_SECONDS, 3
    try:
        _wait_reconciling(job_pk, pano, reconcile.reconcile)
    finally:
        reconcile.GRACE_SECONDS = grace


def _wait_reconciling(job_pk: int, pano, reconcile) -> None:  # noqa: ANN001
    from webapp.panoramas.models import Job, Status

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        report = reconcile()
        assert report.requeued == [] and report.failed == [], report
        if Job.objects.get(pk=job_pk).status == Status.DONE:
            return
        failed = Job.objects.filter(panorama=pano, status=Status.FAILED)
        assert not failed.exists(), [(j.kind, j.error) for j in failed]
        time.sleep(1)
    pytest.fail("farm chain did not finish: " + str(list(Job.objects.values_list("kind", "status", "message"))))


def _partial_rerender(pano, tmp_path: Path, settings):  # noqa: ANN001, ANN202
    """One stack re-rendered with a sharper recipe over its region, through the re-render plan."""
    from webapp.panoramas.models import Job, Stack
    from webapp.panoramas.rerender import execute, plan_rerender

    st = Stack.objects.filter(subpanorama__panorama=pano).order_by("col")[3]
    fp = st.footprint
    before = Job.objects.filter(panorama=pano, kind=Job.Kind.BLOCK).count()
    rplan = plan_rerender(
        pano, stack_ids=[st.pk], region=(fp["x"], fp["y"], fp["w"], fp["h"]), overrides={"sharpen": {"amount": 1.5}}
    )
    chain = execute(rplan)
    _wait(chain.pyramid_job.pk, pano)
    pano.refresh_from_db()
    layout_job = Job.objects.get(pk=chain.composite_job.pk)
    work = Path(settings.MEDIA_ROOT) / layout_job.result["work"]
    n_blocks = Job.objects.filter(panorama=pano, kind=Job.Kind.BLOCK).count() - before
    return pano.published_pyramid, n_blocks, work / f"partial-{layout_job.pk}.layout.json", before
