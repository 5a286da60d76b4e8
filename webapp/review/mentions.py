"""@mentions in comments: which members a comment names, and telling them.

A mention is "@username" of a member of the panorama (its owner or anyone with
a membership); names that are not members are plain text. Each mentioned member
(and the author of the comment replied to) gets a Notification and, when they
have an address, an e-mail through Django's mail backend.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.urls import reverse

from webapp.panoramas.models import Panorama

from .models import Comment, Notification

log = logging.getLogger(__name__)
MENTION_RE = re.compile(r"(?<![\w@.])@([\w.@+-]{1,150})")


def members(panorama: Panorama) -> list[Any]:
    """Active users with a role on PANORAMA (owner included), by username."""
    users = get_user_model().objects.filter(is_active=True)
    return list(
        users.filter(Q(memberships__panorama=panorama) | Q(pk=panorama.owner_id)).distinct().order_by("username")
    )


def mentioned(text: str, panorama: Panorama, team: list[Any] | None = None) -> list[Any]:
    """Members (TEAM, default: the panorama's) named as @username in TEXT
    (trailing dots ignored, case-insensitive)."""
    names = {m.group(1).rstrip(".").lower() for m in MENTION_RE.finditer(text)}
    if not names:
        return []
    return [u for u in (team if team is not None else members(panorama)) if u.get_username().lower() in names]


def comment_url(comment: Comment, request: Any = None) -> str:
    path = reverse("viewer:panorama", kwargs={"slug": comment.region.panorama.slug}) + f"#comment={comment.pk}"
    return request.build_absolute_uri(path) if request is not None else path


def notify(comment: Comment, request: Any = None) -> list[Notification]:
    """Notifications for the mentions in COMMENT and for the author it replies to.

    Idempotent: editing a comment notifies only members newly mentioned.
    """
    pano = comment.region.panorama
    team = members(pano)
    targets: list[tuple[Any, str]] = [(u, Notification.Kind.MENTION) for u in mentioned(comment.body, pano, team)]
    parent = comment.parent
    if parent is not None and parent.author_id in {u.pk for u in team}:  # only members hear of replies
        targets.append((parent.author, Notification.Kind.REPLY))
    made = []
    seen: set[int] = set()
    for user, kind in targets:
        if user.pk == comment.author_id or user.pk in seen:
            continue
        seen.add(user.pk)
        note, created = Notification.objects.get_or_create(user=user, comment=comment, kind=kind)
        if created:
            made.append(note)
    if made:
        url = comment_url(comment, request)
        transaction.on_commit(lambda: _mail(made, comment, url))
    return made


def _mail(notes: list[Notification], comment: Comment, url: str) -> None:
    who = comment.author.get_username() if comment.author else "someone"
    pano = comment.region.panorama
    title = " ".join((pano.title or pano.slug).split())  # one line: a subject refuses line breaks
    for note in notes:
        if not note.user.email:
            continue
        what = "mentioned you" if note.kind == Notification.Kind.MENTION else "replied to you"
        try:
            send_mail(
                f"[Terapan] {who} {what} on {title}, region #{comment.region_id}",
                f"{who} wrote:\n\n{comment.body}\n\nOpen it: {url}\n",
                getattr(settings, "DEFAULT_FROM_EMAIL", None),
                [note.user.email],
            )
        except OSError as e:  # no mail server: the in-page badge still tells them
            log.warning("could not e-mail %s about comment #%s: %s", note.user.email, comment.pk, e)
