"""Who may do what with a panorama: one role per user, ranked.

viewer < reviewer < editor < owner. The panorama's owner and staff
superusers are owners; anyone may view a public panorama that has a published
pyramid, but only members see unpublished versions, annotations and work in
progress.
"""

from __future__ import annotations

from typing import Any

from webapp.panoramas.models import Membership, Panorama, Pyramid

RANK = Membership.RANK


def role_of(user: Any, panorama: Panorama) -> str | None:
    """The user's role on PANORAMA ("viewer", "reviewer", "editor", "owner") or None."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return None
    if user.is_superuser and user.is_staff:
        return "owner"
    if panorama.owner_id is not None and panorama.owner_id == user.pk:
        return "owner"
    return Membership.objects.filter(user=user, panorama=panorama).values_list("role", flat=True).first()


def has_role(user: Any, panorama: Panorama, minimum: str) -> bool:
    role = role_of(user, panorama)
    return role is not None and RANK.get(role, 0) >= RANK[minimum]


def is_published(panorama: Panorama) -> bool:
    pyr = panorama.published_pyramid
    return bool(panorama.is_public and pyr is not None and pyr.state == Pyramid.State.READY)


def can_view(user: Any, panorama: Panorama) -> bool:
    """Public panoramas with a published pyramid: anyone; otherwise members only."""
    return is_published(panorama) or role_of(user, panorama) is not None


def is_member(user: Any, panorama: Panorama) -> bool:
    return role_of(user, panorama) is not None


def can_review(user: Any, panorama: Panorama) -> bool:
    """Draw regions and comment (reviewer and above)."""
    return has_role(user, panorama, "reviewer")


def can_edit(user: Any, panorama: Panorama) -> bool:
    """Change region status, ask for re-renders (editor and above)."""
    return has_role(user, panorama, "editor")


def can_view_pyramid(user: Any, pyramid: Pyramid) -> bool:
    """Members see every ready version; others only the published one of a public panorama."""
    if pyramid.state != Pyramid.State.READY:
        return False
    pano = pyramid.panorama
    if pano.is_public and pano.published_pyramid_id == pyramid.pk:
        return True
    return role_of(user, pano) is not None


def viewable_panoramas(user: Any):
    """Queryset of panoramas USER can view (home page)."""
    from django.db.models import Q

    public = Q(
        is_public=True,
        published_pyramid__isnull=False,
        published_pyramid__state=Pyramid.State.READY,
    )
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return Panorama.objects.filter(public)
    if user.is_superuser and user.is_staff:
        return Panorama.objects.all()
    return Panorama.objects.filter(public | Q(owner=user) | Q(memberships__user=user)).distinct()
