"""A region asked to be re-rendered becomes "re-rendered" when a version that
re-rendered it is published: a full build covers every region, a partial one
the regions lying wholly inside its re-blended rectangle."""

from __future__ import annotations

from typing import Any


def contains(outer: list[int] | tuple[int, ...], x: int, y: int, w: int, h: int) -> bool:
    ox, oy, ow, oh = (int(v) for v in outer)
    return ox <= x and oy <= y and x + w <= ox + ow and y + h <= oy + oh


def mark_rerendered(sender: Any, pyramid: Any, region: Any = None, **kwargs: Any) -> int:
    """Receiver of pyramid_published; returns how many regions changed."""
    from django.apps import apps

    if not apps.is_installed("webapp.review"):
        return 0
    from webapp.review.models import Region

    waiting = Region.objects.filter(
        panorama_id=pyramid.panorama_id, status=Region.Status.NEEDS_RERENDER, version__lt=pyramid.version
    )
    ids = [r.pk for r in waiting if region is None or contains(region, r.x, r.y, r.w, r.h)]
    if not ids:
        return 0
    # save() per row (not update()) so that auto_now and post_save listeners (live review) see it.
    n = 0
    for r in Region.objects.filter(pk__in=ids):
        r.status = Region.Status.RERENDERED
        r.save(update_fields=["status", "updated"])
        n += 1
    return n
