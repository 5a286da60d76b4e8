"""Invitations to a panorama for people who have no account yet.

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
    email = models.EmailField()
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
        return f"{self.email} as {self.role} of {self.panorama.slug}"

    @classmethod
    def issue(cls, panorama: Panorama, email: str, role: str, invited_by) -> tuple[Invitation, str]:
        """A new pending invitation and its one-time token (only its hash is kept)."""
        token = secrets.token_urlsafe(32)
        inv = cls.objects.create(
            panorama=panorama, email=email, role=role, token_hash=hash_token(token), invited_by=invited_by
        )
        return inv, token

    @property
    def expires(self):
        return self.created + timedelta(days=settings.TERAPAN_INVITE_DAYS)

    @property
    def is_pending(self) -> bool:
        return self.accepted is None and timezone.now() < self.expires
