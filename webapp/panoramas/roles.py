"""Panorama roles for admin pages: staff status opens the admin, the role on
a panorama decides what a staff user may see and do with it.

viewer < reviewer < editor < owner (webapp.viewer.permissions); superusers own everything.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Q

from .models import Membership, Panorama

RANK = Membership.RANK


def role_of(user: Any, pano: Panorama | None) -> str | None:
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return None
    if user.is_superuser:
        return "owner"
    if pano is None:
        return None
    if pano.owner_id is not None and pano.owner_id == user.pk:
        return "owner"
    return Membership.objects.filter(user=user, panorama=pano).values_list("role", flat=True).first()


def has_role(user: Any, pano: Panorama | None, minimum: str) -> bool:
    role = role_of(user, pano)
    return role is not None and RANK.get(role, 0) >= RANK[minimum]


def require_role(user: Any, pano: Panorama | None, minimum: str) -> None:
    """PermissionDenied (403) unless USER holds at least MINIMUM on PANO."""
    if not has_role(user, pano, minimum):
        raise PermissionDenied(f"this needs the {minimum} role on this panorama")


def panoramas_q(user: Any, minimum: str = "viewer", prefix: str = "") -> Q:
    """A filter on a queryset whose panorama is at PREFIX ('' for Panorama itself)."""
    if getattr(user, "is_superuser", False):
        return Q()
    roles = [r for r, n in RANK.items() if n >= RANK[minimum]]
    p = prefix + "__" if prefix else ""
    q = Q(**{f"{p}memberships__user": user, f"{p}memberships__role__in": roles})
    return q | Q(**{f"{p}owner": user}) if user is not None and user.is_authenticated else Q(pk__in=[])


_ABS_PATH = re.compile(r"(?<![\w.])/(?:[^\s'\":,()]+/)+([^\s'\":,()/]+)")


def redact_paths(text: str) -> str:
    """TEXT with every absolute path cut to its file name (for those below editor)."""
    return _ABS_PATH.sub(r"\1", text or "")


def error_for(text: str, role: str | None) -> str:
    """Editors and owners see errors as recorded; others see file names, never server paths."""
    if role is not None and RANK.get(role, 0) >= RANK["editor"]:
        return text or ""
    return redact_paths(text)
