from django.contrib import admin

from .models import Invitation


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "panorama", "role", "invited_by", "created", "accepted", "accepted_by"]
    list_filter = ["role", "panorama"]
    search_fields = ["email"]
    readonly_fields = ["token_hash", "created", "accepted", "accepted_by"]
