"""Admin registrations; re-render actions live in admin_actions.py."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils.html import format_html

from . import admin_views
from .admin_actions import rerender_selected_stacks
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
    list_display = [
        "slug",
        "title",
        "projection",
        "is_public",
        "published_pyramid",
        "updated",
    ]
    prepopulated_fields = {"slug": ("title",)}
    search_fields = ["slug", "title"]
    inlines = [SubPanoramaInline, MembershipInline]
    actions = ["rebuild"]

    def get_urls(self):
        site = self.admin_site

        def wrap(view):
            return site.admin_view(lambda request, pk: view(site, request, pk))

        return [
            path("<int:pk>/rerender/", wrap(admin_views.rerender_view), name="panoramas_panorama_rerender"),
            path("<int:pk>/progress/", wrap(admin_views.progress_view), name="panoramas_panorama_progress"),
            path("<int:pk>/progress.json", wrap(admin_views.progress_json), name="panoramas_panorama_progress_json"),
            *super().get_urls(),
        ]

    @admin.action(description="Rebuild the whole panorama…")
    def rebuild(self, request: HttpRequest, queryset) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Select one panorama to rebuild.", messages.WARNING)
            return None
        return redirect(reverse("admin:panoramas_panorama_rerender", args=[queryset.first().pk]) + "?full=1")


class FrameInline(admin.TabularInline):
    model = Frame
    extra = 0
    fields = ["original_path", "width", "height", "sharpness", "kept", "reason"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True


@admin.register(Stack)
class StackAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "subpanorama",
        "row",
        "col",
        "status",
        "progress_display",
        "version",
        "updated",
    ]
    list_filter = ["status", "subpanorama__panorama"]
    search_fields = ["name"]
    readonly_fields = [
        "recipe_hash",
        "version",
        "metrics",
        "output_path",
        "footprint",
        "error",
        "thumbnails",
    ]
    inlines = [FrameInline]
    actions = [rerender_selected_stacks]

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
    actions = ["publish_again"]

    def get_urls(self):
        site = self.admin_site
        view = site.admin_view(lambda request, pk: admin_views.rollback_view(site, request, pk))
        return [path("<int:pk>/publish/", view, name="panoramas_pyramid_publish"), *super().get_urls()]

    @admin.action(description="Publish this version again (rollback)…")
    def publish_again(self, request: HttpRequest, queryset) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one pyramid version.", messages.WARNING)
            return None
        return redirect(reverse("admin:panoramas_pyramid_publish", args=[queryset.first().pk]))


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "kind",
        "target",
        "status",
        "progress_display",
        "stage",
        "message",
        "eta",
        "created",
    ]
    list_filter = ["status", "kind"]
    readonly_fields = [f.name for f in Job._meta.fields]
    actions = ["cancel", "retry"]

    def get_urls(self):
        site = self.admin_site
        view = site.admin_view(lambda request, pk: admin_views.retry_job_view(site, request, pk))
        return [path("<int:pk>/retry/", view, name="panoramas_job_retry"), *super().get_urls()]

    @admin.action(description="Cancel selected queued or running jobs")
    def cancel(self, request: HttpRequest, queryset) -> None:
        n = admin_views.cancel_jobs(list(queryset))
        self.message_user(request, f"Canceled {n} job(s).")

    @admin.action(description="Retry selected failed jobs")
    def retry(self, request: HttpRequest, queryset) -> None:
        n = admin_views.retry_jobs(list(queryset.select_related("stack__subpanorama__panorama", "panorama")))
        self.message_user(request, f"Queued {n} job(s) again.")

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
