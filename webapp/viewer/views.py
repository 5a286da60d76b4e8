"""Home page, the viewer page and the comparison page."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotModified, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.templatetags.static import static
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_safe

from webapp.panoramas.models import Panorama, Pyramid
from webapp.review import changes as review_changes
from webapp.review import mentions

from .permissions import (
    can_edit,
    can_review,
    can_view,
    can_view_pyramid,
    role_of,
    viewable_panoramas,
)


def _viewable_pyramids(user: Any, pano: Panorama) -> list[Pyramid]:
    ready = pano.pyramids.filter(state=Pyramid.State.READY).order_by("-version")
    if role_of(user, pano) is not None:
        return list(ready)
    return [p for p in ready if p.pk == pano.published_pyramid_id]


def _default_pyramid(pano: Panorama, pyramids: list[Pyramid]) -> Pyramid | None:
    for p in pyramids:
        if p.pk == pano.published_pyramid_id:
            return p
    return pyramids[0] if pyramids else None


def _pick_version(request: HttpRequest, key: str, pyramids: list[Pyramid], default: Pyramid | None):
    raw = request.GET.get(key)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError as e:
        raise Http404("bad version") from e
    for p in pyramids:
        if p.version == v:
            return p
    raise Http404("no such version")


def _pano_or_deny(request: HttpRequest, slug: str) -> Panorama:
    pano = get_object_or_404(Panorama.objects.select_related("published_pyramid"), slug=slug)
    if not can_view(request.user, pano):
        raise Http404("no such panorama")
    return pano


def _pyramid_info(p: Pyramid) -> dict[str, Any]:
    return {
        "id": p.pk,
        "version": p.version,
        "dzi": reverse("viewer:dzi", kwargs={"pyramid_id": p.pk, "version": p.version}),
        "width": p.width,
        "height": p.height,
        "gigapixels": round(p.gigapixels, 4),
        "created": p.created.isoformat(),
    }


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    rows = []
    for pano in viewable_panoramas(request.user).select_related("published_pyramid"):
        pyramids = _viewable_pyramids(request.user, pano)
        pyr = _default_pyramid(pano, pyramids)
        rows.append(
            {
                "pano": pano,
                "pyramid": pyr,
                "gigapixels": pyr.gigapixels if pyr else None,
                "role": role_of(request.user, pano),
            }
        )
    return render(request, "viewer/home.html", {"rows": rows})


@require_safe
@ensure_csrf_cookie
def panorama(request: HttpRequest, slug: str) -> HttpResponse:
    pano = get_object_or_404(Panorama.objects.select_related("published_pyramid"), slug=slug)
    if not can_view(request.user, pano):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        raise Http404("no such panorama")
    pyramids = _viewable_pyramids(request.user, pano)
    pyr = _pick_version(request, "v", pyramids, _default_pyramid(pano, pyramids))
    role = role_of(request.user, pano)
    member = role is not None
    config = {
        "slug": pano.slug,
        "title": pano.title,
        "wrap": bool(pano.wrap),
        "osdImages": static("viewer/vendor/openseadragon/images/"),
        "pyramid": _pyramid_info(pyr) if pyr else None,
        "versions": [_pyramid_info(p) for p in pyramids] if member else [],
        "role": role,
        "user": request.user.get_username() if request.user.is_authenticated else None,
        "canReview": can_review(request.user, pano),
        "canEdit": can_edit(request.user, pano),
        "member": member,
        "api": {
            "annotations": reverse("review:annotations", kwargs={"slug": pano.slug}),
            "annotation": reverse("review:annotation", kwargs={"pk": 0}).replace("/0/", "/{id}/"),
            "comments": reverse("review:comments", kwargs={"pk": 0}).replace("/0/", "/{id}/"),
            "status": reverse("review:status", kwargs={"pk": 0}).replace("/0/", "/{id}/"),
            "stacks": reverse("review:stacks", kwargs={"slug": pano.slug}),
            "changes": reverse("review:changes", kwargs={"slug": pano.slug}),
            "comment": reverse("review:comment", kwargs={"pk": 0}).replace("/0/", "/{id}/"),
            "notifications": reverse("review:notifications"),
            "notificationsRead": reverse("review:notifications_read"),
        }
        if member
        else None,
        # Live review starts polling from here, so nothing made after this page is missed.
        "cursor": review_changes.latest(pano.pk) if member else 0,
        "members": [u.get_username() for u in mentions.members(pano)] if member else [],
        "compare": reverse("viewer:compare", kwargs={"slug": pano.slug}) if member and len(pyramids) > 1 else None,
        "published": reverse("viewer:published", kwargs={"slug": pano.slug}),
        "publishedId": pano.published_pyramid_id,
    }
    return render(
        request,
        "viewer/panorama.html",
        {"pano": pano, "pyramid": pyr, "config": config},
    )


@require_safe
def compare(request: HttpRequest, slug: str) -> HttpResponse:
    pano = _pano_or_deny(request, slug)
    pyramids = _viewable_pyramids(request.user, pano)
    if not pyramids:
        raise Http404("no pyramid yet")
    b = _pick_version(request, "b", pyramids, pyramids[0])
    older = [p for p in pyramids if p.version < b.version]
    a = _pick_version(request, "a", pyramids, older[0] if older else b)
    for p in (a, b):
        if not can_view_pyramid(request.user, p):
            raise Http404("no such version")
    config = {
        "slug": pano.slug,
        "title": pano.title,
        "wrap": bool(pano.wrap),
        "osdImages": static("viewer/vendor/openseadragon/images/"),
        "a": _pyramid_info(a),
        "b": _pyramid_info(b),
        "versions": [_pyramid_info(p) for p in pyramids],
    }
    return render(request, "viewer/compare.html", {"pano": pano, "a": a, "b": b, "config": config})


@require_safe
def published(request: HttpRequest, slug: str) -> HttpResponse:
    """The published version, for open viewers that are not members (members
    learn it from the review changes poll; others switch to it, since the old
    version's tiles are members-only): {"id", "version", "dzi", ...} or null, ETag/304."""
    pano = _pano_or_deny(request, slug)
    pyr = pano.published_pyramid
    ready = pyr is not None and pyr.state == Pyramid.State.READY
    etag = f'W/"published-{pyr.pk if ready else 0}"'
    if request.headers.get("If-None-Match") == etag:
        resp: HttpResponse = HttpResponseNotModified()
    else:
        resp = JsonResponse({"published": _pyramid_info(pyr) if ready else None})
    resp["ETag"] = etag
    resp["Cache-Control"] = "private, no-cache"
    return resp
