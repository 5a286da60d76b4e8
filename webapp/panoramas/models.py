"""The recipe and status of everything (DESIGN.md: data model).

Paths stored here are relative to MEDIA_ROOT and built from ids, never from
request strings.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models
from django.urls import reverse

from webapp.security import validate_frame_ancestors


class Projection(models.TextChoices):
    CYLINDRICAL = "cylindrical", "Cylindrical"
    EQUIRECTANGULAR = "equirectangular", "Equirectangular"


class Panorama(models.Model):
    slug = models.SlugField(unique=True)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    credits = models.TextField(blank=True, help_text="photographers, processing, licence (shown on the home page)")
    embed_origins = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_frame_ancestors],
        help_text="sites allowed to embed this panorama (CSP frame-ancestors), space-separated, "
        "e.g. https://museum.example 'self'; empty: this site only; * : any site",
    )
    projection = models.CharField(max_length=20, choices=Projection.choices, default=Projection.CYLINDRICAL)
    wrap = models.BooleanField(default=True, help_text="full 360 degrees: pan endlessly round")
    scale = models.FloatField(default=2.0, help_text="super-resolution factor of each stack")
    recipe_defaults = models.JSONField(default=dict, blank=True)
    is_public = models.BooleanField(default=False, help_text="published: viewable without login")
    published_pyramid = models.ForeignKey("Pyramid", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    composite_path = models.CharField(max_length=500, blank=True)
    layout = models.JSONField(default=dict, blank=True, help_text="stitch layout (cameras, footprints)")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return self.title or self.slug

    def get_absolute_url(self) -> str:
        return reverse("viewer:panorama", kwargs={"slug": self.slug})

    @property
    def media_dir(self) -> Path:
        return Path(settings.MEDIA_ROOT) / "panoramas" / str(self.pk)


class SubPanorama(models.Model):
    panorama = models.ForeignKey(Panorama, on_delete=models.CASCADE, related_name="subpanoramas")
    name = models.CharField(max_length=100)
    order = models.PositiveIntegerField(default=0)
    is_sky = models.BooleanField(
        default=False, help_text="a separately shot sky capture: merged into the ground panorama last"
    )

    class Meta:
        ordering = ["panorama", "order", "name"]
        unique_together = [("panorama", "name")]

    def __str__(self) -> str:
        return f"{self.panorama.slug}/{self.name}"


class Status(models.TextChoices):
    PENDING = "pending", "Pending"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


class Stack(models.Model):
    subpanorama = models.ForeignKey(SubPanorama, on_delete=models.CASCADE, related_name="stacks")
    name = models.CharField(max_length=200)
    row = models.IntegerField(default=0)
    col = models.IntegerField(default=0)
    yaw = models.FloatField(null=True, blank=True, help_text="approximate yaw, degrees (rig/EXIF)")
    pitch = models.FloatField(null=True, blank=True, help_text="approximate pitch, degrees")
    focal_px = models.FloatField(null=True, blank=True, help_text="approximate focal length, pixels")
    recipe = models.JSONField(default=dict, blank=True, help_text="stage params overriding the defaults")
    recipe_hash = models.CharField(max_length=32, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    version = models.PositiveIntegerField(default=0)
    progress = models.FloatField(default=0.0)
    metrics = models.JSONField(default=dict, blank=True)
    output_path = models.CharField(max_length=500, blank=True)
    footprint = models.JSONField(default=dict, blank=True, help_text="bbox in composite pixels {x,y,w,h}")
    error = models.TextField(blank=True)
    candidate_group = models.CharField(max_length=64, blank=True, help_text="repeated captures of one place")
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["subpanorama", "row", "col", "name"]
        unique_together = [("subpanorama", "name")]

    def __str__(self) -> str:
        return f"{self.subpanorama}/{self.name}"

    @property
    def panorama(self) -> Panorama:
        return self.subpanorama.panorama


class Frame(models.Model):
    stack = models.ForeignKey(Stack, on_delete=models.CASCADE, related_name="frames")
    original_path = models.CharField(max_length=1000, help_text="absolute path of the original (read-only)")
    checksum = models.CharField(max_length=64, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    capture_time = models.DateTimeField(null=True, blank=True)
    exposure = models.JSONField(default=dict, blank=True)
    sharpness = models.FloatField(null=True, blank=True)
    kept = models.BooleanField(null=True, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    transform = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["stack", "original_path"]
        unique_together = [("stack", "original_path")]

    def __str__(self) -> str:
        return Path(self.original_path).name


class Pyramid(models.Model):
    class State(models.TextChoices):
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"
        DELETED = "deleted", "Deleted"

    panorama = models.ForeignKey(Panorama, on_delete=models.CASCADE, related_name="pyramids")
    version = models.PositiveIntegerField()
    path = models.CharField(max_length=500, help_text="folder relative to MEDIA_ROOT holding image.dzi")
    width = models.PositiveBigIntegerField(default=0)
    height = models.PositiveBigIntegerField(default=0)
    tile_size = models.PositiveIntegerField(default=254)
    overlap = models.PositiveIntegerField(default=1)
    format = models.CharField(max_length=8, default="jpg")
    state = models.CharField(max_length=10, choices=State.choices, default=State.BUILDING)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL)
    stats = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["panorama", "-version"]
        unique_together = [("panorama", "version")]

    def __str__(self) -> str:
        return f"{self.panorama.slug} v{self.version}"

    @property
    def abs_path(self) -> Path:
        return Path(settings.MEDIA_ROOT) / self.path

    @property
    def gigapixels(self) -> float:
        return self.width * self.height / 1e9


class Membership(models.Model):
    class Role(models.TextChoices):
        VIEWER = "viewer", "Viewer"
        REVIEWER = "reviewer", "Reviewer"
        EDITOR = "editor", "Editor"
        OWNER = "owner", "Owner"

    RANK = {"viewer": 1, "reviewer": 2, "editor": 3, "owner": 4}

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    panorama = models.ForeignKey(Panorama, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        unique_together = [("user", "panorama")]

    def __str__(self) -> str:
        return f"{self.user} {self.role} of {self.panorama.slug}"


class Job(models.Model):
    class Kind(models.TextChoices):
        STACK = "stack", "Stack"
        COMPOSITE = "composite", "Composite"
        PYRAMID = "pyramid", "Pyramid"
        THUMBNAILS = "thumbnails", "Thumbnails"
        INGEST = "ingest", "Ingest"
        LAYOUT = "layout", "Layout"
        BLOCK = "block", "Block"
        REDUCE = "reduce", "Reduce"

    kind = models.CharField(max_length=12, choices=Kind.choices)
    panorama = models.ForeignKey(Panorama, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs")
    stack = models.ForeignKey(Stack, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs")
    rq_id = models.CharField(max_length=64, blank=True, db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0, help_text="0-100 %")
    stage = models.CharField(max_length=100, blank=True)
    message = models.CharField(max_length=500, blank=True)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    ended = models.DateTimeField(null=True, blank=True)
    eta_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        target = self.stack or self.panorama
        return f"{self.kind} #{self.pk} ({target}) {self.status}"
