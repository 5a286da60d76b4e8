"""RQ job functions: thin glue between database rows and processing/.

Each job loads its rows, calls one processing function, saves results and
metrics. Outputs are keyed by a hash of inputs and recipe and written
atomically, so a job killed half-way leaves nothing half-written visible and
re-running an unchanged recipe is a no-op.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

import django_rq
from django.conf import settings
from django.db import transaction
from django.db.models import Max

from processing.io.errors import InputError
from processing.io.params import recipe_hash

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
    if job.status in (Status.CANCELED, Status.DONE):
        # Canceled, or a duplicate delivery of a finished job: nothing to do.
        return {"skipped": job.status}
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
    from processing.io.imageio import write_tiff16
    from processing.stack.pipeline import StackParams, process_stack

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
            res = process_stack(paths, scale, params, progress=rep, result_dtype="uint16")
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


def _stitch_progress(rep: Reporter):  # noqa: ANN202
    weights = {"features": (0.0, 0.25), "register": (0.25, 0.35), "render": (0.35, 1.0)}

    def progress(stage: str, done: int, total: int) -> None:
        lo, hi = weights.get(stage, (0.35, 1.0))
        rep(lo + (hi - lo) * done / max(1, total), f"{stage}: {done}/{total}")

    return progress


def _composite_body(job: Job, rep: Reporter) -> dict[str, Any]:
    from processing.stitch.composite import layout_path_for, patch_composite
    from processing.stitch.pipeline import StitchParams, stitch_files
    from processing.stitch.registration import Placement

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
    sp = dict(pano.recipe_defaults.get("stitch", {}))
    sp.setdefault("projection", pano.projection)
    sp.setdefault("wrap", pano.wrap)
    params = StitchParams.from_dict(sp)
    chash = recipe_hash({"stitch": params.to_dict()}, *[s.recipe_hash for s in stacks])
    rel = storage.rel_composite(pano.pk, chash)
    out = storage.absolute(rel)
    region = job.params.get("region")
    base_rel = job.params.get("base_composite")
    result: dict[str, Any] = {"composite": rel, "recipe_hash": chash, "partial": False}
    with _lock(f"composite:{pano.pk}:{chash}", settings.TERAPAN_JOB_TIMEOUTS["composite"]):
        if out.exists() and layout_path_for(out).exists():
            result["reused"] = True
        elif region and base_rel and storage.absolute(base_rel).exists():
            # Swap in the re-rendered stacks and re-blend only their area.
            base_layout = json.loads(layout_path_for(storage.absolute(base_rel)).read_text())
            by_dir = {str(Path(im["path"]).parent): im["path"] for im in base_layout["images"]}
            replacements = {
                by_dir[str(p.parent)]: str(p)
                for p in paths
                if str(p.parent) in by_dir and by_dir[str(p.parent)] != str(p)
            }
            rep(0.1, f"re-blending {region} with {len(replacements)} new stack(s)")
            info = patch_composite(storage.absolute(base_rel), replacements, tuple(region), out, bits=params.bits)
            result.update(partial=True, region=info["rect"], width=info["width"], height=info["height"])
        else:
            # The stitcher keys placements by file name (stack outputs have unique hash names).
            placements = {
                p.name: Placement(
                    yaw=s.yaw,
                    pitch=s.pitch or 0.0,
                    roll=0.0,
                    focal=s.focal_px * float(pano.scale) if s.focal_px else None,
                )
                for s, p in zip(stacks, paths, strict=True)
                if s.yaw is not None
            }
            res = stitch_files(paths, out, params, placements=placements or None, progress=_stitch_progress(rep))
            result.update(res.summary())
            result["timings"] = res.timings
            by_name = {c["file"]: c["bbox"] for c in res.cameras}
            for s, p in zip(stacks, paths, strict=True):
                bbox = by_name.get(p.name)
                Stack.objects.filter(pk=s.pk).update(
                    footprint={k: int(bbox[k]) for k in ("x", "y", "w", "h")} if bbox else {}
                )
            for d in res.dropped:
                rep.log(f"dropped {d['file']}: {d['reason']}")
    layout = json.loads(layout_path_for(out).read_text())
    Panorama.objects.filter(pk=pano.pk).update(
        composite_path=rel,
        layout={
            "path": str(layout_path_for(Path(rel))),
            "width": layout["canvas"].get("width"),
            "height": layout["canvas"].get("height"),
        },
    )
    return result


# ---------------------------------------------------------------- pyramid


def run_pyramid(job_pk: int) -> dict[str, Any]:
    return _run(job_pk, "pyramid", _pyramid_body)


def next_pyramid_version(pano: Panorama) -> int:
    return (Pyramid.objects.filter(panorama=pano).aggregate(m=Max("version"))["m"] or 0) + 1


def publish(pyr: Pyramid) -> None:
    """The atomic switch: one row update makes the new version the served one."""
    Panorama.objects.filter(pk=pyr.panorama_id).update(published_pyramid=pyr)


def _pyramid_body(job: Job, rep: Reporter) -> dict[str, Any]:
    from processing.tiles.pyramid import PyramidParams, build_pyramid, update_pyramid

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
