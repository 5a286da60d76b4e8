"""Invitations to a panorama: by e-mail for people who have no account yet,
or addressed to an existing account (``invitee``), who joins only by
accepting (from the link in the e-mail or from the home page).

Only a hash of the token is stored: the link in the e-mail is the secret.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from webapp.panoramas.models import Membership, Panorama


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Invitation(models.Model):
    panorama = models.ForeignKey(Panorama, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(blank=True)  # blank: an account without an address (home page only)
    # Set when the invitation is addressed to an existing account: only that account may accept it.
    invitee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="invitations_received"
    )
    role = models.CharField(max_length=10, choices=Membership.Role.choices, default=Membership.Role.VIEWER)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    accepted = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.addressee} as {self.role} of {self.panorama.slug}"

    @property
    def addressee(self) -> str:
        """Who it is for, as the owner's page shows it."""
        return self.invitee.get_username() if self.invitee_id else self.email

    @classmethod
    def issue(cls, panorama: Panorama, email: str, role: str, invited_by, invitee=None) -> tuple[Invitation, str]:
        """A new pending invitation and its one-time token (only its hash is kept)."""
        token = secrets.token_urlsafe(32)
        inv = cls.objects.create(
            panorama=panorama,
            email=email,
            role=role,
            token_hash=hash_token(token),
            invited_by=invited_by,
            invitee=invitee,
        )
        return inv, token

    @property
    def expires(self):
        return self.created + timedelta(days=settings.TERAPAN_INVITE_DAYS)

    @property
    def is_pending(self) -> bool:
        return self.accepted is None and timezone.now() < self.expires


def pending_for(user) -> list[Invitation]:
    """Invitations addressed to USER's account that wait for their answer (shown on the home page)."""
    if not user.is_authenticated:
        return []
    rows = Invitation.objects.filter(invitee=user, accepted__isnull=True).select_related("panorama", "invited_by")
    return [i for i in rows if i.is_pending]
