"""Admin registrations; re-render pages live in admin_views.py.

Staff status opens the admin; Django's model permissions decide what kind of
row a user may touch, and the role on each panorama (roles.py) decides which
rows: a staff user sees only the panoramas they hold a role on, changes them
with the editor role, and manages members as their owner. Superusers see all.
"""

from __future__ import annotations

import os
from pathlib import Path

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils.html import format_html

from . import admin_views
from .admin_actions import rerender_selected_stacks
from .models import Frame, Job, Membership, Panorama, Pyramid, Stack, SubPanorama
from .roles import has_role, panoramas_q


class RoleScopedAdmin(admin.ModelAdmin):
    """Rows of panoramas the user holds a role on; changes need CHANGE_ROLE there."""

    panorama_path = "panorama"  # lookup from this model to its Panorama ("" for Panorama)
    change_role = "editor"

    def _panorama_of(self, obj) -> Panorama | None:  # noqa: ANN001
        if obj is None:
            return None
        if not self.panorama_path:
            return obj
        for part in self.panorama_path.split("__"):
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        return obj

    def get_queryset(self, request: HttpRequest):
        qs = super().get_queryset(request)
        if request.user.is_superuser:
            return qs
        return qs.filter(panoramas_q(request.user, "viewer", self.panorama_path)).distinct()

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:  # noqa: ANN001
        ok = super().has_view_permission(request, obj)
        return ok and (obj is None or has_role(request.user, self._panorama_of(obj), "viewer"))

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:  # noqa: ANN001
        ok = super().has_change_permission(request, obj)
        return ok and (obj is None or has_role(request.user, self._panorama_of(obj), self.change_role))

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:  # noqa: ANN001
        ok = super().has_delete_permission(request, obj)
        return ok and (obj is None or has_role(request.user, self._panorama_of(obj), "owner"))

    def formfield_for_foreignkey(self, db_field, request, **kwargs):  # noqa: ANN001, ANN201
        # Choices of related panoramas, stacks and sub-panoramas: only those one may edit.
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if field is not None and not request.user.is_superuser:
            model = db_field.related_model
            paths = {Panorama: "", SubPanorama: "panorama", Stack: "subpanorama__panorama"}
            if model in paths:
                field.queryset = field.queryset.filter(panoramas_q(request.user, "editor", paths[model])).distinct()
        return field


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
class PanoramaAdmin(RoleScopedAdmin):
    panorama_path = ""
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

    def save_model(self, request: HttpRequest, obj: Panorama, form, change: bool) -> None:  # noqa: ANN001
        if not change and obj.owner_id is None:
            obj.owner = request.user  # whoever creates a panorama owns it
        super().save_model(request, obj, form, change)

    def get_inline_instances(self, request: HttpRequest, obj=None):  # noqa: ANN001, ANN201
        inlines = super().get_inline_instances(request, obj)
        if obj is not None and not has_role(request.user, obj, "owner"):
            inlines = [i for i in inlines if not isinstance(i, MembershipInline)]  # members: the owner's call
        return inlines

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
class StackAdmin(RoleScopedAdmin):
    panorama_path = "subpanorama__panorama"
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


class FrameForm(forms.ModelForm):
    class Meta:
        model = Frame
        fields = "__all__"

    def clean_original_path(self) -> str:
        """Originals come from the import folders only (symlinks resolved)."""
        from django.conf import settings

        raw = (self.cleaned_data.get("original_path") or "").strip()
        if self.instance.pk and "original_path" not in self.changed_data:
            return raw
        if not raw or "\x00" in raw or not os.path.isabs(raw):
            raise forms.ValidationError("give the absolute path of an original inside an import folder")
        real = Path(os.path.realpath(raw))
        roots = [Path(os.path.realpath(r)) for r in settings.TERAPAN_IMPORT_ROOTS]
        if not any(real.is_relative_to(r) for r in roots):
            allowed = ", ".join(str(r) for r in roots)
            raise forms.ValidationError(f"{raw}: outside the import folders ({allowed})")
        if not real.is_file():
            raise forms.ValidationError(f"{raw}: not a file")
        return raw


@admin.register(Frame)
class FrameAdmin(RoleScopedAdmin):
    panorama_path = "stack__subpanorama__panorama"
    form = FrameForm
    list_display = ["__str__", "stack", "sharpness", "kept", "reason"]
    list_filter = ["kept"]
    search_fields = ["original_path"]


@admin.register(Pyramid)
class PyramidAdmin(RoleScopedAdmin):
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
class JobAdmin(RoleScopedAdmin):
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

    def _editable(self, request: HttpRequest, queryset) -> list[Job]:  # noqa: ANN001
        if not request.user.is_superuser:
            queryset = queryset.filter(panoramas_q(request.user, "editor", "panorama"))
        return list(queryset.select_related("stack__subpanorama__panorama", "panorama"))

    @admin.action(description="Cancel selected queued or running jobs", permissions=["change"])
    def cancel(self, request: HttpRequest, queryset) -> None:
        n = admin_views.cancel_jobs(self._editable(request, queryset))
        self.message_user(request, f"Canceled {n} job(s).")

    @admin.action(description="Retry selected stuck jobs (failed, canceled, or lost by RQ)", permissions=["change"])
    def retry(self, request: HttpRequest, queryset) -> None:
        n = admin_views.retry_jobs(self._editable(request, queryset))
        self.message_user(request, f"Queued {n} job(s) again (each chain resumed once).")

    @admin.display(description="target")
    def target(self, obj: Job) -> str:
        return str(obj.stack or obj.panorama or "-")

    @admin.display(description="progress")
    def progress_display(self, obj: Job) -> str:
        return progress_bar(obj.progress, obj.status)

    @admin.display(description="ETA")
    def eta(self, obj: Job) -> str:
        return f"{obj.eta_seconds:.0f} s" if obj.eta_seconds and obj.status == "running" else ""


@admin.register(SubPanorama)
class SubPanoramaAdmin(RoleScopedAdmin):
    pass


@admin.register(Membership)
class MembershipAdmin(RoleScopedAdmin):
    change_role = "owner"  # only a panorama's owner chooses its members and their roles

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser and super().has_add_permission(request)


admin.site.site_header = "Terapan administration"
