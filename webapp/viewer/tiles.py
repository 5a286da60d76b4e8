"""Serving Deep Zoom descriptors and tiles.

The file path is built from the Pyramid row's path and validated integers,
never from request strings, then resolved and checked to stay inside the
pyramid folder (a symlink planted there that points elsewhere is refused).
Tile URLs carry the version, so responses are immutable.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from pathlib import Path

from django.conf import settings
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotModified,
)
from django.views.decorators.http import require_safe

from processing.tiles.pyramid import level_grid, num_levels
from webapp.panoramas.models import Pyramid

from .permissions import can_view_pyramid

FORMATS = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
ONE_YEAR = 31536000


def _pyramid_or_404(pyramid_id: int, version: int) -> Pyramid:
    try:
        return Pyramid.objects.select_related("panorama", "panorama__published_pyramid").get(
            pk=pyramid_id, version=version, state=Pyramid.State.READY
        )
    except Pyramid.DoesNotExist as e:
        raise Http404("no such pyramid") from e


def _check_access(request: HttpRequest, pyr: Pyramid) -> bool:
    """True when the response may be cached publicly; Http404 when not allowed.

    The published version of a public panorama is checked without touching
    the session, so its tiles carry no `Vary: Cookie`.
    """
    pano = pyr.panorama
    if pano.is_public and pano.published_pyramid_id == pyr.pk:
        return True
    if not can_view_pyramid(request.user, pyr):
        # 404, not 403: outsiders learn nothing about private panoramas.
        raise Http404("no such pyramid")
    return False


def _safe_file(pyr: Pyramid, *parts: str) -> tuple[Path, os.stat_result]:
    """Resolve MEDIA_ROOT/pyr.path/parts; Http404 unless it is a regular file inside the pyramid."""
    media = Path(settings.MEDIA_ROOT).resolve()
    try:
        base = (media / pyr.path).resolve(strict=True)
    except (OSError, RuntimeError) as e:
        raise Http404("pyramid folder missing") from e
    if not base.is_relative_to(media) or base == media:
        raise Http404("pyramid folder outside media")
    candidate = base.joinpath(*parts)
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError) as e:
        raise Http404("no such tile") from e
    if not real.is_relative_to(base):
        raise Http404("no such tile")
    try:
        st = real.stat()
    except OSError as e:
        raise Http404("no such tile") from e
    if not os.path.isfile(real):
        raise Http404("no such tile")
    return real, st


def _etag(pyr: Pyramid, name: str, st: os.stat_result) -> str:
    key = f"{pyr.pk}:{pyr.version}:{name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
    return '"' + hashlib.blake2s(key.encode(), digest_size=12).hexdigest() + '"'


def _matches(request: HttpRequest, etag: str) -> bool:
    header = request.headers.get("If-None-Match", "")
    if not header:
        return False
    tags = [t.strip() for t in header.split(",")]
    # Weak comparison for If-None-Match (RFC 9110 13.1.2).
    return "*" in tags or etag in tags or f"W/{etag}" in tags


def _serve(
    request: HttpRequest,
    pyr: Pyramid,
    public: bool,
    path: Path,
    st: os.stat_result,
    ctype: str,
):
    etag = _etag(pyr, path.name + str(path.parent.name), st)
    cache = f"{'public' if public else 'private'}, max-age={ONE_YEAR}, immutable"
    if _matches(request, etag):
        resp: HttpResponse = HttpResponseNotModified()
    else:
        accel = getattr(settings, "TERAPAN_X_ACCEL", "")
        if accel:
            rel = path.relative_to(Path(settings.MEDIA_ROOT).resolve()).as_posix()
            resp = HttpResponse(content_type=ctype)
            resp["X-Accel-Redirect"] = accel.rstrip("/") + "/" + rel
        else:
            resp = FileResponse(open(path, "rb"), content_type=ctype)  # noqa: SIM115 - FileResponse closes it
            resp["Content-Length"] = str(st.st_size)
    resp["ETag"] = etag
    resp["Cache-Control"] = cache
    resp["X-Content-Type-Options"] = "nosniff"
    return resp


@require_safe
def dzi(request: HttpRequest, pyramid_id: int, version: int) -> HttpResponse:
    pyr = _pyramid_or_404(pyramid_id, version)
    public = _check_access(request, pyr)
    path, st = _safe_file(pyr, "image.dzi")
    return _serve(request, pyr, public, path, st, "application/xml")


@require_safe
def tile(
    request: HttpRequest,
    pyramid_id: int,
    version: int,
    level: int,
    col: int,
    row: int,
    fmt: str,
):
    if fmt not in FORMATS:
        raise Http404("unknown format")
    pyr = _pyramid_or_404(pyramid_id, version)
    public = _check_access(request, pyr)
    if fmt != pyr.format:
        raise Http404("wrong format")
    if pyr.width and pyr.height:
        # Out-of-range requests never touch the filesystem.
        if level >= num_levels(pyr.width, pyr.height):
            raise Http404("no such level")
        nc, nr = level_grid(pyr.width, pyr.height, pyr.tile_size, level)
        if col >= nc or row >= nr:
            raise Http404("no such tile")
    path, st = _safe_file(pyr, "image_files", str(int(level)), f"{int(col)}_{int(row)}.{fmt}")
    return _serve(
        request,
        pyr,
        public,
        path,
        st,
        FORMATS[fmt] or mimetypes.guess_type(path.name)[0],
    )
