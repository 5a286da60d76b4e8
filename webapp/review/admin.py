from django.contrib import admin

from .models import Comment, Region


class CommentInline(admin.TabularInline):
    model = Comment
    extra = 0


@admin.register(Region)
class RegionAdmin(admin.ModelAdmin):
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


@admin.register(Comment)
class CommentAdmin(admin.ModelAdmin):
    list_display = ("id", "region", "author", "created")
