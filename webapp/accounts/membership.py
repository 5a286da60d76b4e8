"""Who belongs to a panorama, changed by its owners (the role model lives in
webapp/viewer/permissions.py and panoramas.Membership).

A panorama's owners are its `owner` (the creator) and the members whose role
is "owner"; the last one can be neither removed nor demoted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from webapp.panoramas.models import Membership, Panorama

ROLES = [r.value for r in Membership.Role]


class MembershipError(ValueError):
    """A change that is not allowed; the message says why, in one line."""


@dataclass
class Member:
    user: Any
    role: str
    creator: bool  # the panorama's `owner` field, not a Membership row


def members(pano: Panorama) -> list[Member]:
    """Everyone with a role on PANO, owners first, then by name."""
    rows = {m.user_id: Member(m.user, m.role, False) for m in pano.memberships.select_related("user")}
    if pano.owner_id is not None:
        rows[pano.owner_id] = Member(pano.owner, "owner", True)
    return sorted(rows.values(), key=lambda m: (-Membership.RANK[m.role], m.user.get_username().lower()))


def owner_ids(pano: Panorama) -> set[int]:
    ids = set(pano.memberships.filter(role=Membership.Role.OWNER).values_list("user_id", flat=True))
    if pano.owner_id is not None:
        ids.add(pano.owner_id)
    return ids


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise MembershipError(f"role must be one of {', '.join(ROLES)}, not {role!r}")


@transaction.atomic
def set_role(pano: Panorama, user: Any, role: str) -> None:
    """Give USER the ROLE on PANO (adds them when they are not a member yet)."""
    _check_role(role)
    pano = Panorama.objects.select_for_update().get(pk=pano.pk)
    owners = owner_ids(pano)
    if role != "owner" and user.pk in owners and owners == {user.pk}:
        raise MembershipError(f"{user.get_username()} is the last owner of {pano.slug}; make someone else owner first")
    if pano.owner_id == user.pk and role != "owner":
        # The creator steps down: from now on an ordinary member.
        Panorama.objects.filter(pk=pano.pk).update(owner=None)
    Membership.objects.update_or_create(user=user, panorama=pano, defaults={"role": role})


@transaction.atomic
def remove(pano: Panorama, user: Any) -> None:
    pano = Panorama.objects.select_for_update().get(pk=pano.pk)
    owners = owner_ids(pano)
    if owners == {user.pk}:
        raise MembershipError(f"{user.get_username()} is the last owner of {pano.slug} and cannot be removed")
    if pano.owner_id == user.pk:
        Panorama.objects.filter(pk=pano.pk).update(owner=None)
    Membership.objects.filter(user=user, panorama=pano).delete()


def find_user(who: str) -> Any | None:
    """The active user named WHO, or the one whose e-mail is WHO (None when none or ambiguous)."""
    users = get_user_model().objects.filter(is_active=True)
    by_name = users.filter(username=who).first()
    if by_name is not None or "@" not in who:
        return by_name
    found = list(users.filter(email__iexact=who)[:2])
    return found[0] if len(found) == 1 else None
