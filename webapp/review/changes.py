"""The review log behind live updates: every saved or deleted region or comment
appends a ReviewChange row, and open viewers poll for rows after their cursor.

Receivers rather than calls in the API views, so that changes made in the admin
or by the re-render pipeline (a region's status) reach open viewers too.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save

from .models import Comment, Region, ReviewChange


def record(panorama_id: int, region_id: int, deleted: bool = False) -> None:
    ReviewChange.objects.create(panorama_id=panorama_id, region_id=region_id, deleted=deleted)


def _region_saved(sender: Any, instance: Region, raw: bool = False, **kwargs: Any) -> None:
    if not raw:
        record(instance.panorama_id, instance.pk)


def _region_deleted(sender: Any, instance: Region, **kwargs: Any) -> None:
    record(instance.panorama_id, instance.pk, deleted=True)


def _comment_changed(sender: Any, instance: Comment, raw: bool = False, **kwargs: Any) -> None:
    if raw:
        return
    # The region may be going away in the same cascade; its own row says so.
    panorama_id = Region.objects.filter(pk=instance.region_id).values_list("panorama_id", flat=True).first()
    if panorama_id is not None:
        record(panorama_id, instance.region_id)


def connect() -> None:
    post_save.connect(_region_saved, sender=Region, dispatch_uid="review-change-region-saved")
    post_delete.connect(_region_deleted, sender=Region, dispatch_uid="review-change-region-deleted")
    post_save.connect(_comment_changed, sender=Comment, dispatch_uid="review-change-comment-saved")
    post_delete.connect(_comment_changed, sender=Comment, dispatch_uid="review-change-comment-deleted")


def latest(panorama_id: int) -> int:
    """The panorama's current cursor (0 before any change)."""
    last = ReviewChange.objects.filter(panorama_id=panorama_id).order_by("-id").values_list("id", flat=True).first()
    return int(last or 0)
