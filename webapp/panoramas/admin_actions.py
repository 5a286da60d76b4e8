"""Admin list actions that lead to the re-render confirmation page (docs/rerender.md)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse

from .admin_views import stacks_redirect
from .rerender import RerenderError


@admin.action(description="Re-render selected stacks…", permissions=["change"])
def rerender_selected_stacks(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset) -> HttpResponse | None:  # noqa: ANN001
    """To the confirmation page with these stacks (one panorama at a time); nothing changes yet."""
    stacks = list(queryset.select_related("subpanorama"))
    try:
        return stacks_redirect(stacks)
    except RerenderError as e:
        modeladmin.message_user(request, f"Cannot re-render: {e}.", messages.WARNING)
        return None
