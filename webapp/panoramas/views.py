"""Fallback home page used only when the viewer app is not installed."""

from django.http import HttpRequest, HttpResponse

from .models import Panorama


def home(request: HttpRequest) -> HttpResponse:
    names = ", ".join(p.slug for p in Panorama.objects.filter(is_public=True))
    return HttpResponse(f"Terapan. Published panoramas: {names or 'none'}", content_type="text/plain")
