"""Issue 15, fault injection: the media disk fills up during a re-render.

MEDIA_ROOT sits on a small tmpfs (skipped where the sandbox does not allow
mounting). After version 1 is published, a filler file takes nearly all the
space and four stacks are re-rendered with a new recipe: the stack jobs fail
with the path they were writing, the chain stops before the composite (never
a composite of one new and three old stacks), the pyramid is not run and
version 1 stays served. Space back, retrying all four failed jobs resumes that
one chain once: version 2 is published, never a version 3.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ._capture_helpers import make_panorama
from ._fault_helpers import fault_env, wait_done, wait_for  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _fill(path: Path, leave: int) -> None:
    chunk = b"\0" * (1 << 20)
    with open(path, "wb") as fh:
        while True:
            st = os.statvfs(path.parent)
            free = st.f_bavail * st.f_frsize - leave
            if free <= 0:
                break
            fh.write(chunk[: min(len(chunk), free)])
            fh.flush()


@pytest.fixture
def small_disk(tmp_path: Path):  # noqa: ANN201
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mnt)], capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_stops_the_chain_and_retry_resumes_it_once(fault_env, small_disk, settings) -> None:  # noqa: ANN001, F811
    from webapp.panoramas.admin_views import retry_jobs
    from webapp.panoramas.models import Job, Pyramid, Stack, Status
    from webapp.panoramas.pipeline import enqueue_render
    from webapp.panoramas.rerender import execute, plan_rerender
    from webapp.panoramas.workers import start_workers, stop_workers

    media = small_disk / "media"
    settings.MEDIA_ROOT = media
    os.environ["MEDIA_ROOT"] = str(media)
    pano = make_panorama(fault_env, "fd", n_stacks=10, frames=3, view_height=240, seed=5)
    workers = start_workers(2)
    try:
        first = enqueue_render(pano)
        wait_done([j.pk for j in first.all_jobs()], timeout=300)
        pano.refresh_from_db()
        v1 = pano.published_pyramid
        assert v1.version == 1

        _fill(small_disk / "filler", leave=64 * 1024)  # less than one stack output
        four = list(Stack.objects.filter(subpanorama__panorama=pano).order_by("col")[3:7])
        chain = execute(plan_rerender(pano, stack_ids=[s.pk for s in four], overrides={"sharpen": {"amount": 1.7}}))
        rows = [j.pk for j in chain.all_jobs()]
        wait_for(
            lambda: Job.objects.get(pk=chain.pyramid_job.pk).status == Status.FAILED,
            240,
            "the chain to stop",
            every=0.25,
        )
        failed = list(Job.objects.filter(pk__in=[j.pk for j in chain.stack_jobs]))
        assert all(j.status == Status.FAILED for j in failed), [(j.status, j.error) for j in failed]
        for j in failed:
            assert "No space left on device" in j.error and str(media) in j.error, j.error
        comp = Job.objects.get(pk=chain.composite_job.pk)
        assert comp.status == Status.FAILED and "stack" in comp.error and "No space left" in comp.error
        assert "not run" in Job.objects.get(pk=chain.pyramid_job.pk).message
        pano.refresh_from_db()
        assert pano.published_pyramid_id == v1.pk  # the old version is still served
        assert list(Pyramid.objects.filter(panorama=pano).values_list("version", flat=True)) == [1]

        (small_disk / "filler").unlink()
        n = retry_jobs(failed)  # an admin retries all four failed jobs
        assert n == len(rows)  # the chain's six jobs, queued again once
        resumed = wait_done(rows, timeout=240)
        print(f"\nfull disk: stack error: {failed[0].error}\ncomposite: {comp.error[:300]}")
        print(f"retry of the 4 failed jobs: {n} jobs of one chain queued again, done in {resumed:.1f} s")
    finally:
        stop_workers(workers)
    pano.refresh_from_db()
    assert sorted(Pyramid.objects.filter(panorama=pano).values_list("version", flat=True)) == [1, 2]
    assert pano.published_pyramid.version == 2
    assert Job.objects.filter(panorama=pano).count() == len(first.all_jobs()) + len(rows)  # no parallel chain
    for s in four:
        s.refresh_from_db()
        assert s.status == Status.DONE and (media / s.output_path).exists()
