"""Admin registrations; re-render actions live in admin_actions.py."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html

from .models import Frame, Job, Membership, Panorama, Pyramid, Stack, SubPanorama


def progress_bar(value: float, status: str = "") -> str:
    colour = {"failed": "#c0392b", "done": "#27ae60", "finished": "#27ae60"}.get(status, "#2980b9")
    return format_html(
        '<div style="width:120px;background:#eee;border-radius:3px" title="{}%">'
        '<div style="width:{}px;background:{};height:10px;border-radius:3px"></div></div>',
        f"{value:.0f}",
        int(max(0.0, min(100.0, value)) * 1.2),
        colour,
    )


class SubPanoramaInline(admin.TabularInline):
    model = SubPanorama
    extra = 0


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Panorama)
class PanoramaAdmin(admin.ModelAdmin):
    list_display = ["slug", "title", "projection", "is_public", "published_pyramid", "updated"]
    prepopulated_fields = {"slug": ("title",)}
    search_fields = ["slug", "title"]
    inlines = [SubPanoramaInline, MembershipInline]


class FrameInline(admin.TabularInline):
    model = Frame
    extra = 0
    fields = ["original_path", "width", "height", "sharpness", "kept", "reason"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True


@admin.register(Stack)
class StackAdmin(admin.ModelAdmin):
    list_display = ["name", "subpanorama", "row", "col", "status", "progress_display", "version", "updated"]
    list_filter = ["status", "subpanorama__panorama"]
    search_fields = ["name"]
    readonly_fields = ["recipe_hash", "version", "metrics", "output_path", "footprint", "error", "thumbnails"]
    inlines = [FrameInline]

    @admin.display(description="progress")
    def progress_display(self, obj: Stack) -> str:
        return progress_bar(obj.progress, obj.status)

    @admin.display(description="thumbnails")
    def thumbnails(self, obj: Stack) -> str:
        try:
            from webapp.ingest.admin_extras import stack_thumbnails_html
        except ImportError:
            return "-"
        return stack_thumbnails_html(obj)


@admin.register(Frame)
class FrameAdmin(admin.ModelAdmin):
    list_display = ["__str__", "stack", "sharpness", "kept", "reason"]
    list_filter = ["kept"]
    search_fields = ["original_path"]


@admin.register(Pyramid)
class PyramidAdmin(admin.ModelAdmin):
    list_display = ["panorama", "version", "state", "width", "height", "created"]
    list_filter = ["state", "panorama"]
    readonly_fields = ["path", "stats"]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "target", "status", "progress_display", "stage", "message", "eta", "created"]
    list_filter = ["status", "kind"]
    readonly_fields = [f.name for f in Job._meta.fields]

    @admin.display(description="target")
    def target(self, obj: Job) -> str:
        return str(obj.stack or obj.panorama or "-")

    @admin.display(description="progress")
    def progress_display(self, obj: Job) -> str:
        return progress_bar(obj.progress, obj.status)

    @admin.display(description="ETA")
    def eta(self, obj: Job) -> str:
        return f"{obj.eta_seconds:.0f} s" if obj.eta_seconds and obj.status == "running" else ""


admin.site.register(SubPanorama)
admin.site.register(Membership)
admin.site.site_header = "Terapan administration"
