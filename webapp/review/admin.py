from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html

from webapp.panoramas.admin import RoleScopedAdmin

from .models import Comment, Notification, Region


class CommentInline(admin.TabularInline):
    model = Comment
    extra = 0
    raw_id_fields = ("parent",)


@admin.register(Region)
class RegionAdmin(RoleScopedAdmin):  # rows of panoramas the user holds a role on
    list_display = (
        "id",
        "panorama",
        "status",
        "version",
        "x",
        "y",
        "w",
        "h",
        "author",
        "updated",
    )
    list_filter = ("status", "panorama")
    inlines = [CommentInline]
    actions = ["rerender"]
    readonly_fields = ("rerender_link",)

    @admin.display(description="re-render")
    def rerender_link(self, obj: Region) -> str:
        if not obj.pk:
            return "-"
        url = reverse("admin:panoramas_panorama_rerender", args=[obj.panorama_id]) + f"?region_id={obj.pk}"
        return format_html('<a class="button" href="{}">Re-render the stacks under this region…</a>', url)

    @admin.action(description="Re-render the stacks under the selected region…")
    def rerender(self, request: HttpRequest, queryset) -> HttpResponse | None:  # noqa: ANN001
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one region.", messages.WARNING)
            return None
        r = queryset.first()
        return redirect(reverse("admin:panoramas_panorama_rerender", args=[r.panorama_id]) + f"?region_id={r.pk}")


@admin.register(Comment)
class CommentAdmin(RoleScopedAdmin):
    panorama_path = "region__panorama"

    list_display = ("id", "region", "author", "created")
    raw_id_fields = ("parent",)


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    """A user's notifications are theirs: in the admin, superusers only."""

    list_display = ("id", "user", "kind", "comment", "created", "read")
    list_filter = ("kind",)
    raw_id_fields = ("user", "comment")

    def has_module_permission(self, request) -> bool:  # noqa: ANN001
        return request.user.is_superuser

    def has_view_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return request.user.is_superuser

    def has_add_permission(self, request) -> bool:  # noqa: ANN001
        return False
