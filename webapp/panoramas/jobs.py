"""RQ job functions: thin glue between database rows and processing/.

Each job loads its rows, calls one processing function, saves results and
metrics. Outputs are keyed by a hash of inputs and recipe and written
atomically, so a job killed half-way leaves nothing half-written visible and
re-running an unchanged recipe is a no-op.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any

import django_rq
from django.conf import settings
from django.db import transaction
from django.db.models import Max

from processing.errors import InputError
from processing.params import recipe_hash

from . import storage
from .models import Frame, Job, Panorama, Pyramid, Stack, Status
from .progress import Reporter


def _lock(name: str, timeout: int):
    conn = django_rq.get_connection("default")
    return conn.lock(f"terapan:lock:{name}", timeout=timeout, blocking_timeout=timeout)


def _frame_fingerprint(f: Frame) -> str:
    if f.checksum:
        return f.checksum
    st = os.stat(f.original_path)
    return f"{f.original_path}:{st.st_size}:{st.st_mtime_ns}"


def stack_recipe(stack: Stack) -> dict[str, Any]:
    pano = stack.subpanorama.panorama
    merged = dict(pano.recipe_defaults.get("stack", {}))
    merged.update(stack.recipe or {})
    return merged


def _retries_left() -> int:
    import rq

    rq_job = rq.get_current_job()
    return int(rq_job.retries_left or 0) if rq_job is not None else 0


def _no_more_retries() -> None:
    import rq

    rq_job = rq.get_current_job()
    if rq_job is not None:
        rq_job.retries_left = 0


def _run(job_pk: int, kind: str, body) -> dict[str, Any]:
    job = Job.objects.select_related("stack__subpanorama__panorama", "panorama").get(pk=job_pk)
    if job.status == Status.CANCELED:
        return {"canceled": True}
    rep = Reporter(job, stack=job.stack)
    rep.start()
    t0 = time.perf_counter()
    try:
        result = body(job, rep)
    except Exception as e:
        if isinstance(e, InputError | ValueError):
            _no_more_retries()  # bad input fails the same way every time
        rep.fail(f"{type(e).__name__}: {e}", final=_retries_left() == 0)
        rep.log(traceback.format_exc(limit=5))
        raise
    result["seconds"] = round(time.perf_counter() - t0, 3)
    rep.finish(result, timings=result.get("timings"))
    return result


# ---------------------------------------------------------------- stack


def run_stack(job_pk: int) -> dict[str, Any]:
    return _run(job_pk, "stack", _stack_body)


def _stack_body(job: Job, rep: Reporter) -> dict[str, Any]:
    from processing.imageio import write_tiff16
    from processing.stackpipe import StackParams, process_stack

    stack = job.stack
    assert stack is not None
    pano = stack.subpanorama.panorama
    frames = list(stack.frames.all())
    if not frames:
        raise ValueError(f"stack {stack.name} has no frames")
    try:
        from webapp.ingest.services import verify_frames
    except ImportError:  # ingest app absent: nothing recorded to verify against
        verify_frames = None
    if verify_frames is not None:
        bad = verify_frames(stack)
        if bad:
            raise ValueError(f"originals changed or missing since import: {', '.join(bad[:5])}")
    params = StackParams.from_dict(stack_recipe(stack))
    scale = float(job.params.get("scale", pano.scale))
    rhash = recipe_hash(
        {"stack": params.to_dict(), "scale": scale},
        *sorted(_frame_fingerprint(f) for f in frames),
    )
    rel = storage.rel_stack_output(pano.pk, stack.pk, rhash)
    out = storage.absolute(rel)
    timeout = settings.TERAPAN_JOB_TIMEOUTS["stack"]
    reused = True
    metrics: dict[str, Any] = dict(stack.metrics or {})
    # Two workers never compute the same stack version at once: the second
    # waits here and then finds the output already made.
    with _lock(f"stack:{stack.pk}:{rhash}", timeout):
        if not out.exists():
            reused = False
            paths = [Path(f.original_path) for f in frames]
            res = process_stack(paths, scale, params, progress=rep)
            write_tiff16(out, res.image)
            metrics = dict(res.metrics)
            by_path = {str(Path(d["file"])): d for d in res.frames}
            with transaction.atomic():
                for f in frames:
                    d = by_path.get(str(Path(f.original_path))) or by_path.get(Path(f.original_path).name)
                    if d is None:
                        continue
                    f.sharpness = d.get("sharpness")
                    f.kept = d.get("kept")
                    f.reason = (d.get("reason") or "")[:300]
                    f.transform = d.get("transform") or []
                    f.save(update_fields=["sharpness", "kept", "reason", "transform"])
    changed = stack.recipe_hash != rhash
    Stack.objects.filter(pk=stack.pk).update(
        output_path=rel,
        recipe_hash=rhash,
        status=Status.DONE,
        progress=100.0,
        error="",
        metrics=metrics,
        version=stack.version + (1 if changed else 0),
    )
    return {
        "output": rel,
        "recipe_hash": rhash,
        "reused": reused,
        "timings": metrics.get("seconds", {}),
    }


# ---------------------------------------------------------------- composite


def run_composite(job_pk: int) -> dict[str, Any]:
    return _run(job_pk, "composite", _composite_body)


def _composite_body(job: Job, rep: Reporter) -> dict[str, Any]:
    from processing.stitch import StitchParams, stitch_files

    pano = job.panorama
    assert pano is not None
    stacks = [
        s
        for s in Stack.objects.filter(subpanorama__panorama=pano).order_by("subpanorama__order", "row", "col")
        if s.output_path and storage.absolute(s.output_path).exists()
    ]
    if not stacks:
        raise ValueError(f"panorama {pano.slug}: no rendered stacks to composite")
    paths = [storage.absolute(s.output_path) for s in stacks]
    placements: dict[str, dict[str, float]] = {}
    for s, p in zip(stacks, paths, strict=True):
        if s.yaw is not None:
            place = {"yaw": s.yaw, "pitch": s.pitch or 0.0}
            if s.focal_px:
                place["focal"] = s.focal_px * float(pano.scale)
            placements[str(p)] = place
    sp = dict(pano.recipe_defaults.get("stitch", {}))
    sp.setdefault("projection", pano.projection)
    sp.setdefault("wrap", pano.wrap)
    params = StitchParams.from_dict(sp)
    chash = recipe_hash({"stitch": params.to_dict()}, *[s.recipe_hash for s in stacks])
    rel = storage.rel_composite(pano.pk, chash)
    out = storage.absolute(rel)
    with _lock(f"composite:{pano.pk}:{chash}", settings.TERAPAN_JOB_TIMEOUTS["composite"]):
        res = stitch_files(paths, out, params, placements=placements or None, progress=rep)
    summary = res.summary() if hasattr(res, "summary") else dict(res)
    layout = res.layout_dict() if hasattr(res, "layout_dict") else summary.get("layout", {})
    footprints = res.footprints if hasattr(res, "footprints") else {}
    for s, p in zip(stacks, paths, strict=True):
        fp = footprints.get(str(p))
        if fp:
            Stack.objects.filter(pk=s.pk).update(footprint=fp)
    Panorama.objects.filter(pk=pano.pk).update(composite_path=rel, layout=layout)
    return {
        "composite": rel,
        "recipe_hash": chash,
        **{k: v for k, v in summary.items() if k != "layout"},
    }


# ---------------------------------------------------------------- pyramid


def run_pyramid(job_pk: int) -> dict[str, Any]:
    return _run(job_pk, "pyramid", _pyramid_body)


def next_pyramid_version(pano: Panorama) -> int:
    return (Pyramid.objects.filter(panorama=pano).aggregate(m=Max("version"))["m"] or 0) + 1


def publish(pyr: Pyramid) -> None:
    """The atomic switch: one row update makes the new version the served one."""
    Panorama.objects.filter(pk=pyr.panorama_id).update(published_pyramid=pyr)


def _pyramid_body(job: Job, rep: Reporter) -> dict[str, Any]:
    from processing.pyramid import PyramidParams, build_pyramid, update_pyramid

    pano = Panorama.objects.select_related("published_pyramid").get(pk=job.panorama_id)
    if not pano.composite_path or not storage.absolute(pano.composite_path).exists():
        raise ValueError(f"panorama {pano.slug}: no composite to tile")
    current = pano.published_pyramid
    if current is not None and current.stats.get("composite") == pano.composite_path and current.abs_path.exists():
        # Unchanged composite: re-running an unchanged recipe is a no-op.
        return {
            "pyramid": current.pk,
            "version": current.version,
            "noop": True,
            "tiles_rewritten": 0,
            "tiles_total": current.stats.get("tiles", 0),
        }
    params = PyramidParams.from_dict(pano.recipe_defaults.get("pyramid", {}))
    region = job.params.get("region")
    base = Pyramid.objects.filter(pk=job.params.get("base_pyramid")).first() if region else None
    with _lock(f"pyramid:{pano.pk}", settings.TERAPAN_JOB_TIMEOUTS["pyramid"]):
        version = next_pyramid_version(pano)
        rel = storage.rel_pyramid(pano.pk, version)
        composite = storage.absolute(pano.composite_path)
        if base is not None and base.abs_path.exists():
            params = PyramidParams(
                tile_size=base.tile_size,
                overlap=base.overlap,
                format=base.format,
                quality=params.quality,
            )
            info = update_pyramid(
                base.abs_path,
                composite,
                tuple(region),
                storage.absolute(rel),
                params,
                progress=rep,
            )
        else:
            info = build_pyramid(composite, storage.absolute(rel), params, progress=rep)
            info.setdefault("tiles_rewritten", info.get("tiles", 0))
            info.setdefault("tiles_total", info.get("tiles", 0))
        info["composite"] = pano.composite_path
        pyr = Pyramid.objects.create(
            panorama=pano,
            version=version,
            path=rel,
            width=info["width"],
            height=info["height"],
            tile_size=info.get("tile_size", params.tile_size),
            overlap=info.get("overlap", params.overlap),
            format=info.get("format", params.format),
            state=Pyramid.State.READY,
            parent=current,
            stats=info,
        )
    if job.params.get("publish", True):
        publish(pyr)
    return {
        "pyramid": pyr.pk,
        "version": version,
        "width": pyr.width,
        "height": pyr.height,
        "tiles_rewritten": info.get("tiles_rewritten"),
        "tiles_total": info.get("tiles_total"),
    }
