"""Review regions (W3C Web Annotations on a panorama) and their comments."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from webapp.panoramas.models import Panorama


class Region(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        NEEDS_RERENDER = "needs_rerender", "Needs re-render"
        APPROVED = "approved", "Approved"
        RESOLVED = "resolved", "Resolved"
        RERENDERED = "rerendered", "Re-rendered"

    panorama = models.ForeignKey(Panorama, on_delete=models.CASCADE, related_name="regions")
    version = models.PositiveIntegerField(help_text="pyramid version the author was looking at")
    target = models.JSONField(help_text="W3C Web Annotation target (selector rebuilt by the server)")
    x = models.PositiveBigIntegerField()
    y = models.PositiveBigIntegerField()
    w = models.PositiveBigIntegerField()
    h = models.PositiveBigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN, db_index=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["panorama", "created", "id"]
        indexes = [models.Index(fields=["panorama", "status"])]

    def __str__(self) -> str:
        return f"{self.panorama.slug} region #{self.pk} ({self.status})"

    @property
    def bbox(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h}


class Comment(models.Model):
    region = models.ForeignKey(Region, on_delete=models.CASCADE, related_name="comments")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replies", help_text="comment replied to"
    )
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    body = models.TextField(max_length=5000)
    created = models.DateTimeField(auto_now_add=True)
    edited = models.DateTimeField(null=True, blank=True, help_text="last edit by its author")

    class Meta:
        ordering = ["region", "created", "id"]

    def __str__(self) -> str:
        return f"comment #{self.pk} on region #{self.region_id}"


class ReviewChange(models.Model):
    """One line of a panorama's review log: what open viewers fetch when they poll.

    Rows are written by signal receivers (webapp.review.changes) whenever a
    region or a comment is saved or deleted, whoever does it (API, admin,
    re-render pipeline); the row id is the polling cursor.
    """

    panorama = models.ForeignKey(Panorama, on_delete=models.CASCADE, related_name="+")
    region_id = models.BigIntegerField(help_text="not a foreign key: survives the region's deletion")
    deleted = models.BooleanField(default=False, help_text="the region itself was deleted")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["panorama", "id"])]

    def __str__(self) -> str:
        return f"change #{self.pk} of region #{self.region_id}"


class Notification(models.Model):
    """Tells a member that a comment mentions them or replies to them."""

    class Kind(models.TextChoices):
        MENTION = "mention", "Mention"
        REPLY = "reply", "Reply"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="review_notifications")
    comment = models.ForeignKey(Comment, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    created = models.DateTimeField(auto_now_add=True)
    read = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["user", "read"])]
        unique_together = [("user", "comment", "kind")]

    def __str__(self) -> str:
        return f"{self.kind} for {self.user} on comment #{self.comment_id}"
