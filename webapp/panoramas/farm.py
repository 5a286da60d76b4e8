"""The render chain on a farm of RQ workers: stacks -> layout -> block jobs -> reduce jobs.

The layout job registers the stacks and solves the layout (one job: cheap, and
already linear in the stacks), then enqueues the graph of processing.tiles.blocks
on the "default" queue: one block job per K x K tiles of the full-resolution
level, reduce jobs per region depending on the blocks (and their neighbours)
under them, and the root, which is the chain's pyramid job: it renames the
staging folder to the next pyramid version and publishes it. Every worker on
every host that shares MEDIA_ROOT and Redis takes part; a failed or killed job
is retried alone (RQ's retries) and redoes only its own area.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from processing.io.params import recipe_hash

from . import storage
from .jobs import _run, next_pyramid_version, publish, stitch_params, stitch_stacks
from .leases import lease
from .models import Job, Panorama, Pyramid, Stack, Status
from .pipeline import RenderPlan, _drop_rq, enqueue_with

#: Block side in tiles (a power of two): 8 x 254 px = 2032 px, about 4 MP per block job.
DEFAULT_BLOCK_TILES = 8


def farm_settings(pano: Panorama) -> dict[str, Any]:
    from processing.tiles.pyramid import PyramidParams

    p = PyramidParams.from_dict(pano.recipe_defaults.get("pyramid", {}))
    farm = pano.recipe_defaults.get("farm", {})
    return {
        "tile_size": p.tile_size,
        "overlap": p.overlap,
        "format": "jpg",
        "quality": p.quality,
        "block_tiles": int(farm.get("block_tiles", DEFAULT_BLOCK_TILES)),
    }


def _enqueue_stacks(pano: Panorama, stacks: Iterable[Stack], chain: str) -> list[Job]:
    timeouts = settings.TERAPAN_JOB_TIMEOUTS
    rows = []
    for s in stacks:
        job = Job.objects.create(
            kind=Job.Kind.STACK, panorama=pano, stack=s, params={"scale": pano.scale, "chain": chain}
        )
        Stack.objects.filter(pk=s.pk).update(status=Status.QUEUED, progress=0.0)
        enqueue_with(job, "gpu", "webapp.panoramas.farm.run_stack_with_features", timeouts["stack"])
        rows.append(job)
    return rows


def _enqueue_layout(pano: Panorama, stack_jobs: list[Job], func: str, extra: dict[str, Any]) -> RenderPlan:
    """The layout row after the stacks, and the pyramid (root) row it fills in and queues
    once it has planned the farm; both in the stacks' chain, so a failed layout fails the
    root and the reconciler leaves the root to the layout."""
    chain = stack_jobs[0].params["chain"] if stack_jobs else uuid.uuid4().hex
    after = [j.pk for j in stack_jobs]
    lj = Job.objects.create(kind=Job.Kind.LAYOUT, panorama=pano, params={"chain": chain, "after": after})
    pj = Job.objects.create(
        kind=Job.Kind.PYRAMID,
        panorama=pano,
        params={"farm": True, "publish": True, "chain": chain, "after": [lj.pk]},
    )
    lj.params = {**lj.params, **extra, "pyramid_job": pj.pk}
    lj.save(update_fields=["params"])
    enqueue_with(lj, "default", func, settings.TERAPAN_JOB_TIMEOUTS["composite"])
    return RenderPlan(stack_jobs=stack_jobs, composite_job=lj, pyramid_job=pj)


def enqueue_farm_render(pano: Panorama, stacks: Iterable[Stack] | None = None) -> RenderPlan:
    """Queue stack jobs (that also store their features), the layout job after them, and the
    pyramid (root) row the layout job fills in."""
    if stacks is None:
        stacks = Stack.objects.filter(subpanorama__panorama=pano)
    stack_jobs = _enqueue_stacks(pano, stacks, uuid.uuid4().hex)
    return _enqueue_layout(pano, stack_jobs, "webapp.panoramas.farm.run_layout", {})


def run_stack_with_features(job_pk: int) -> dict[str, Any]:
    """The stack job, then its output's registration features (features where the pixels are)."""
    from processing.stitch.features_store import load_features, store_features
    from processing.stitch.pipeline import StitchParams

    from .jobs import run_stack

    t0 = time.perf_counter()
    result = run_stack(job_pk)
    job = Job.objects.select_related("stack").get(pk=job_pk)
    if isinstance(result, dict) and not result.get("reused") and not result.get("skipped"):
        from .rates import record_rate

        record_rate("stack_s", time.perf_counter() - t0, source="job")  # what plan uses per stack
    if job.status != Status.DONE or not job.stack or not job.stack.output_path:
        return result
    pano = job.panorama
    n = Stack.objects.filter(subpanorama__panorama_id=job.stack.subpanorama.panorama_id).count()
    sp = StitchParams.from_dict(
        {
            k: v
            for k, v in (pano.recipe_defaults.get("stitch", {}) if pano else {}).items()
            if k in ("proxy_mp", "nfeatures")
        }
    )
    out = storage.absolute(job.stack.output_path)
    if load_features(out, n, sp.proxy_mp, sp.nfeatures) is None:
        store_features(out, n, sp.proxy_mp, sp.nfeatures)
    return {**result, "features": True} if isinstance(result, dict) else result


# ---------------------------------------------------------------- layout


def run_layout(job_pk: int) -> dict[str, Any]:
    return _run(job_pk, "layout", _layout_body)


def _layout_body(job: Job, rep) -> dict[str, Any]:  # noqa: ANN001
    from processing.stitch.blocks import plan_farm

    pano = job.panorama
    assert pano is not None
    stacks = [
        s
        for s in Stack.objects.filter(subpanorama__panorama=pano).order_by("subpanorama__order", "row", "col")
        if s.output_path and storage.absolute(s.output_path).exists()
    ]
    if not stacks:
        raise ValueError(f"panorama {pano.slug}: no rendered stacks to lay out")
    paths = [storage.absolute(s.output_path) for s in stacks]
    params = stitch_params(pano)
    fs = farm_settings(pano)
    chash = recipe_hash({"stitch": params.to_dict(), "farm": fs}, *[s.recipe_hash for s in stacks])
    base = storage.absolute(f"panoramas/{pano.pk}/farm/{chash}")
    layout_rel = f"panoramas/{pano.pk}/farm/{chash}/panorama.layout.json"
    result: dict[str, Any] = {"layout": layout_rel, "recipe_hash": chash}
    with lease(f"layout:{pano.pk}:{chash}", settings.TERAPAN_JOB_TIMEOUTS["composite"]):
        if not storage.absolute(layout_rel).exists():
            result.update(stitch_stacks(pano, stacks, paths, base / "panorama", params, rep, render=False))
        # A fresh work folder per run: jobs of an earlier, failed run never mix in.
        work = base / f"run-{job.pk}"
        shutil.rmtree(work, ignore_errors=True)
        plan = plan_farm(storage.absolute(layout_rel), work, work / "pyramid", **fs)
    layout = json.loads(storage.absolute(layout_rel).read_text())
    Panorama.objects.filter(pk=pano.pk).update(
        layout={"path": layout_rel, "width": layout["canvas"]["width"], "height": layout["canvas"]["height"]}
    )
    root = Job.objects.get(pk=job.params["pyramid_job"])
    n = enqueue_graph(pano, work, plan["jobs"], root, job)
    result.update(farm_jobs=n, work=str(work.relative_to(storage.media_root())))
    return result


def enqueue_graph(pano: Panorama, work: Path, jobs: list[dict[str, Any]], root: Job, layout: Job) -> int:
    """One Job row and one RQ job per farm job, in ROOT's chain, each after the rows of the
    farm jobs it reads; the last job is ROOT. Rows of an earlier run of the same LAYOUT job
    (one killed after queuing part of its graph) are dropped first: their folder is gone."""
    timeout = settings.TERAPAN_JOB_TIMEOUTS["pyramid"]
    work_rel = str(work.relative_to(storage.media_root()))
    for old in Job.objects.filter(params__layout=layout.pk).exclude(pk=root.pk):
        _drop_rq(old.rq_id)
        old.delete()
    chain = root.params.get("chain") or uuid.uuid4().hex
    pk_of: dict[str, int] = {}
    total = len(jobs)
    for k, fj in enumerate(jobs):
        last = k == total - 1
        func = "webapp.panoramas.farm.run_root" if last else "webapp.panoramas.farm.run_node"
        params = {
            "work": work_rel,
            "id": fj["id"],
            "total": total,
            "chain": chain,
            "layout": layout.pk,
            "after": [pk_of[a] for a in fj["after"]],
        }
        if last:
            root.refresh_from_db()
            root.params = {**root.params, **params}
            # a root failed with an earlier run of its layout runs again with this one
            Job.objects.filter(pk=root.pk).update(params=root.params, status=Status.QUEUED, error="", ended=None)
            row = root
        else:
            kind = Job.Kind.BLOCK if fj["kind"] == "block" else Job.Kind.REDUCE
            row = Job.objects.create(kind=kind, panorama=pano, params=params)
        enqueue_with(row, "default", func, timeout)
        pk_of[fj["id"]] = row.pk
    return total


def enqueue_farm_partial(pano: Panorama, stacks: Iterable[Stack], region: list[int]) -> RenderPlan:
    """Re-render REGION of a farm-built panorama: STACKS again, then only the block jobs under
    the region (and the jobs around and above them) into a new version."""
    stack_jobs = _enqueue_stacks(pano, stacks, uuid.uuid4().hex)
    extra = {"region": list(region), "base_pyramid": pano.published_pyramid_id}
    return _enqueue_layout(pano, stack_jobs, "webapp.panoramas.farm.run_partial_layout", extra)


def run_partial_layout(job_pk: int) -> dict[str, Any]:
    return _run(job_pk, "layout", _partial_layout_body)


def _partial_layout_body(job: Job, rep) -> dict[str, Any]:  # noqa: ANN001
    """The previous layout with the re-rendered stacks' new outputs swapped in; the jobs under the region."""
    import dataclasses

    from processing.stitch.blocks import plan_partial
    from processing.stitch.pipeline import layout_from_json, layout_to_json

    pano = job.panorama
    assert pano is not None
    base = Pyramid.objects.get(pk=job.params["base_pyramid"])
    work = storage.absolute(base.stats["farm"])
    layout = layout_from_json(storage.absolute(pano.layout["path"]))
    new_out = {
        str(storage.absolute(s.output_path).parent): str(storage.absolute(s.output_path))
        for s in Stack.objects.filter(subpanorama__panorama=pano).exclude(output_path="")
    }
    layout.layers = [dataclasses.replace(L, path=new_out.get(str(Path(L.path).parent), L.path)) for L in layout.layers]
    lp = work / f"partial-{job.pk}.layout.json"
    layout_to_json(layout, lp)
    rep(0.5, f"re-rendering {job.params['region']}")
    jobs = plan_partial(work, lp, work / f"pyramid-{job.pk}", base.abs_path, tuple(job.params["region"]))
    root = Job.objects.get(pk=job.params["pyramid_job"])
    n = enqueue_graph(pano, work, jobs, root, job)
    return {"partial": True, "region": job.params["region"], "farm_jobs": n, "work": base.stats["farm"]}


# ---------------------------------------------------------------- block and reduce jobs


def run_node(job_pk: int) -> dict[str, Any]:
    return _run(job_pk, "farm", _node_body)


def _node_body(job: Job, rep) -> dict[str, Any]:  # noqa: ANN001
    from processing.stitch.blocks import run_farm_job

    work = storage.absolute(job.params["work"])
    res = run_farm_job(work, job.params["id"], progress=lambda f: rep(f, f"job {job.params['id']}"))
    _count_progress(job)
    _record_rate(res)
    return res


def _count_progress(job: Job) -> None:
    """The chain's pyramid row shows the share of farm jobs done."""
    from processing.tiles.reduce import done_marker

    work = storage.absolute(job.params["work"])
    total = int(job.params.get("total", 1))
    done = len(list(done_marker(work, "x").parent.glob("*.json")))
    Job.objects.filter(kind=Job.Kind.PYRAMID, params__work=job.params["work"], status=Status.QUEUED).update(
        progress=min(99.0, 100.0 * done / max(1, total)), message=f"farm: {done}/{total} jobs"
    )


def _record_rate(res: dict[str, Any]) -> None:
    """Completed block jobs feed the installation's measured rates (plan command)."""
    if res.get("skipped") or not res.get("pixels") or not res.get("seconds"):
        return
    from .rates import record_rate

    record_rate("block_mp_per_s", res["pixels"] / 1e6 / res["seconds"], source="job")


def run_root(job_pk: int) -> dict[str, Any]:
    return _run(job_pk, "pyramid", _root_body)


def _root_body(job: Job, rep) -> dict[str, Any]:  # noqa: ANN001
    from processing.stitch.blocks import run_farm_job
    from processing.tiles.blocks import FarmGrid, read_plan

    work = storage.absolute(job.params["work"])
    res = run_farm_job(work, job.params["id"], progress=lambda f: rep(f, "root"))
    plan = read_plan(work)
    grid = FarmGrid.from_dict(plan["grid"])
    staging = work / plan["pyramid"]
    pano = Panorama.objects.select_related("published_pyramid").get(pk=job.panorama_id)
    with lease(f"pyramid:{pano.pk}", settings.TERAPAN_JOB_TIMEOUTS["pyramid"]):
        version = next_pyramid_version(pano)
        rel = storage.rel_pyramid(pano.pk, version)
        dest = storage.absolute(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if staging.exists():
            os.chmod(staging, 0o755)
            os.rename(staging, dest)  # the whole pyramid appears at once
        elif not dest.exists():
            raise ValueError(f"panorama {pano.slug}: the farm's pyramid is missing from {staging}")
        stats = {
            "farm": job.params["work"],
            "jobs": int(job.params.get("total", 0)),
            "width": grid.width,
            "height": grid.height,
            "tiles": sum(1 for _ in dest.rglob(f"*.{grid.format}")),
        }
        with transaction.atomic():
            pyr = Pyramid.objects.create(
                panorama=pano,
                version=version,
                path=rel,
                width=grid.width,
                height=grid.height,
                tile_size=grid.tile_size,
                overlap=grid.overlap,
                format=grid.format,
                state=Pyramid.State.READY,
                parent=pano.published_pyramid,
                stats=stats,
            )
    if job.params.get("publish", True):
        publish(pyr)
    # the work folder keeps each job's one-tile output (its bands are gone): a partial
    # re-render of this version reduces them again with the jobs it re-runs
    return {"pyramid": pyr.pk, "version": version, "width": grid.width, "height": grid.height, **res}
