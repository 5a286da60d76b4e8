"""JSON API for collaborative review (session auth, CSRF enforced by middleware).

Roles: viewers read; reviewers draw regions and comment; editors (and owners)
also change a region's status and so ask for re-renders. Outsiders get 404 on
private panoramas and 403 on public ones; every input is validated and a bad
one gets a 400 with a one-line reason.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from django.db import transaction
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, HttpResponseNotModified, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from webapp.panoramas.models import Panorama, Pyramid, Stack
from webapp.panoramas.roles import error_for
from webapp.viewer.permissions import RANK, can_view, role_of

from . import changes as review_changes
from . import mentions
from .geometry import GeometryError, parse_target
from .models import Comment, Notification, Region, ReviewChange
from .signals import rerender_requested

MAX_BODY_BYTES = 64 * 1024
MAX_COMMENT_CHARS = 5000
MAX_REGIONS_PER_PANORAMA = 10_000
PAGE_SIZE = 500  # regions per page of the list (each carries its comments)
MAX_PAGE_SIZE = 1000
EDITOR_STATUSES = {s.value for s in Region.Status}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _err(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def api(methods: list[str], revalidate: bool = False):
    """JSON view: allowed methods, ApiError -> JSON error response; never cached,
    or (REVALIDATE) cached privately but revalidated by ETag on every use."""

    def deco(fn):
        @require_http_methods(methods)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any):
            try:
                return fn(request, *args, **kwargs)
            except ApiError as e:
                return _err(e.status, e.message)

        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = fn.__doc__
        if revalidate:
            return wrapper
        return never_cache(wrapper)

    return deco


def _require(request: HttpRequest, pano: Panorama, minimum: str) -> str:
    """The user's role if at least MINIMUM; raise ApiError otherwise."""
    if not can_view(request.user, pano):
        raise ApiError(404, "no such panorama")
    role = role_of(request.user, pano)
    if role is None:
        raise ApiError(403, "only members of this panorama can use the review API")
    if RANK[role] < RANK[minimum]:
        raise ApiError(403, f"this needs the {minimum} role (you are {role})")
    return role


def _json_body(request: HttpRequest) -> dict[str, Any]:
    if len(request.body) > MAX_BODY_BYTES:
        raise ApiError(400, f"request body larger than {MAX_BODY_BYTES} bytes")
    ctype = request.content_type or ""
    if ctype != "application/json":
        raise ApiError(400, "send JSON (Content-Type: application/json)")
    try:
        data = json.loads(request.body.decode("utf-8") or "null")
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ApiError(400, f"invalid JSON: {str(e)[:200]}") from e
    if not isinstance(data, dict):
        raise ApiError(400, "JSON body must be an object")
    try:
        # JSON may escape lone surrogates (\ud800) that no database can store.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise ApiError(400, "invalid JSON: a string holds a lone surrogate (not Unicode text)") from e
    return data


def _clean_text(value: Any, what: str = "comment") -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"{what} must be a string")
    text = value.strip()
    if not text:
        raise ApiError(400, f"{what} is empty")
    if len(text) > MAX_COMMENT_CHARS:
        raise ApiError(400, f"{what} longer than {MAX_COMMENT_CHARS} characters")
    if "\x00" in text:
        raise ApiError(400, f"{what} contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate such as "\ud800" (valid JSON, not UTF-8)
        raise ApiError(400, f"{what} is not valid Unicode (unpaired surrogate at {e.start})") from e
    return text


def _first_comment(data: dict[str, Any]) -> str | None:
    """Comment text from a Web Annotation body (TextualBody) or a plain 'comment' field."""
    if "comment" in data:
        return _clean_text(data["comment"])
    body = data.get("body")
    if body in (None, [], ""):
        return None
    items = body if isinstance(body, list) else [body]
    if len(items) > 20:
        raise ApiError(400, "too many body items")
    for item in items:
        if (
            isinstance(item, dict)
            and item.get("type", "TextualBody") == "TextualBody"
            and item.get("purpose", "commenting") == "commenting"
            and item.get("value")
        ):
            return _clean_text(item.get("value"))
    return None


def _int_param(request: HttpRequest, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 10:
        raise ApiError(400, f"{name} must be a whole number from {lo} to {hi}")
    value = int(raw)
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be a whole number from {lo} to {hi}")
    return value


def _pyramid_for(pano: Panorama, version: Any) -> Pyramid:
    ready = pano.pyramids.filter(state=Pyramid.State.READY)
    if version is None:
        pyr = pano.published_pyramid if pano.published_pyramid_id else ready.order_by("-version").first()
        if pyr is None:
            raise ApiError(400, "this panorama has no pyramid to annotate yet")
        return pyr
    if isinstance(version, bool) or not isinstance(version, int):
        raise ApiError(400, "version must be an integer")
    pyr = ready.filter(version=version).first()
    if pyr is None:
        raise ApiError(400, f"no ready pyramid version {version}")
    return pyr


def _name(user: Any) -> str | None:
    return user.get_username() if user is not None else None


def _comment_json(c: Comment, request: HttpRequest | None = None) -> dict[str, Any]:
    return {
        "id": c.pk,
        "region": c.region_id,
        "parent": c.parent_id,
        "author": _name(c.author),
        "body": c.body,
        "created": c.created.isoformat(),
        "edited": c.edited.isoformat() if c.edited else None,
        "canEdit": bool(request is not None and c.author_id is not None and c.author_id == request.user.pk),
    }


def _can_modify(request: HttpRequest, region: Region, role: str) -> bool:
    if RANK[role] >= RANK["editor"]:
        return True
    return RANK[role] >= RANK["reviewer"] and region.author_id == request.user.pk


def annotation_json(
    request: HttpRequest,
    region: Region,
    role: str,
    comments: list[Comment] | None = None,
    pyramids: dict[int, Pyramid] | None = None,
):
    """A region as a W3C Web Annotation (plus a 'terapan' block for the UI)."""
    if comments is None:
        comments = list(region.comments.select_related("author"))
    url = request.build_absolute_uri(reverse("review:annotation", kwargs={"pk": region.pk}))
    if pyramids is not None:
        pyr = pyramids.get(region.version)
    else:
        pyr = region.panorama.pyramids.filter(version=region.version).first()
    target = dict(region.target)
    if pyr is not None:
        target["source"] = request.build_absolute_uri(
            reverse("viewer:dzi", kwargs={"pyramid_id": pyr.pk, "version": pyr.version})
        )
    return {
        "@context": "http://www.w3.org/ns/anno.jsonld",
        "id": url,
        "type": "Annotation",
        "body": [
            {
                "type": "TextualBody",
                "purpose": "commenting",
                "value": c.body,
                "creator": {"type": "Person", "name": _name(c.author)},
                "created": c.created.isoformat(),
            }
            for c in comments
        ]
        + [{"type": "TextualBody", "purpose": "tagging", "value": region.status}],
        "target": target,
        "creator": {"type": "Person", "name": _name(region.author)},
        "created": region.created.isoformat(),
        "modified": region.updated.isoformat(),
        "terapan": {
            "id": region.pk,
            "status": region.status,
            "version": region.version,
            "bbox": region.bbox,
            "author": _name(region.author),
            "comments": len(comments),
            "canModify": _can_modify(request, region, role),
        },
    }


def _region_or_404(pk: int) -> Region:
    return get_object_or_404(Region.objects.select_related("panorama", "author"), pk=pk)


@api(["GET", "POST"])
def annotations(request: HttpRequest, slug: str) -> JsonResponse:
    """GET: the panorama's regions; POST: create one (reviewer+)."""
    pano = get_object_or_404(Panorama.objects.select_related("published_pyramid"), slug=slug)
    if request.method == "GET":
        role = _require(request, pano, "viewer")
        qs = pano.regions.select_related("author", "panorama").prefetch_related("comments__author")
        status = request.GET.get("status")
        if status:
            if status not in EDITOR_STATUSES:
                raise ApiError(400, f"unknown status {status!r}")
            qs = qs.filter(status=status)
        limit = _int_param(request, "limit", PAGE_SIZE, 1, MAX_PAGE_SIZE)
        offset = _int_param(request, "offset", 0, 0, 10**9)
        total = qs.count()
        pyramids = {p.version: p for p in pano.pyramids.all()}
        page = qs[offset : offset + limit]
        items = [annotation_json(request, r, role, list(r.comments.all()), pyramids) for r in page]
        nxt = None
        if offset + limit < total:
            params = request.GET.copy()
            params["offset"], params["limit"] = str(offset + limit), str(limit)
            nxt = request.build_absolute_uri(request.path) + "?" + params.urlencode()
        return JsonResponse(
            {
                "type": "AnnotationCollection",
                "total": total,
                "offset": offset,
                "limit": limit,
                "next": nxt,
                "items": items,
            }
        )
    role = _require(request, pano, "reviewer")
    data = _json_body(request)
    pyr = _pyramid_for(pano, data.get("version"))
    try:
        target, (x, y, w, h) = parse_target(data.get("target"), int(pyr.width), int(pyr.height))
    except GeometryError as e:
        raise ApiError(400, f"target: {e}") from e
    text = _first_comment(data)
    if pano.regions.count() >= MAX_REGIONS_PER_PANORAMA:
        raise ApiError(400, "too many regions on this panorama")
    with transaction.atomic():
        region = Region.objects.create(
            panorama=pano,
            version=pyr.version,
            target=target,
            x=x,
            y=y,
            w=w,
            h=h,
            author=request.user,
        )
        if text:
            Comment.objects.create(region=region, author=request.user, body=text)
    return JsonResponse(annotation_json(request, region, role), status=201)


@api(["GET", "PUT", "PATCH", "DELETE"])
def annotation(request: HttpRequest, pk: int) -> JsonResponse:
    """One region: read (viewer+), move/reshape or delete (its author, or an editor)."""
    region = _region_or_404(pk)
    pano = region.panorama
    if request.method == "GET":
        role = _require(request, pano, "viewer")
        return JsonResponse(annotation_json(request, region, role))
    role = _require(request, pano, "reviewer")
    if not _can_modify(request, region, role):
        raise ApiError(403, "only the region's author or an editor can change it")
    if request.method == "DELETE":
        others = region.comments.exclude(author=request.user).exists()
        if others and RANK[role] < RANK["editor"]:
            # Deleting the region would delete other people's comments with it.
            raise ApiError(403, "others have commented on this region: deleting it needs the editor role")
        region.delete()
        return JsonResponse({"deleted": pk})
    data = _json_body(request)
    pyr = _pyramid_for(pano, data.get("version", region.version))
    try:
        target, (x, y, w, h) = parse_target(data.get("target"), int(pyr.width), int(pyr.height))
    except GeometryError as e:
        raise ApiError(400, f"target: {e}") from e
    region.target, region.version = target, pyr.version
    region.x, region.y, region.w, region.h = x, y, w, h
    region.save()
    return JsonResponse(annotation_json(request, region, role))


@api(["GET", "POST"])
def comments(request: HttpRequest, pk: int) -> JsonResponse:
    """A region's comment thread: read (viewer+), add (reviewer+)."""
    region = _region_or_404(pk)
    if request.method == "GET":
        _require(request, region.panorama, "viewer")
        items = [_comment_json(c, request) for c in region.comments.select_related("author")]
        return JsonResponse({"region": region.pk, "items": items})
    _require(request, region.panorama, "reviewer")
    data = _json_body(request)
    text = _clean_text(data.get("body"))
    parent = _parent_comment(region, data.get("parent"))
    if region.comments.count() >= 1000:
        raise ApiError(400, "too many comments on this region")
    with transaction.atomic():
        c = Comment.objects.create(region=region, parent=parent, author=request.user, body=text)
        Region.objects.filter(pk=region.pk).update(updated=c.created)
        mentions.notify(c, request)
    return JsonResponse(_comment_json(c, request), status=201)


def _parent_comment(region: Region, raw: Any) -> Comment | None:
    """The comment replied to: None, or the id of a comment on the same region."""
    if raw is None:
        return None
    if not _is_id(raw):
        raise ApiError(400, "parent must be a comment id (integer)")
    parent = region.comments.select_related("author").filter(pk=raw).first()
    if parent is None:
        raise ApiError(400, f"comment {raw} is not on region #{region.pk}")
    return parent


@api(["GET", "PATCH"])
def comment(request: HttpRequest, pk: int) -> JsonResponse:
    """One comment: read (viewer+), edit its text (its author, still a reviewer)."""
    c = get_object_or_404(Comment.objects.select_related("region__panorama", "author", "parent__author"), pk=pk)
    pano = c.region.panorama
    if request.method == "GET":
        _require(request, pano, "viewer")
        return JsonResponse(_comment_json(c, request))
    _require(request, pano, "reviewer")
    if c.author_id is None or c.author_id != request.user.pk:
        raise ApiError(403, "only the comment's author can edit it")
    text = _clean_text(_json_body(request).get("body"))
    with transaction.atomic():
        c.body, c.edited = text, timezone.now()
        c.save(update_fields=["body", "edited"])
        mentions.notify(c, request)
    return JsonResponse(_comment_json(c, request))


MAX_CHANGED_REGIONS = 500


@api(["GET"], revalidate=True)
def changes(request: HttpRequest, slug: str) -> HttpResponse:
    """What changed on the panorama's review since ?since=CURSOR (viewer+).

    Changed regions come back whole (as in the list), deleted ones by id; also
    the published version and the caller's unread notifications, so one cheap
    poll keeps a viewer current. ETag/304 when nothing changed; "reload": true
    when the cursor is unknown or too far behind to catch up by difference.
    """
    pano = get_object_or_404(Panorama.objects.select_related("published_pyramid"), slug=slug)
    role = _require(request, pano, "viewer")
    raw = request.GET.get("since", "")
    try:
        since = int(raw) if raw else None
    except ValueError as e:
        raise ApiError(400, "since must be an integer cursor") from e
    if since is not None and since < 0:
        raise ApiError(400, "since must be an integer cursor")
    cursor = review_changes.latest(pano.pk)
    pub = pano.published_pyramid
    unread = _my_notifications(request.user).filter(read__isnull=True).count()
    etag = f'W/"{since}-{cursor}-{pano.published_pyramid_id}-{unread}"'
    if request.headers.get("If-None-Match") == etag:
        resp: HttpResponse = HttpResponseNotModified()
    else:
        body: dict[str, Any] = {
            "cursor": cursor,
            "published": {"id": pub.pk, "version": pub.version} if pub else None,
            "unread": unread,
            "regions": [],
            "deleted": [],
            "reload": since is not None and since > cursor,
        }
        if since is not None and since < cursor:
            rows = ReviewChange.objects.filter(panorama=pano, id__gt=since, id__lte=cursor)
            ids = set(rows.values_list("region_id", flat=True).distinct()[: MAX_CHANGED_REGIONS + 1])
            if len(ids) > MAX_CHANGED_REGIONS:
                body["reload"] = True
            else:
                qs = pano.regions.filter(pk__in=ids).select_related("author", "panorama")
                qs = qs.prefetch_related("comments__author")
                pyramids = {p.version: p for p in pano.pyramids.all()}
                body["regions"] = [annotation_json(request, r, role, list(r.comments.all()), pyramids) for r in qs]
                body["deleted"] = sorted(ids - {r["terapan"]["id"] for r in body["regions"]})
        resp = JsonResponse(body)
    resp["ETag"] = etag
    resp["Cache-Control"] = "private, no-cache"
    return resp


def _my_notifications(user: Any):
    """USER's notifications on panoramas they are still a member of (a removed
    member no longer reads those comments)."""
    qs = Notification.objects.filter(user=user)
    if user.is_superuser and user.is_staff:
        return qs
    still = Q(comment__region__panorama__owner=user) | Q(comment__region__panorama__memberships__user=user)
    return qs.filter(pk__in=Notification.objects.filter(still, user=user).values("pk"))


@api(["GET"])
def notifications(request: HttpRequest) -> JsonResponse:
    """The signed-in user's latest notifications (mentions, replies) and unread count."""
    if not request.user.is_authenticated:
        raise ApiError(403, "sign in to see your notifications")
    qs = _my_notifications(request.user).select_related("comment__author", "comment__region__panorama")
    items = []
    for n in qs[:50]:
        c = n.comment
        items.append(
            {
                "id": n.pk,
                "kind": n.kind,
                "read": n.read is not None,
                "created": n.created.isoformat(),
                "panorama": c.region.panorama.slug,
                "region": c.region_id,
                "comment": c.pk,
                "author": _name(c.author),
                "excerpt": c.body[:140],
                "url": mentions.comment_url(c),
            }
        )
    unread = _my_notifications(request.user).filter(read__isnull=True).count()
    return JsonResponse({"unread": unread, "items": items})


MAX_ID = 2**63 - 1  # the largest primary key any database here stores


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID


@api(["POST"])
def notifications_read(request: HttpRequest) -> JsonResponse:
    """Mark notifications read: {"ids": [..]} or {"all": true}."""
    if not request.user.is_authenticated:
        raise ApiError(403, "sign in to see your notifications")
    data = _json_body(request)
    qs = _my_notifications(request.user).filter(read__isnull=True)
    if data.get("all") is True:
        pass
    elif isinstance(data.get("ids"), list) and all(_is_id(i) for i in data["ids"]):
        qs = qs.filter(pk__in=data["ids"][:500])
    else:
        raise ApiError(400, 'send {"ids": [notification ids]} or {"all": true}')
    marked = qs.update(read=timezone.now())
    unread = _my_notifications(request.user).filter(read__isnull=True).count()
    return JsonResponse({"marked": marked, "unread": unread})


@api(["POST"])
def status(request: HttpRequest, pk: int) -> JsonResponse:
    """Set a region's status (editor+); needs_rerender sends rerender_requested."""
    region = _region_or_404(pk)
    role = _require(request, region.panorama, "editor")
    data = _json_body(request)
    new = data.get("status")
    if not isinstance(new, str) or new not in EDITOR_STATUSES:
        raise ApiError(400, f"status must be one of {sorted(EDITOR_STATUSES)}")
    old = region.status
    region.status = new
    region.save(update_fields=["status", "updated"])
    if new == Region.Status.NEEDS_RERENDER and old != new:
        rerender_requested.send(sender=Region, region=region, user=request.user)
    return JsonResponse(annotation_json(request, region, role))


@api(["GET"])
def stacks(request: HttpRequest, slug: str) -> JsonResponse:
    """Work in progress: every stack's footprint, status and progress (members)."""
    pano = get_object_or_404(Panorama.objects.select_related("published_pyramid"), slug=slug)
    role = _require(request, pano, "viewer")
    qs = (
        Stack.objects.filter(subpanorama__panorama=pano)
        .select_related("subpanorama")
        .annotate(n_frames=Count("frames"))
        .order_by("subpanorama__order", "row", "col", "name")
    )
    items = []
    for s in qs:
        fp = s.footprint if isinstance(s.footprint, dict) else {}
        try:
            footprint = {k: float(fp[k]) for k in ("x", "y", "w", "h")} if fp else None
        except (KeyError, TypeError, ValueError):
            footprint = None
        items.append(
            {
                "id": s.pk,
                "name": s.name,
                "subpanorama": s.subpanorama.name,
                "row": s.row,
                "col": s.col,
                "status": s.status,
                "progress": round(float(s.progress or 0.0), 1),
                "version": s.version,
                "frames": s.n_frames,
                "footprint": footprint,
                "error": error_for(s.error, role)[:300],
                "updated": s.updated.isoformat(),
            }
        )
    counts = Counter(i["status"] for i in items)
    return JsonResponse({"panorama": pano.slug, "total": len(items), "counts": counts, "items": items})
