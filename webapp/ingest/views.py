"""Admin pages: start an import (queued on RQ), follow its progress, see the plan.

Staff only, and the panorama's role decides: importing into an existing
panorama needs the editor role on it, creating one needs the add_panorama
permission; an import's page and thumbnails need a role on its panorama (or
being the one who started it).
"""

from __future__ import annotations

import re

from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from webapp.panoramas.models import Job, Panorama, Stack, Status
from webapp.panoramas.roles import has_role, panoramas_q, require_role

from . import services
from .forms import ImportForm
from .jobs import enqueue_import, thumbs_dir

PLAN_ROWS = 500


def _ctx(request: HttpRequest, **extra: object) -> dict[str, object]:
    ctx = admin.site.each_context(request)
    ctx.update(extra)
    return ctx


@staff_member_required
@require_http_methods(["GET", "POST"])
def index(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = ImportForm(request.POST)
        if form.is_valid():
            d = form.cleaned_data
            existing = Panorama.objects.filter(slug=d["slug"]).first()
            if existing is not None:
                require_role(request.user, existing, "editor")
            elif not request.user.has_perm("panoramas.add_panorama"):
                raise PermissionDenied("creating a panorama needs the add_panorama permission")
            job = Job.objects.create(
                kind=Job.Kind.INGEST,
                status=Status.QUEUED,
                params={
                    "slug": d["slug"],
                    "folder": d["folder"],
                    "subpanorama": d["subpanorama"],
                    "sky": d["sky"],
                    "dry_run": d["dry_run"],
                    "columns": d["columns"],
                    "gap": d["gap"],
                    "user": request.user.get_username(),
                },
                stage="queued",
            )
            enqueue_import(job)
            messages.success(request, f"Import #{job.pk} queued.")
            return redirect("ingest:job", job_id=job.pk)
        status = 400
    else:
        form = ImportForm()
        status = 200
    jobs = Job.objects.filter(kind=Job.Kind.INGEST).order_by("-created")
    if not request.user.is_superuser:
        from django.db.models import Q

        mine = Q(params__user=request.user.get_username())
        jobs = jobs.filter(mine | panoramas_q(request.user, "viewer", "panorama")).distinct()
    jobs = jobs[:20]
    roots = services.import_roots()
    return render(
        request,
        "ingest/index.html",
        _ctx(request, title="Import a capture", form=form, jobs=jobs, roots=roots),
        status=status,
    )


@staff_member_required
@require_GET
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(Job.objects.select_related("panorama"), pk=job_id, kind=Job.Kind.INGEST)
    started_it = (job.params or {}).get("user") == request.user.get_username()
    if not (request.user.is_superuser or started_it or has_role(request.user, job.panorama, "viewer")):
        raise Http404("no such import")
    result = job.result or {}
    if request.GET.get("format") == "json":
        return JsonResponse(
            {
                "id": job.pk,
                "status": job.status,
                "progress": job.progress,
                "stage": job.stage,
                "message": job.message,
                "error": job.error,
                "result": {k: v for k, v in result.items() if k not in ("stacks", "not_placed")},
            }
        )
    running = job.status in (Status.QUEUED, Status.RUNNING, Status.PENDING)
    return render(
        request,
        "ingest/job.html",
        _ctx(
            request,
            title=f"Import #{job.pk}",
            job=job,
            result=result,
            running=running,
            rows=services.plan_rows(result, PLAN_ROWS),
            more_rows=max(0, len(result.get("stacks", [])) - PLAN_ROWS),
            not_placed=result.get("not_placed", [])[:PLAN_ROWS],
        ),
    )


_NUM = re.compile(r"^\d{1,18}$")


@staff_member_required
@require_GET
def thumb(request: HttpRequest, stack_id: int, frame_id: int) -> HttpResponse:
    """One admin thumbnail; the path is built from database ids only."""
    stack = get_object_or_404(Stack.objects.select_related("subpanorama__panorama"), pk=stack_id)
    if not has_role(request.user, stack.subpanorama.panorama, "viewer"):
        raise Http404("no such stack")
    if not _NUM.match(str(frame_id)) or not stack.frames.filter(pk=frame_id).exists():
        raise Http404("no such frame in this stack")
    path = thumbs_dir(stack) / f"{int(frame_id)}.jpg"
    if not path.is_file():
        raise Http404("no thumbnail")
    resp = FileResponse(open(path, "rb"), content_type="image/jpeg")  # noqa: SIM115 - FileResponse closes it
    resp["Cache-Control"] = "private, max-age=3600"
    resp["X-Content-Type-Options"] = "nosniff"
    return resp


__all__ = ["index", "job_detail", "thumb"]
