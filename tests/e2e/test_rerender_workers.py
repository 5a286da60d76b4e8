"""Issue 7 with real RQ workers and a real Redis: partial re-renders rewrite only
the expected tiles, a SIGKILLed worker's job completes on another worker, two
concurrent requests compute a stack once, and a failed stack's error reaches
the admin."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import django_rq
import pytest
from rq import Worker

from ._capture_helpers import make_panorama

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def env(settings, tmp_path: Path):  # noqa: ANN001, ANN201
    for name in ("gpu", "default"):
        django_rq.get_queue(name).empty()
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.TERAPAN_RETRY_INTERVALS = [0]
    os.environ["MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
    os.environ["TERAPAN_RETRY_INTERVALS"] = "0"
    yield tmp_path
    for name in ("gpu", "default"):
        django_rq.get_queue(name).empty()
    os.environ.pop("TERAPAN_RETRY_INTERVALS", None)


def _make_panorama(tmp_path: Path, n_stacks: int = 10, frames: int = 3, size: tuple[int, int] = (320, 240)):  # noqa: ANN202
    return make_panorama(tmp_path, "rr", n_stacks, frames, view_height=size[1], seed=5)


def _wait(job_pk: int, timeout: float = 300) -> None:
    from webapp.panoramas.models import Job, Status

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = Job.objects.get(pk=job_pk)
        if j.status == Status.DONE:
            return
        if j.status == Status.FAILED:
            pytest.fail(f"job {j.kind} #{j.pk} failed: {j.error}")
        time.sleep(0.5)
    pytest.fail(f"job #{job_pk} did not finish")


def test_region_rerender_rewrites_only_its_tiles(env: Path) -> None:
    from processing.tiles.pyramid import read_dzi, tiles_for_rect
    from webapp.panoramas.models import Job
    from webapp.panoramas.pipeline import enqueue_render
    from webapp.panoramas.rerender import execute, plan_rerender
    from webapp.panoramas.workers import start_workers, stop_workers

    pano = _make_panorama(env)
    workers = start_workers(2)
    try:
        plan = enqueue_render(pano)
        _wait(plan.pyramid_job.pk)
        pano.refresh_from_db()
        v1 = pano.published_pyramid
        files_v1 = {p.relative_to(v1.abs_path): p for p in v1.abs_path.rglob("*") if p.is_file()}

        # A region of about 5 % of the panorama, with a changed recipe.
        w, h = v1.width, v1.height
        region = (int(w * 0.40), int(h * 0.3), int(w * 0.05), int(h * 0.4))
        rplan = plan_rerender(pano, region=region, overrides={"sharpen": {"amount": 2.0}})
        assert 1 <= len(rplan.stacks) <= 3
        t0 = time.monotonic()
        chain = execute(rplan)
        _wait(chain.pyramid_job.pk)
        partial_s = time.monotonic() - t0
        pano.refresh_from_db()
        v2 = pano.published_pyramid
        assert v2.version == v1.version + 1
        res = Job.objects.get(pk=chain.pyramid_job.pk).result
        expected = tiles_for_rect(w, h, v1.tile_size, v1.overlap, tuple(rplan.region))
        assert res["tiles_rewritten"] == len(expected)
        assert res["tiles_rewritten"] < res["tiles_total"]
        top = max(t[0] for t in expected)
        top_total = sum(1 for rel in files_v1 if len(rel.parts) == 3 and rel.parts[1] == str(top))
        assert sum(1 for t in expected if t[0] == top) < top_total / 2  # full resolution: a small part
        info = read_dzi(v2.abs_path)
        assert (info["width"], info["height"]) == (w, h)
        # Unchanged tiles are hard links to v1's; changed ones are new files.
        linked = rewritten = 0
        for rel, p1 in files_v1.items():
            if rel.suffix not in (".jpg", ".png", ".webp"):
                continue
            p2 = v2.abs_path / rel
            assert p2.exists(), rel
            level, (col, row) = int(rel.parts[-2]), map(int, rel.stem.split("_"))
            if (level, col, row) in expected:
                rewritten += 1
                assert os.stat(p2).st_ino != os.stat(p1).st_ino
            else:
                linked += 1
                assert os.stat(p2).st_ino == os.stat(p1).st_ino
        assert rewritten == len(expected) and linked > 0
        # Re-running the unchanged recipe is a no-op: no new version.
        chain2 = execute(plan_rerender(pano, region=region))
        _wait(chain2.pyramid_job.pk)
        pano.refresh_from_db()
        assert pano.published_pyramid.version == v2.version
        for j in chain2.stack_jobs:
            assert Job.objects.get(pk=j.pk).result["reused"] is True
        print(f"\npartial re-render: {partial_s:.1f} s, {res['tiles_rewritten']}/{res['tiles_total']} tiles")
    finally:
        stop_workers(workers)


def _horse_pid(timeout: float = 120) -> tuple[int, Worker]:
    conn = django_rq.get_connection("gpu")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in Worker.all(connection=conn):
            w.refresh()
            if w.get_current_job_id() and w.horse_pid:
                return w.horse_pid, w
        time.sleep(0.05)
    pytest.fail("no worker picked the job up")


def test_sigkill_mid_job_then_another_worker_completes(env: Path) -> None:
    from webapp.panoramas.models import Job, Stack, Status
    from webapp.panoramas.pipeline import enqueue_render
    from webapp.panoramas.workers import start_workers, stop_workers

    pano = _make_panorama(env, n_stacks=10, frames=8, size=(960, 720))
    stack = Stack.objects.filter(subpanorama__panorama=pano).first()
    first = start_workers(1)
    try:
        plan = enqueue_render(pano, [stack], composite=False, pyramid=False)
        job = plan.stack_jobs[0]
        deadline = time.monotonic() + 120
        while Job.objects.get(pk=job.pk).status != Status.RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # mid-job
        # Kill the whole worker (its process group: worker and work horse) with SIGKILL.
        os.killpg(first[0].pid, signal.SIGKILL)
        first[0].wait()
        out_dir = Path(env / "media" / "panoramas" / str(pano.pk) / "stacks" / str(stack.pk))
        visible = [p for p in out_dir.glob("*.tif")] if out_dir.exists() else []
        assert visible == [], "a half-written output is visible after SIGKILL"
        # RQ's maintenance finds the abandoned job (its heartbeat lapsed) and retries it.
        from rq.registry import StartedJobRegistry

        q = django_rq.get_queue("gpu")
        StartedJobRegistry(queue=q).cleanup(timestamp=time.time() + 10_000)
    finally:
        stop_workers(first)
    second = start_workers(1)
    try:
        _wait(job.pk, timeout=300)
    finally:
        stop_workers(second)
    stack.refresh_from_db()
    assert stack.status == Status.DONE
    out = Path(env / "media" / stack.output_path)
    assert out.exists() and out.stat().st_size > 1000
    assert Job.objects.get(pk=job.pk).attempts >= 2


def test_concurrent_requests_compute_a_stack_once(env: Path) -> None:
    from webapp.panoramas.models import Job, Stack
    from webapp.panoramas.pipeline import enqueue_render
    from webapp.panoramas.workers import start_workers, stop_workers

    pano = _make_panorama(env, n_stacks=10, frames=3)
    stack = Stack.objects.filter(subpanorama__panorama=pano).first()
    a = enqueue_render(pano, [stack], composite=False, pyramid=False)
    b = enqueue_render(pano, [stack], composite=False, pyramid=False)
    workers = start_workers(2)
    try:
        _wait(a.stack_jobs[0].pk)
        _wait(b.stack_jobs[0].pk)
    finally:
        stop_workers(workers)
    results = [Job.objects.get(pk=j.pk).result for j in (a.stack_jobs[0], b.stack_jobs[0])]
    assert sorted(r["reused"] for r in results) == [False, True]
    assert results[0]["output"] == results[1]["output"]


def test_failed_stack_error_reaches_admin_and_others_complete(env: Path, admin_client) -> None:  # noqa: ANN001
    from webapp.panoramas.models import Frame, Job, Stack, Status
    from webapp.panoramas.pipeline import enqueue_render
    from webapp.panoramas.workers import start_workers, stop_workers

    pano = _make_panorama(env, n_stacks=10, frames=3)
    bad = Stack.objects.filter(subpanorama__panorama=pano).order_by("col")[3]
    for f in Frame.objects.filter(stack=bad):
        Path(f.original_path).write_bytes(b"not an image at all")
    workers = start_workers(2)
    try:
        plan = enqueue_render(pano)
        _wait(plan.pyramid_job.pk)
    finally:
        stop_workers(workers)
    bad.refresh_from_db()
    assert bad.status == Status.FAILED
    bad_job = Job.objects.get(stack=bad)
    assert bad_job.status == Status.FAILED and "stack_003" in bad_job.error and "readable" in bad_job.error
    assert bad_job.attempts == 1  # bad input is not retried
    done = Stack.objects.filter(subpanorama__panorama=pano, status=Status.DONE).count()
    assert done == 9
    pano.refresh_from_db()
    assert pano.published_pyramid is not None
    page = admin_client.get(f"/admin/panoramas/job/{bad_job.pk}/change/").content.decode()
    assert "no readable" in page
    assert "failed" in admin_client.get("/admin/panoramas/stack/").content.decode().lower()
