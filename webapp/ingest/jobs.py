"""RQ jobs of the ingest app: the import itself and admin thumbnails."""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import django_rq
from django.conf import settings

from processing.capture.ingest import preview_image
from processing.io.atomic import atomic_path
from webapp.panoramas.models import Job, Stack, Status
from webapp.panoramas.progress import Reporter

from . import services

THUMBS_PER_STACK = 3
THUMB_SIDE = 256
# Share of the progress bar each phase gets (the scan dominates on a cold cache).
_PHASES = {"count": (0.0, 0.02), "scan": (0.02, 0.45), "bursts": (0.45, 0.5), "repeats": (0.5, 0.55)}
_PHASES["import"] = (0.55, 1.0)


def thumbs_dir(stack: Stack) -> Path:
    return (
        Path(settings.MEDIA_ROOT)
        / "panoramas"
        / str(int(stack.subpanorama.panorama_id))
        / "thumbs"
        / str(int(stack.pk))
    )


def enqueue_import(job: Job) -> Job:
    """Queue JOB (kind ingest, params filled) on the default queue."""
    q = django_rq.get_queue("default")
    rq_job = q.enqueue(run_ingest, job.pk, job_timeout=3600, result_ttl=86400, failure_ttl=7 * 86400)
    Job.objects.filter(pk=job.pk).update(rq_id=rq_job.id, status=Status.QUEUED)
    job.rq_id = rq_job.id
    return job


def run_ingest(job_pk: int) -> dict[str, Any]:
    """Import (or dry-run) the capture described by the Job row's params."""
    job = Job.objects.get(pk=job_pk)
    if job.status == Status.CANCELED:
        return {"canceled": True}
    rep = Reporter(job)
    rep.start()
    p = job.params
    t0 = time.perf_counter()

    def progress(stage: str, done: int, total: int) -> None:
        lo, hi = _PHASES.get(stage, (0.0, 1.0))
        frac = done / total if total else 0.0
        what = "files" if stage in ("scan", "count") else ("frames" if stage == "import" else "")
        msg = f"{stage}: {done}" + (f" / {total} {what}" if total else f" {what}")
        rep(lo + (hi - lo) * min(1.0, frac), msg.strip())

    try:
        root = services.resolve_import_dir(p["folder"])
        result = services.import_capture(
            p["slug"],
            root,
            subpanorama=p.get("subpanorama") or None,
            dry_run=bool(p.get("dry_run")),
            angles_csv=p.get("angles") or None,
            params=services.make_params(columns=p.get("columns"), gap=p.get("gap")),
            progress=progress,
        )
    except Exception as e:
        rep.fail(f"{type(e).__name__}: {e}")
        rep.log(traceback.format_exc(limit=5))
        raise
    result["seconds"] = round(time.perf_counter() - t0, 3)
    if result.get("panorama_id"):
        Job.objects.filter(pk=job.pk).update(panorama_id=result["panorama_id"])
        stack_ids = list(
            Stack.objects.filter(subpanorama__panorama_id=result["panorama_id"]).values_list("pk", flat=True)
        )
        if stack_ids:
            try:
                enqueue_thumbnails(stack_ids, panorama_id=result["panorama_id"])
            except Exception as e:  # thumbnails are a convenience
                rep.log(f"thumbnails not queued: {e}")
    rep.finish(result, timings={"total": result["seconds"]})
    return {k: result[k] for k in ("stacks_found", "frames_placed", "dry_run") if k in result}


def enqueue_thumbnails(stack_ids: list[int], panorama_id: int | None = None) -> Job:
    job = Job.objects.create(
        kind=Job.Kind.THUMBNAILS,
        panorama_id=panorama_id,
        params={"stack_ids": [int(s) for s in stack_ids]},
    )
    q = django_rq.get_queue("default")
    rq_job = q.enqueue(make_thumbnails, job.params["stack_ids"], job.pk, job_timeout=3600)
    Job.objects.filter(pk=job.pk).update(rq_id=rq_job.id)
    return job


def make_thumbnails(stack_ids: list[int], job_pk: int | None = None) -> dict[str, Any]:
    """A few small JPEGs per stack (first, middle and last frame) under
    MEDIA_ROOT/panoramas/<panorama id>/thumbs/<stack id>/<frame id>.jpg.
    Existing thumbnails are kept; failures are counted, not fatal."""
    rep = None
    if job_pk is not None:
        job = Job.objects.get(pk=job_pk)
        rep = Reporter(job)
        rep.start()
    made = kept = failed = 0
    stacks = Stack.objects.filter(pk__in=stack_ids).select_related("subpanorama")
    n = len(stack_ids) or 1
    for i, stack in enumerate(stacks.iterator()):
        frames = list(stack.frames.order_by("capture_time", "original_path").only("pk", "original_path"))
        if not frames:
            continue
        picks = sorted({0, len(frames) // 2, len(frames) - 1})[:THUMBS_PER_STACK]
        out_dir = thumbs_dir(stack)
        for k in picks:
            f = frames[k]
            target = out_dir / f"{int(f.pk)}.jpg"
            if target.exists():
                kept += 1
                continue
            try:
                kind = "raw" if Path(f.original_path).suffix.lower() in _raw_exts() else "image"
                im = preview_image(f.original_path, kind, THUMB_SIDE)
                with atomic_path(target) as tmp:
                    im.save(tmp, "JPEG", quality=80)
                made += 1
            except Exception:  # a bad original must not stop the others
                failed += 1
        if rep is not None:
            rep((i + 1) / n, f"thumbnails: {i + 1} / {n} stacks")
    result = {"made": made, "kept": kept, "failed": failed}
    if rep is not None:
        rep.finish(result)
    return result


def _raw_exts() -> set[str]:
    from processing.io.imageio import RAW_EXTS

    return RAW_EXTS


__all__ = ["enqueue_import", "enqueue_thumbnails", "make_thumbnails", "run_ingest", "thumbs_dir"]
