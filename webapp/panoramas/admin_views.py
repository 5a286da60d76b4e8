"""Admin pages for re-rendering: a confirmation page, then live progress.

Staff only (wrapped by admin_site.admin_view), POST with CSRF to act. Each page
also checks Django's model permission and the role on that panorama: reading
progress needs the viewer role, re-rendering, retrying and rollback the editor
role. Malformed input gets a 400 with the reason.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse

from .editor_views import editor_context, progress_extras
from .models import Job, Panorama, Pyramid, Stack, Status
from .pipeline import cancel_job, is_live, resume_chain
from .rerender import RerenderError, describe, execute, parse_param_overrides, parse_region, plan_rerender
from .roles import error_for, has_role, require_role, role_of

MAX_IDS = 10_000


def _ids(raw: str) -> list[int]:
    try:
        ids = [int(x) for x in raw.split(",") if x.strip()]
    except ValueError as e:
        raise RerenderError(f"bad id list {raw[:100]!r}: give numbers separated by commas") from e
    if len(ids) > MAX_IDS or any(i < 1 or i > 2**62 for i in ids):
        raise RerenderError("bad id list: ids out of range or too many")
    return ids


def _plan_from(request: HttpRequest, pano: Panorama, data: Any):
    stack_ids = _ids(data["stacks"]) if data.get("stacks") else None
    region = None
    if data.get("region_id"):
        from webapp.review.models import Region

        raw = str(data["region_id"]).strip()
        if not raw.isdigit() or len(raw) > 18:
            raise RerenderError(f"region_id must be a number, not {raw[:50]!r}")
        r = get_object_or_404(Region, pk=int(raw), panorama=pano)
        region = (int(r.x), int(r.y), int(r.w), int(r.h))
    elif data.get("region"):
        region = parse_region(data["region"])
    lines = [ln.strip() for ln in data.get("params", "").splitlines() if ln.strip()]
    overrides = parse_param_overrides(lines)
    return plan_rerender(pano, stack_ids=stack_ids, region=region, overrides=overrides, full=bool(data.get("full")))


def rerender_view(site: AdminSite, request: HttpRequest, pk: int) -> HttpResponse:
    pano = get_object_or_404(Panorama, pk=pk)
    if not request.user.has_perm("panoramas.change_stack"):
        raise PermissionDenied
    require_role(request.user, pano, "editor")
    data = request.POST if request.method == "POST" else request.GET
    recipe_error = None
    try:
        plan = _plan_from(request, pano, data)
    except RerenderError as e:
        if not data.get("params", "").strip():
            return HttpResponseBadRequest(f"cannot re-render {pano.slug}: {e}", content_type="text/plain")
        # A bad recipe line: keep the plan (without the changes) and say what is valid.
        recipe_error = str(e)
        try:
            plan = _plan_from(request, pano, {**data.dict(), "params": ""})
        except RerenderError as e2:
            return HttpResponseBadRequest(f"cannot re-render {pano.slug}: {e2}", content_type="text/plain")
    if request.method == "POST" and data.get("confirm") == "yes" and recipe_error is None:
        chain = execute(plan)
        messages.success(request, f"Queued {len(chain.stack_jobs)} stack job(s) and the partial chain.")
        return redirect(reverse("admin:panoramas_panorama_progress", args=[pano.pk]))
    ctx = {
        **site.each_context(request),
        "title": f"Re-render {pano}",
        "panorama": pano,
        "plan": describe(plan),
        "stacks": plan.stacks,
        "form": {k: data.get(k, "") for k in ("stacks", "region", "region_id", "params", "full")},
        "opts": Panorama._meta,
        **editor_context(plan, recipe_error),
        "farm": _farm_estimate(pano, data),
    }
    return TemplateResponse(request, "admin/panoramas/rerender_confirm.html", ctx, status=400 if recipe_error else 200)


def _farm_estimate(pano: Panorama, data: Any) -> dict[str, Any]:
    """The farm's plan for a full render on WORKERS (+ GPUS) workers, or why there is none."""
    from .farm_plan import farm_plan

    try:
        workers = max(1, int(data.get("workers") or 2))
        gpus = max(0, int(data.get("gpus") or 0))
        return farm_plan(pano, workers, gpus)
    except ValueError as e:
        return {"error": str(e)}


def progress_view(site: AdminSite, request: HttpRequest, pk: int) -> HttpResponse:
    pano = get_object_or_404(Panorama, pk=pk)
    require_role(request.user, pano, "viewer")
    ctx = {**site.each_context(request), "title": f"Jobs of {pano}", "panorama": pano, "opts": Panorama._meta}
    return TemplateResponse(request, "admin/panoramas/progress.html", ctx)


def progress_json(site: AdminSite, request: HttpRequest, pk: int) -> JsonResponse:
    pano = get_object_or_404(Panorama, pk=pk)
    require_role(request.user, pano, "viewer")
    role = role_of(request.user, pano)
    may_retry = request.user.has_perm("panoramas.change_job") and has_role(request.user, pano, "editor")
    jobs = Job.objects.filter(panorama=pano).select_related("stack").order_by("-created")[:100]
    return JsonResponse(
        {
            **progress_extras(pano, list(jobs)),
            "published_version": pano.published_pyramid.version if pano.published_pyramid else None,
            "jobs": [
                {
                    "id": j.pk,
                    "kind": j.kind,
                    "target": j.stack.name if j.stack else pano.slug,
                    "status": j.status,
                    "progress": round(j.progress, 1),
                    "stage": j.stage,
                    "message": error_for(j.message, role),
                    "eta": round(j.eta_seconds) if j.eta_seconds and j.status == Status.RUNNING else None,
                    "error": error_for(j.error, role),
                    "attempts": j.attempts,
                    "log": error_for(j.log[-2000:], role),
                    "retry_url": reverse("admin:panoramas_job_retry", args=[j.pk])
                    if may_retry and is_stuck(j)
                    else None,
                }
                for j in jobs
            ],
        }
    )


def is_stuck(job: Job) -> bool:
    """Failed, canceled, or queued/running with nothing in RQ that will run it."""
    if job.status in (Status.FAILED, Status.CANCELED):
        return True
    return job.status in (Status.QUEUED, Status.RUNNING, Status.PENDING) and not is_live(job)


def retry_job_view(site: AdminSite, request: HttpRequest, pk: int) -> HttpResponse:
    if request.method != "POST":
        return HttpResponse("POST to retry a job", status=405, headers={"Allow": "POST"})
    job = get_object_or_404(Job.objects.select_related("panorama", "stack__subpanorama__panorama"), pk=pk)
    if not request.user.has_perm("panoramas.change_job"):
        raise PermissionDenied
    require_role(request.user, _job_panorama(job), "editor")
    n = retry_jobs([job])
    if n:
        messages.success(request, f"Job #{job.pk}: {n} job(s) of its chain queued again.")
    else:
        messages.info(request, f"Job #{job.pk} is done or still running: nothing queued again.")
    back = reverse("admin:panoramas_job_changelist")
    if job.panorama_id:
        back = reverse("admin:panoramas_panorama_progress", args=[job.panorama_id])
    return redirect(back)


def _job_panorama(job: Job) -> Panorama | None:
    return job.panorama or (job.stack.subpanorama.panorama if job.stack else None)


def retry_jobs(jobs: list[Job]) -> int:
    """Resume the chain of each stuck job (failed, canceled, or lost by RQ):
    its unfinished jobs are queued again under their own ids, so retrying
    several jobs of one chain resumes it once and never starts a second one."""
    n = 0
    for job in jobs:
        job.refresh_from_db()
        if job.status == Status.DONE or not is_stuck(job):
            continue
        n += resume_chain(job)
    return n


def rollback_view(site: AdminSite, request: HttpRequest, pk: int) -> HttpResponse:
    pyr = get_object_or_404(Pyramid.objects.select_related("panorama"), pk=pk)
    if not request.user.has_perm("panoramas.change_panorama"):
        raise PermissionDenied
    require_role(request.user, pyr.panorama, "editor")
    if request.method == "POST" and request.POST.get("confirm") == "yes":
        if pyr.state != Pyramid.State.READY or not pyr.abs_path.exists():
            messages.error(request, f"{pyr} is not ready on disk; cannot publish it")
        else:
            from .jobs import publish

            publish(pyr)
            messages.success(request, f"Published {pyr} again.")
        return redirect(reverse("admin:panoramas_pyramid_changelist"))
    ctx = {**site.each_context(request), "title": f"Publish {pyr} again?", "pyramid": pyr, "opts": Pyramid._meta}
    return TemplateResponse(request, "admin/panoramas/rollback_confirm.html", ctx)


def cancel_jobs(jobs: list[Job]) -> int:
    n = 0
    for j in jobs:
        if j.status in (Status.QUEUED, Status.RUNNING, Status.PENDING):
            cancel_job(j)
            n += 1
    return n


def stacks_redirect(stacks: list[Stack]) -> HttpResponse:
    panos = {s.subpanorama.panorama_id for s in stacks}
    if len(panos) != 1:
        raise RerenderError("select stacks of one panorama")
    ids = ",".join(str(s.pk) for s in stacks)
    return redirect(reverse("admin:panoramas_panorama_rerender", args=[panos.pop()]) + f"?stacks={ids}")
