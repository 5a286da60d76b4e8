"""Admin pages for re-rendering: a confirmation page, then live progress.

Staff only (wrapped by admin_site.admin_view), POST with CSRF to act.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from .models import Job, Panorama, Pyramid, Stack, Status
from .pipeline import cancel_job
from .rerender import RerenderError, describe, execute, parse_param_overrides, plan_rerender


def _ids(raw: str) -> list[int]:
    try:
        return [int(x) for x in raw.split(",") if x.strip()]
    except ValueError as e:
        raise RerenderError(f"bad id list {raw!r}") from e


def _region(raw: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(float(v)) for v in raw.split(","))
    except ValueError as e:
        raise RerenderError("region must be X,Y,W,H in panorama pixels") from e
    return x, y, w, h


def _plan_from(request: HttpRequest, pano: Panorama, data: Any):
    stack_ids = _ids(data["stacks"]) if data.get("stacks") else None
    region = None
    if data.get("region_id"):
        from webapp.review.models import Region

        r = get_object_or_404(Region, pk=int(data["region_id"]), panorama=pano)
        region = (int(r.x), int(r.y), int(r.w), int(r.h))
    elif data.get("region"):
        region = _region(data["region"])
    lines = [ln.strip() for ln in data.get("params", "").splitlines() if ln.strip()]
    overrides = parse_param_overrides(lines)
    return plan_rerender(pano, stack_ids=stack_ids, region=region, overrides=overrides, full=bool(data.get("full")))


def rerender_view(site: AdminSite, request: HttpRequest, pk: int) -> HttpResponse:
    pano = get_object_or_404(Panorama, pk=pk)
    if not request.user.has_perm("panoramas.change_stack"):
        raise PermissionDenied
    data = request.POST if request.method == "POST" else request.GET
    try:
        plan = _plan_from(request, pano, data)
    except RerenderError as e:
        messages.error(request, str(e))
        return redirect(reverse("admin:panoramas_panorama_change", args=[pano.pk]))
    if request.method == "POST" and data.get("confirm") == "yes":
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
        "farm": _farm_estimate(pano, data),
    }
    return TemplateResponse(request, "admin/panoramas/rerender_confirm.html", ctx)


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
    ctx = {**site.each_context(request), "title": f"Jobs of {pano}", "panorama": pano, "opts": Panorama._meta}
    return TemplateResponse(request, "admin/panoramas/progress.html", ctx)


def progress_json(site: AdminSite, request: HttpRequest, pk: int) -> JsonResponse:
    pano = get_object_or_404(Panorama, pk=pk)
    jobs = Job.objects.filter(panorama=pano).select_related("stack").order_by("-created")[:100]
    return JsonResponse(
        {
            "published_version": pano.published_pyramid.version if pano.published_pyramid else None,
            "jobs": [
                {
                    "id": j.pk,
                    "kind": j.kind,
                    "target": j.stack.name if j.stack else pano.slug,
                    "status": j.status,
                    "progress": round(j.progress, 1),
                    "stage": j.stage,
                    "message": j.message,
                    "eta": round(j.eta_seconds) if j.eta_seconds and j.status == Status.RUNNING else None,
                    "error": j.error,
                    "attempts": j.attempts,
                    "log": j.log[-2000:],
                    "retry_url": reverse("admin:panoramas_job_retry", args=[j.pk])
                    if j.status == Status.FAILED
                    else None,
                }
                for j in jobs
            ],
        }
    )


@require_http_methods(["POST"])
def retry_job_view(site: AdminSite, request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(Job, pk=pk)
    if not request.user.has_perm("panoramas.change_stack"):
        raise PermissionDenied
    retry_jobs([job])
    messages.success(request, f"Job #{job.pk} queued again.")
    return redirect(request.META.get("HTTP_REFERER") or reverse("admin:panoramas_job_changelist"))


def retry_jobs(jobs: list[Job]) -> int:
    """Re-queue failed jobs: a stack alone, or a composite/pyramid step again."""
    from .pipeline import enqueue_render

    n = 0
    for job in jobs:
        if job.status not in (Status.FAILED, Status.CANCELED):
            continue
        pano = job.panorama or (job.stack.panorama if job.stack else None)
        if pano is None:
            continue
        if job.kind == Job.Kind.STACK and job.stack is not None:
            enqueue_render(pano, [job.stack])
        else:
            enqueue_render(pano, [], partial=job.params if "region" in job.params else None)
        n += 1
    return n


def rollback_view(site: AdminSite, request: HttpRequest, pk: int) -> HttpResponse:
    pyr = get_object_or_404(Pyramid, pk=pk)
    if not request.user.has_perm("panoramas.change_panorama"):
        raise PermissionDenied
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
