"""Sharing: the home page, thumbnails, the embed page, exports and IIIF.

The pixels come from processing.tiles.region_export (no image maths here); paths
are built from Pyramid rows, never from request strings.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.http import require_safe

from processing.io.errors import InputError
from processing.tiles.region_export import (
    EXPORT_FORMATS,
    ExportError,
    PyramidGeometry,
    clip_rect,
    encode_jpeg,
    output_size,
    render_region,
    write_image,
    write_thumbnail,
)
from webapp.accounts.models import pending_for
from webapp.panoramas.models import Panorama, Pyramid
from webapp.security import embed_csp
from webapp.viewer.permissions import can_view, can_view_pyramid, is_published, role_of, viewable_panoramas

from . import iiif

FORMAT_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "tif": "image/tiff",
    "tiff": "image/tiff",
}


def geometry(pyr: Pyramid) -> PyramidGeometry:
    return PyramidGeometry(int(pyr.width), int(pyr.height), int(pyr.tile_size), int(pyr.overlap), pyr.format)


def shown_pyramid(user: Any, pano: Panorama) -> Pyramid | None:
    """The version a visitor sees first: the published one, else (members) the newest ready one."""
    pyr = pano.published_pyramid
    if pyr is not None and pyr.state == Pyramid.State.READY and can_view_pyramid(user, pyr):
        return pyr
    if role_of(user, pano) is None:
        return None
    return pano.pyramids.filter(state=Pyramid.State.READY).order_by("-version").first()


def _pano_or_404(request: HttpRequest, slug: str) -> Panorama:
    pano = get_object_or_404(Panorama.objects.select_related("published_pyramid", "owner"), slug=slug)
    if not can_view(request.user, pano):
        raise Http404("no such panorama")
    return pano


def _pick_pyramid(request: HttpRequest, pano: Panorama) -> Pyramid:
    raw = request.GET.get("v", "")
    if raw:
        try:
            pyr = pano.pyramids.get(version=int(raw), state=Pyramid.State.READY)
        except (ValueError, Pyramid.DoesNotExist) as e:
            raise Http404("no such version") from e
        if not can_view_pyramid(request.user, pyr):
            raise Http404("no such version")
        return pyr
    pyr = shown_pyramid(request.user, pano)
    if pyr is None:
        raise Http404("no pyramid yet")
    return pyr


# ---------------------------------------------------------------- home


@require_safe
def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico on every site page; answer with the site's icon."""
    return redirect(static("sharing/favicon.svg"), permanent=True)


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    cards = []
    for pano in viewable_panoramas(request.user).select_related("published_pyramid", "owner"):
        pyr = shown_pyramid(request.user, pano)
        role = role_of(request.user, pano)
        cards.append(
            {
                "pano": pano,
                "pyramid": pyr,
                "role": role,
                "thumb": reverse("sharing:thumbnail", kwargs={"slug": pano.slug, "pyramid_id": pyr.pk})
                if pyr
                else None,
                "gigapixels": pyr.gigapixels if pyr else None,
                "published": is_published(pano),
            }
        )
    return render(request, "sharing/home.html", {"cards": cards, "invitations": pending_for(request.user)})


@require_safe
def thumbnail(request: HttpRequest, slug: str, pyramid_id: int) -> HttpResponse:
    pano = _pano_or_404(request, slug)
    pyr = get_object_or_404(Pyramid, pk=pyramid_id, panorama=pano, state=Pyramid.State.READY)
    if not can_view_pyramid(request.user, pyr):
        raise Http404("no such version")
    out = pano.media_dir / "thumbnails" / f"pyramid-{pyr.pk}-v{pyr.version}.jpg"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_thumbnail(pyr.abs_path, geometry(pyr), out)
        except InputError as e:
            raise Http404(str(e)) from e
    public = is_published(pano) and pano.published_pyramid_id == pyr.pk
    resp = FileResponse(open(out, "rb"), content_type="image/jpeg")  # noqa: SIM115 - FileResponse closes it
    resp["Cache-Control"] = f"{'public' if public else 'private'}, max-age=31536000, immutable"
    return resp


# ---------------------------------------------------------------- embed


@require_safe
@xframe_options_exempt
def embed(request: HttpRequest, slug: str) -> HttpResponse:
    pano = _pano_or_404(request, slug)
    pyr = _pick_pyramid(request, pano)
    config = {
        "title": pano.title,
        "wrap": bool(pano.wrap),
        "dzi": reverse("viewer:dzi", kwargs={"pyramid_id": pyr.pk, "version": pyr.version}),
        "osdImages": static("viewer/vendor/openseadragon/images/"),
        "page": request.build_absolute_uri(pano.get_absolute_url()),
        # ?source=iiif: the same viewer reading the IIIF service (the published version).
        "iiif": reverse("sharing:iiif_info", kwargs={"slug": pano.slug})
        if request.GET.get("source") == "iiif" and pyr.pk == pano.published_pyramid_id
        else None,
    }
    resp = render(request, "sharing/embed.html", {"pano": pano, "pyramid": pyr, "config": config})
    # The panorama's own frame-ancestors; the site default ('none') everywhere else.
    resp["Content-Security-Policy"] = embed_csp(pano.embed_origins)
    return resp


# ---------------------------------------------------------------- export


# Exports decode and encode up to TERAPAN_EXPORT_MAX_PIXELS each: a few at a
# time per process, the others are told to retry instead of queueing memory.
_EXPORT_SLOTS = threading.BoundedSemaphore(settings.TERAPAN_EXPORT_CONCURRENCY)
EXPORT_WAIT_S = 10.0
IIIF_FREE_PIXELS = 1 << 20  # IIIF images up to this size (tiles) need no export slot


def _limits() -> tuple[int, int]:
    return settings.TERAPAN_EXPORT_MAX_PIXELS, settings.TERAPAN_EXPORT_MAX_SIDE


def _region_rect(request: HttpRequest, pano: Panorama, raw: str) -> tuple[int, int, int, int]:
    """A review region's bounding box (members only: regions are not public)."""
    if role_of(request.user, pano) is None:
        raise Http404("no such region")
    from webapp.review.models import Region

    try:
        r = Region.objects.get(pk=int(raw), panorama=pano)
    except (ValueError, Region.DoesNotExist) as e:
        raise Http404("no such region") from e
    return int(r.x), int(r.y), int(r.w), int(r.h)


@require_safe
def export_page(request: HttpRequest, slug: str) -> HttpResponse:
    pano = _pano_or_404(request, slug)
    pyr = _pick_pyramid(request, pano)
    initial: dict[str, Any] = {"format": "jpg"}
    if request.GET.get("region"):
        x, y, w, h = _region_rect(request, pano, request.GET["region"])
        initial.update(x=x, y=y, w=w, h=h, region=request.GET["region"])
    elif all(request.GET.get(k) for k in "xywh"):
        # A view passed on from the viewer: ?x=&y=&w=&h= in panorama pixels.
        # A bad link (text, nan, infinities, off the image) opens the whole panorama instead.
        rect = tuple(_finite_int(request.GET[k]) for k in "xywh")
        if None not in rect:
            try:
                x, y, w, h = clip_rect(geometry(pyr), rect)
            except ExportError:
                pass
            else:
                initial.update(x=x, y=y, w=w, h=h)
    if request.GET.get("format") in ("png", "jpg", "tif"):
        initial["format"] = request.GET["format"]
    max_pixels, max_side = _limits()
    config = {
        "dzi": reverse("viewer:dzi", kwargs={"pyramid_id": pyr.pk, "version": pyr.version}),
        "osdImages": static("viewer/vendor/openseadragon/images/"),
        "wrap": bool(pano.wrap),
        "width": pyr.width,
        "height": pyr.height,
        "maxPixels": max_pixels,
        "maxSide": max_side,
        "initial": initial,
    }
    ctx = {"pano": pano, "pyramid": pyr, "config": config, "max_mp": max_pixels / 1e6, "max_side": max_side}
    return render(request, "sharing/export.html", ctx)


def _int_param(request: HttpRequest, name: str, default: int | None) -> int | None:
    raw = request.GET.get(name, "")
    if raw == "":
        return default
    value = _finite_int(raw)
    if value is None:
        raise ExportError(f"{name} must be a number, not {raw[:40]!r}")
    return value


def _finite_int(raw: str) -> int | None:
    """RAW as an integer (decimals truncated); None for text, nan and infinities (1e400 too)."""
    try:
        return int(float(raw))
    except (ValueError, OverflowError):
        return None


@require_safe
@never_cache
def export_image(request: HttpRequest, slug: str) -> HttpResponse:
    """The chosen area at the chosen resolution as PNG, JPEG or TIFF, streamed from a temporary file."""
    pano = _pano_or_404(request, slug)
    pyr = _pick_pyramid(request, pano)
    geo = geometry(pyr)
    fmt = request.GET.get("format", "jpg").lower()
    try:
        if fmt not in EXPORT_FORMATS:
            raise ExportError(f"format must be png, jpg or tif, not {fmt!r}")
        if request.GET.get("region"):
            rect = _region_rect(request, pano, request.GET["region"])
        else:
            rect = (
                _int_param(request, "x", 0) or 0,
                _int_param(request, "y", 0) or 0,
                _int_param(request, "w", geo.width) or 0,
                _int_param(request, "h", geo.height) or 0,
            )
        rect = clip_rect(geo, rect)
        ow, oh = output_size(rect, _int_param(request, "width", None), _int_param(request, "height", None), *_limits())
        if not _EXPORT_SLOTS.acquire(timeout=EXPORT_WAIT_S):
            resp = JsonResponse({"error": "the server is busy with other exports; try again in a moment"}, status=503)
            resp["Retry-After"] = "10"
            return resp
        try:
            pixels = render_region(pyr.abs_path, geo, rect, ow, oh)
        finally:
            _EXPORT_SLOTS.release()
    except ExportError as e:
        return JsonResponse({"error": str(e)}, status=400)
    except InputError as e:
        return JsonResponse({"error": f"the pyramid cannot be read: {e}"}, status=500)
    tmp_dir = Path(settings.VAR_DIR) / "exports"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="export-", suffix=EXPORT_FORMATS[fmt], dir=tmp_dir)
    os.close(fd)
    try:
        write_image(pixels, name, fmt)
        del pixels
        fh = open(name, "rb")  # noqa: SIM115 - FileResponse closes it
    finally:
        # Unlinked at once: the open handle streams it, nothing is left behind.
        os.unlink(name)
    x, y, w, h = rect
    filename = f"{slugify(pano.slug)}-v{pyr.version}-{x}_{y}_{w}x{h}-{ow}px{EXPORT_FORMATS[fmt]}"
    resp = FileResponse(fh, content_type=FORMAT_TYPES[fmt], as_attachment=True, filename=filename)
    resp["X-Terapan-Export-Size"] = f"{ow}x{oh}"
    return resp


# ---------------------------------------------------------------- IIIF


def _iiif_pyramid(request: HttpRequest, slug: str) -> tuple[Panorama, Pyramid, bool]:
    """The published version; (pano, pyramid, public). Members only for private panoramas."""
    pano = get_object_or_404(Panorama.objects.select_related("published_pyramid"), slug=slug)
    pyr = pano.published_pyramid
    if pyr is None or pyr.state != Pyramid.State.READY:
        raise Http404("nothing published")
    if is_published(pano):
        return pano, pyr, True
    if role_of(request.user, pano) is None:
        raise Http404("no such image")
    return pano, pyr, False


def _iiif_headers(resp: HttpResponse, pyr: Pyramid, public: bool) -> HttpResponse:
    resp["Link"] = f'<{iiif.PROFILE_URI}>;rel="profile"'
    # The published version changes in place: short caching, revalidated by ETag.
    resp["Cache-Control"] = f"{'public' if public else 'private'}, max-age=300"
    if public:
        resp["Access-Control-Allow-Origin"] = "*"
    return resp


def _etag(pyr: Pyramid, key: str) -> str:
    return '"' + hashlib.blake2s(f"{pyr.pk}:{pyr.version}:{key}".encode(), digest_size=12).hexdigest() + '"'


@require_safe
def iiif_base(request: HttpRequest, slug: str) -> HttpResponse:
    _iiif_pyramid(request, slug)
    resp = redirect(reverse("sharing:iiif_info", kwargs={"slug": slug}))
    resp.status_code = 303
    resp["Access-Control-Allow-Origin"] = "*"
    return resp


@require_safe
def iiif_info(request: HttpRequest, slug: str) -> HttpResponse:
    pano, pyr, public = _iiif_pyramid(request, slug)
    geo = geometry(pyr)
    service_id = request.build_absolute_uri(reverse("sharing:iiif_base", kwargs={"slug": pano.slug})).rstrip("/")
    body = iiif.info(service_id, geo.width, geo.height, geo.tile_size, geo.levels, *_limits())
    ld = "application/ld+json" in request.headers.get("Accept", "")
    ctype = f'application/ld+json;profile="{iiif.CONTEXT}"' if ld else "application/json"
    resp = JsonResponse(body, content_type=ctype)
    resp["ETag"] = _etag(pyr, "info:" + service_id)
    resp["Vary"] = "Accept"
    return _iiif_headers(resp, pyr, public)


@require_safe
def iiif_image(request: HttpRequest, slug: str, region: str, size: str, rotation: str, quality: str, fmt: str):
    pano, pyr, public = _iiif_pyramid(request, slug)
    geo = geometry(pyr)
    try:
        ctype = iiif.check_quality_format(quality, fmt)
        iiif.check_rotation(rotation)
        rect = iiif.parse_region(region, geo.width, geo.height)
        ow, oh = iiif.parse_size(size, rect[2], rect[3], *_limits())
    except iiif.IIIFError as e:
        resp = HttpResponse(e.reason + "\n", status=e.status, content_type="text/plain")
        return _iiif_headers(resp, pyr, public)
    etag = _etag(pyr, f"{rect}:{ow}x{oh}:{fmt}")
    if etag in request.headers.get("If-None-Match", ""):
        resp = HttpResponse(status=304)
    else:
        # Tiles render at once; a large size (full/max is up to the export limit) takes
        # an export slot, as anyone may ask for it on a public panorama.
        big = ow * oh > IIIF_FREE_PIXELS
        if big and not _EXPORT_SLOTS.acquire(timeout=EXPORT_WAIT_S):
            resp = HttpResponse("the server is busy with other large images; try again in a moment\n", status=503)
            resp["Retry-After"] = "10"
            return _iiif_headers(resp, pyr, public)
        try:
            pixels = render_region(pyr.abs_path, geo, rect, ow, oh)
            data = encode_jpeg(pixels, quality=90)
        except InputError as e:
            raise Http404(str(e)) from e
        finally:
            if big:
                _EXPORT_SLOTS.release()
        resp = HttpResponse(data, content_type=ctype)
    resp["ETag"] = etag
    return _iiif_headers(resp, pyr, public)
