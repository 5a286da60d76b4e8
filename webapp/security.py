"""Security headers Django 5.2 does not set itself: Content-Security-Policy
and Permissions-Policy.

The site policy fits the viewer: scripts only from our own origin (the
OpenSeadragon and Annotorious bundles are served by WhiteNoise, and the page
config travels in a non-executed json_script block); inline styles allowed
because Annotorious injects <style> elements and style attributes; tiles,
data: and blob: images for OpenSeadragon's canvas and navigator. The admin
gets the same policy plus inline scripts (Django admin extras and our
progress page use them); it is staff-only. Both can be overridden in
settings (TERAPAN_CSP, TERAPAN_CSP_ADMIN); a view that sets its own
Content-Security-Policy keeps it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse

SITE_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'self' data:",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
ADMIN_CSP = SITE_CSP.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'")
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"


class SecurityHeadersMiddleware:
    """Adds Content-Security-Policy and Permissions-Policy to every response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.site = getattr(settings, "TERAPAN_CSP", SITE_CSP)
        self.admin = getattr(settings, "TERAPAN_CSP_ADMIN", ADMIN_CSP)
        self.permissions = getattr(settings, "TERAPAN_PERMISSIONS_POLICY", PERMISSIONS_POLICY)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        policy = self.admin if request.path.startswith("/admin/") else self.site
        if policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy
        if self.permissions and "Permissions-Policy" not in response:
            response["Permissions-Policy"] = self.permissions
        return response


# ---------------------------------------------------------------- embedding

_SOURCE_RE = re.compile(r"^(?:'self'|\*|'none'|https?://(?:\*\.)?[A-Za-z0-9.-]+(?::\d{1,5})?)$")


def parse_frame_ancestors(raw: str) -> list[str]:
    """The sources of a panorama's embed_origins; ValueError names the bad one."""
    sources = raw.split()
    for src in sources:
        if not _SOURCE_RE.match(src):
            raise ValueError(f"{src!r} is not an origin like https://example.org, 'self' or *")
    return sources


def validate_frame_ancestors(raw: str) -> None:
    try:
        parse_frame_ancestors(raw)
    except ValueError as e:
        raise ValidationError(str(e)) from e


def embed_csp(raw: str) -> str:
    """The site policy with frame-ancestors from RAW (empty: this site only)."""
    sources = parse_frame_ancestors(raw) or ["'self'"]
    return SITE_CSP.replace("frame-ancestors 'none'", "frame-ancestors " + " ".join(sources))
