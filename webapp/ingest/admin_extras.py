"""Bits the panoramas admin uses: thumbnails of a stack."""

from __future__ import annotations

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from .jobs import thumbs_dir


def stack_thumbnails_html(stack) -> SafeString:
    """<img> tags of the stack's admin thumbnails (served by ingest:thumb, staff only)."""
    if stack is None or stack.pk is None:
        return format_html("{}", "-")
    d = thumbs_dir(stack)
    try:
        names = sorted((p.stem for p in d.glob("*.jpg") if p.stem.isdigit()), key=int)
    except OSError:
        names = []
    if not names:
        return format_html('<span class="quiet">{}</span>', "no thumbnails yet")
    return format_html_join(
        "",
        '<img src="{}" alt="frame {}" loading="lazy" style="max-height:128px;margin:0 4px 4px 0">',
        ((reverse("ingest:thumb", args=[stack.pk, int(n)]), n) for n in names),
    )
