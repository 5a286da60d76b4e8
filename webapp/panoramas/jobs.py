"""RQ job functions: thin glue between database rows and processing/.

Each job loads its rows, calls one processing function, saves results and
metrics. Outputs are keyed by a hash of inputs and recipe and written
atomically, so a job killed half-way leaves nothing half-written visible and
re-running an unchanged recipe is a no-op.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max

from processing.io.errors import InputError
from processing.io.params import recipe_hash

from . import storage
from .leases import lease
from .models import Frame, Job, Panorama, Pyramid, Stack, Status
from .pipeline import fail_dependents
from .progress import Reporter
from .signals import pyramid_published
from .sky_merge import ground_target, merge_sky_stacks, split_sky_stacks


class ChainError(ValueError):
    """The chain cannot go on (a stack of it failed or its output is missing): no retries."""


def _remove_dead_temporaries(folder: Path, prefix: str) -> int:
    """Remove the temporary files and staging folders named PREFIX* in FOLDER.

    Called while holding the lease of the output they belong to: no live job
    writes them, so they are what a killed job left behind.
    """
    import shutil

    n = 0
    if not folder.is_dir():
        return 0
    for p in folder.glob(prefix + "*"):
        if ".tmp" not in p.name and ".staging." not in p.name:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        n += 1
    return n


def _writing(job: Job, path: Path) -> None:
    """Remember the file JOB writes now, so that an OSError without a path can name it."""
    job._terapan_writing = str(path)  # type: ignore[attr-defined]


def _describe(job: Job, e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    if isinstance(e, OSError) and not e.filename:
        where = getattr(job, "_terapan_writing", None)
        if where:
            text += f" (writing {where})"
    if isinstance(e, MemoryError):
        text = f"MemoryError: out of memory in {job.kind} #{job.pk} ({job.stage or 'start'})"
        where = getattr(job, "_terapan_writing", None)
        if where:
            text += f" while making {where}"
    return text


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
    if job.status in (Status.CANCELED, Status.DONE, Status.FAILED):
        # Canceled, failed with its chain, or a duplicate delivery of a finished
        # job: nothing to do (a retry sets the row to queued first).
        return {"skipped": job.status}
    rep = Reporter(job, stack=job.stack)
    rep.start()
    t0 = time.perf_counter()
    try:
        result = body(job, rep)
    except (Exception, MemoryError) as e:
        if isinstance(e, InputError | ValueError):
            _no_more_retries()  # bad input fails the same way every time
        final = _retries_left() == 0
        job.refresh_from_db(fields=["stage"])
        error = _describe(job, e)
        rep.fail(error, final=final)
        rep.log(traceback.format_exc(limit=5))
        if final and kind != "stack":  # the composite decides about failed stacks itself
            fail_dependents(job, f"{kind} #{job.pk} failed: {error}")
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
    with lease(f"stack:{stack.pk}:{rhash}", timeout):
        if not out.exists():
            _remove_dead_temporaries(out.parent, f".{out.stem}.")
            _writing(job, out)
            reused = False
            paths = [Path(f.original_path) for f in frames]
            res = process_stack(paths, scale, params, progress=rep, result_dtype="uint16")
            # Uncompressed: zlib saves ~6 % of a noisy 16-bit stack for 4.4 CPU s here and
            # 0.7 s in every block job that reads it (demo stack: 94 MB against 88 MB).
            write_tiff16(out, res.image, compress=False)
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


def stitch_params(pano: Panorama) -> Any:
    """The panorama's stitch recipe, with its projection and wrap as defaults."""
    from processing.stitch.pipeline import StitchParams

    sp = dict(pano.recipe_defaults.get("stitch", {}))
    sp.setdefault("projection", pano.projection)
    sp.setdefault("wrap", pano.wrap)
    return StitchParams.from_dict(sp)


def stitch_stacks(
    pano: Panorama, stacks: list[Stack], paths: list[Path], out: Path, params: Any, rep: Reporter, render: bool = True
) -> dict[str, Any]:
    """Stitch the stack outputs PATHS into OUT (only the layout when not RENDER), with the
    stacks' rig angles as placements; records each stack's footprint on the canvas."""
    from processing.stitch.pipeline import stitch_files
    from processing.stitch.registration import Placement

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
    res = stitch_files(paths, out, params, placements=placements or None, progress=_stitch_progress(rep), render=render)
    by_name = {c["file"]: c["bbox"] for c in res.cameras}
    for s, p in zip(stacks, paths, strict=True):
        bbox = by_name.get(p.name)
        Stack.objects.filter(pk=s.pk).update(footprint={k: int(bbox[k]) for k in ("x", "y", "w", "h")} if bbox else {})
    for d in res.dropped:
        rep.log(f"dropped {d['file']}: {d['reason']}")
    return {**res.summary(), "timings": res.timings}


def _stitch_progress(rep: Reporter):  # noqa: ANN202
    weights = {"features": (0.0, 0.25), "register": (0.25, 0.35), "render": (0.35, 1.0)}

    def progress(stage: str, done: int, total: int) -> None:
        lo, hi = weights.get(stage, (0.35, 1.0))
        rep(lo + (hi - lo) * done / max(1, total), f"{stage}: {done}/{total}")

    return progress


def _composite_inputs(job: Job, rep: Reporter) -> list[Stack]:
    """The stacks to composite, each at its newest output; ChainError when a
    stack of the chain did not finish or an output is missing (never a
    composite of new and old versions). A stack that failed on bad input and never had an
    output is left out, as the stitcher leaves out what it cannot place."""
    pano = job.panorama
    chain_rows = {j.stack_id: j for j in Job.objects.filter(pk__in=job.params.get("after", []), kind=Job.Kind.STACK)}
    stacks: list[Stack] = []
    for s in Stack.objects.filter(subpanorama__panorama=pano).order_by("subpanorama__order", "row", "col"):
        had_output = bool(s.output_path)
        row = chain_rows.get(s.pk)
        if row is not None and row.status != Status.DONE:
            reason = (row.error or row.message or row.status).splitlines()[0][:300]
            if row.status in (Status.FAILED, Status.CANCELED) and not had_output:
                rep.log(f"left out {s.name}: {reason}")
                continue
            raise ChainError(f"stack {s.name} (job #{row.pk}) {row.status}: {reason}; retry the chain to resume it")
        # A stack re-rendered by a later chain since: its newest output is used.
        if not had_output:
            continue
        path = storage.absolute(s.output_path)
        if not path.exists():
            raise ChainError(f"stack {s.name}: output missing: {path}")
        stacks.append(s)
    return stacks


def _composite_body(job: Job, rep: Reporter) -> dict[str, Any]:
    from processing.stitch.composite import layout_path_for, patch_composite

    pano = job.panorama
    assert pano is not None
    stacks = _composite_inputs(job, rep)
    stacks, sky_stacks = split_sky_stacks(stacks)  # the sky capture is merged in last
    if not stacks:
        raise ValueError(f"panorama {pano.slug}: no rendered stacks to composite")
    paths = [storage.absolute(s.output_path) for s in stacks]
    params = stitch_params(pano)
    chash = recipe_hash({"stitch": params.to_dict()}, *[s.recipe_hash for s in stacks + sky_stacks])
    rel = storage.rel_composite(pano.pk, chash)
    out = storage.absolute(rel)
    region = job.params.get("region")
    base_rel = job.params.get("base_composite")
    result: dict[str, Any] = {"composite": rel, "recipe_hash": chash, "partial": False}
    ground_out = ground_target(out, sky_stacks)  # with a sky capture the merge writes OUT
    with lease(f"composite:{pano.pk}:{chash}", settings.TERAPAN_JOB_TIMEOUTS["composite"]):
        _remove_dead_temporaries(out.parent, f".{out.stem}.")
        _writing(job, out)
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
            info = patch_composite(
                storage.absolute(base_rel), replacements, tuple(region), ground_out, bits=params.bits
            )
            result.update(partial=True, region=info["rect"], width=info["width"], height=info["height"])
        else:
            result.update(stitch_stacks(pano, stacks, paths, ground_out, params, rep))
        if sky_stacks:
            rep(0.95, f"merging the sky capture ({len(sky_stacks)} stacks)")
            patched = storage.absolute(base_rel) if result["partial"] else None
            result["sky"] = merge_sky_stacks(out, sky_stacks, pano.scale, params.bits, patched, result.get("region"))
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
    chain = job.params.get("chain")
    made = Pyramid.objects.filter(panorama=pano, stats__chain=chain).first() if chain else None
    if made is not None:
        # This chain already made (and published) its version: at most once per chain.
        return {"pyramid": made.pk, "version": made.version, "noop": True, "tiles_rewritten": 0}
    params = PyramidParams.from_dict(pano.recipe_defaults.get("pyramid", {}))
    region = job.params.get("region")
    base = Pyramid.objects.filter(pk=job.params.get("base_pyramid")).first() if region else None
    with lease(f"pyramid:{pano.pk}", settings.TERAPAN_JOB_TIMEOUTS["pyramid"]):
        version = next_pyramid_version(pano)
        rel = storage.rel_pyramid(pano.pk, version)
        target = storage.absolute(rel)
        _remove_dead_temporaries(target.parent, ".v")
        if target.exists():  # renamed into place by a job killed before it recorded the row
            import shutil

            shutil.rmtree(target)
        _writing(job, target)
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
        if chain:
            info["chain"] = chain
        publish_now = job.params.get("publish", True)
        with transaction.atomic():
            pyr = _record_pyramid(pano, version, rel, info, params, current)
            if publish_now:
                publish(pyr)
    if publish_now:
        # Listeners (region statuses) must never fail a version already published.
        for _, res in pyramid_published.send_robust(sender=Pyramid, pyramid=pyr, region=region):
            if isinstance(res, Exception):
                rep.log(f"after publishing v{version}: {type(res).__name__}: {res}")
    return {
        "pyramid": pyr.pk,
        "version": version,
        "width": pyr.width,
        "height": pyr.height,
        "tiles_rewritten": info.get("tiles_rewritten"),
        "tiles_total": info.get("tiles_total"),
    }


def _record_pyramid(pano: Panorama, version: int, rel: str, info: dict, params, current) -> Pyramid:  # noqa: ANN001
    return Pyramid.objects.create(
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
