"""Site sign-in, password reset by e-mail, membership pages and invitations."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.urls import reverse

from webapp.panoramas.models import Membership

pytestmark = pytest.mark.django_db

ALL = ("owner", "editor", "reviewer", "viewer", "outsider", None)


@pytest.fixture(autouse=True)
def _locmem(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


def test_login_page_and_non_staff_sign_in(make_pano, client_for, users):
    pano = make_pano(public=False)
    c = client_for(None)
    page = c.get(reverse("accounts:login"))
    assert page.status_code == 200
    assert b'name="username"' in page.content and b"Forgot your password?" in page.content
    assert b"staff account" not in page.content
    r = c.post(reverse("accounts:login"), {"username": "reviewer", "password": "pw-reviewer", "next": "/"})
    assert r.status_code == 302 and r["Location"] == "/"
    home = c.get("/")
    assert pano.title.encode() in home.content
    assert c.get(pano.get_absolute_url()).status_code == 200
    # Still not staff: the admin stays closed.
    assert c.get("/admin/").status_code == 302


def test_login_rejects_bad_password(users, client_for):
    r = client_for(None).post(reverse("accounts:login"), {"username": "viewer", "password": "nope"})
    assert r.status_code == 200
    assert b"correct username and password" in r.content


def test_site_links_go_to_site_sign_in_not_admin(make_pano, client_for):
    pano = make_pano()
    html = client_for(None).get(pano.get_absolute_url()).content.decode()
    assert 'href="/accounts/login/?next=' in html
    assert "/admin/login/" not in html
    html = client_for("viewer").get(pano.get_absolute_url()).content.decode()
    assert 'action="/accounts/logout/"' in html


def test_private_panorama_redirects_anonymous_to_site_login(make_pano, client_for):
    pano = make_pano(public=False)
    r = client_for(None).get(pano.get_absolute_url())
    assert r.status_code == 302 and r["Location"].startswith("/accounts/login/?next=")


def test_logout_is_post_only(client_for):
    c = client_for("viewer")
    assert c.get(reverse("accounts:logout")).status_code == 405
    r = c.post(reverse("accounts:logout"))
    assert r.status_code == 302
    assert "_auth_user_id" not in c.session


def test_password_reset_by_email(users, client_for):
    users["reviewer"].email = "rev@example.org"
    users["reviewer"].save()
    c = client_for(None)
    r = c.post(reverse("accounts:password_reset"), {"email": "rev@example.org"})
    assert r.status_code == 302 and r["Location"] == reverse("accounts:password_reset_done")
    assert len(mail.outbox) == 1
    link = re.search(r"https?://[^/]+(/accounts/reset/\S+)", mail.outbox[0].body).group(1)
    form = c.get(link, follow=True)
    assert form.status_code == 200 and b"new_password1" in form.content
    r = c.post(form.redirect_chain[-1][0], {"new_password1": "Fresh-pass-951", "new_password2": "Fresh-pass-951"})
    assert r.status_code == 302 and r["Location"] == reverse("accounts:password_reset_complete")
    # The new password signs in through the site's form (login throttling needs the request).
    r = client_for(None).post(reverse("accounts:login"), {"username": "reviewer", "password": "Fresh-pass-951"})
    assert r.status_code == 302
    # An unknown address sends nothing and says the same.
    r = c.post(reverse("accounts:password_reset"), {"email": "nobody@example.org"})
    assert r.status_code == 302 and len(mail.outbox) == 1


@pytest.mark.parametrize("who", (*ALL, "staff"))
def test_members_page_owner_only(make_pano, client_for, who):
    pano = make_pano(public=True)
    r = client_for(who).get(reverse("accounts:members", kwargs={"slug": pano.slug}))
    expected = {"owner": 200, "staff": 200, "editor": 403, "reviewer": 403, "viewer": 403, "outsider": 404, None: 302}
    assert r.status_code == expected[who]


@pytest.mark.parametrize("who", ("editor", "reviewer", "viewer", "outsider"))
def test_members_changes_refused_to_non_owners(make_pano, client_for, users, who):
    pano = make_pano(public=True)
    c = client_for(who)
    target = users["viewer"].pk
    assert c.post(
        reverse("accounts:invite", args=[pano.slug]), {"who": "x@example.org", "role": "viewer"}
    ).status_code in (403, 404)
    assert c.post(reverse("accounts:change_role", args=[pano.slug, target]), {"role": "editor"}).status_code in (
        403,
        404,
    )
    assert c.post(reverse("accounts:remove", args=[pano.slug, target])).status_code in (403, 404)
    assert Membership.objects.get(user=users["viewer"], panorama=pano).role == "viewer"
    assert not mail.outbox


def _invite_link(message) -> str:
    return re.search(r"https?://[^/]+(/accounts/invite/\S+/)", message.body).group(1)


def test_invite_existing_username_and_change_and_remove(make_pano, client_for, users, django_user_model):
    """An existing account is invited, not added: it joins when it accepts, then roles change and it is removed."""
    pano = make_pano()
    newbie = django_user_model.objects.create_user("newbie", email="newbie@example.org", password="x")
    c = client_for("owner")
    r = c.post(reverse("accounts:invite", args=[pano.slug]), {"who": "newbie", "role": "reviewer"})
    assert r.status_code == 302
    assert not Membership.objects.filter(user=newbie, panorama=pano).exists()
    assert mail.outbox[-1].to == ["newbie@example.org"] and "Accept or decline" in mail.outbox[-1].body
    page = c.get(reverse("accounts:members", args=[pano.slug])).content.decode()
    assert "Invitations waiting" in page and "newbie" in page
    them = client_for(None)
    them.force_login(newbie)
    assert them.get(_invite_link(mail.outbox[-1])).status_code == 200
    them.post(_invite_link(mail.outbox[-1]))
    assert Membership.objects.get(user=newbie, panorama=pano).role == "reviewer"
    r = c.post(reverse("accounts:invite", args=[pano.slug]), {"who": "newbie", "role": "editor"})
    assert r.status_code == 400 and b"already a member" in r.content
    c.post(reverse("accounts:change_role", args=[pano.slug, newbie.pk]), {"role": "editor"})
    assert Membership.objects.get(user=newbie, panorama=pano).role == "editor"
    r = c.post(reverse("accounts:change_role", args=[pano.slug, newbie.pk]), {"role": "god"})
    assert Membership.objects.get(user=newbie, panorama=pano).role == "editor"
    c.post(reverse("accounts:remove", args=[pano.slug, newbie.pk]))
    assert not Membership.objects.filter(user=newbie, panorama=pano).exists()
    r = c.post(reverse("accounts:invite", args=[pano.slug]), {"who": "ghost", "role": "viewer"})
    assert r.status_code == 400 and b"no user is named" in r.content


def test_existing_account_accepts_or_declines_from_the_home_page(make_pano, client_for, users, django_user_model):
    """An account without an e-mail address gets no mail: the invitation waits on its home page, for it alone."""
    pano = make_pano(public=False)
    quiet = django_user_model.objects.create_user("quiet", password="x")
    c = client_for("owner")
    c.post(reverse("accounts:invite", args=[pano.slug]), {"who": "quiet", "role": "editor"})
    assert not mail.outbox
    from webapp.accounts.models import Invitation

    inv = Invitation.objects.get(invitee=quiet)
    them = client_for(None)
    them.force_login(quiet)
    home = them.get("/").content.decode()
    assert "Invitations for you" in home and pano.title in home
    assert them.get(pano.get_absolute_url()).status_code == 404  # not a member before accepting
    # Nobody else may answer it, nor see it.
    other = client_for("outsider")
    assert "Invitations for you" not in other.get("/").content.decode()
    assert other.post(reverse("accounts:respond", args=[inv.pk])).status_code == 404
    assert not Membership.objects.filter(user=users["outsider"], panorama=pano).exists()
    r = them.post(reverse("accounts:respond", args=[inv.pk]))
    assert r.status_code == 302 and r["Location"] == pano.get_absolute_url()
    assert Membership.objects.get(user=quiet, panorama=pano).role == "editor"
    assert "Invitations for you" not in them.get("/").content.decode()
    assert them.post(reverse("accounts:respond", args=[inv.pk])).status_code == 404  # once only
    # A second panorama's invitation, declined: no membership, and the owner's list empties.
    pano2 = make_pano("second", public=False)
    c.post(reverse("accounts:invite", args=[pano2.slug]), {"who": "quiet", "role": "viewer"})
    inv2 = Invitation.objects.get(invitee=quiet, panorama=pano2)
    them.post(reverse("accounts:respond", args=[inv2.pk]), {"decline": "1"})
    assert not Membership.objects.filter(user=quiet, panorama=pano2).exists()
    assert not Invitation.objects.filter(pk=inv2.pk).exists()


def test_invitation_link_of_an_account_is_for_that_account_only(make_pano, client_for, users, django_user_model):
    pano = make_pano(public=False)
    bob = django_user_model.objects.create_user("bob", email="bob@example.org", password="x")
    client_for("owner").post(reverse("accounts:invite", args=[pano.slug]), {"who": "bob@example.org", "role": "viewer"})
    path = _invite_link(mail.outbox[-1])
    # Signed out: to the sign-in page (no sign-up form that would make a second account).
    r = client_for(None).get(path)
    assert r.status_code == 302 and reverse("accounts:login") in r["Location"]
    # Someone else's session: refused, and their POST joins nobody.
    other = client_for("outsider")
    assert other.get(path).status_code == 403
    assert other.post(path).status_code == 403
    assert not Membership.objects.filter(panorama=pano, user__in=[users["outsider"], bob]).exists()
    them = client_for(None)
    them.force_login(bob)
    them.post(path, {"decline": "1"})
    assert not Membership.objects.filter(user=bob, panorama=pano).exists()
    assert client_for(None).get(path).status_code == 404  # declined: gone


def test_last_owner_cannot_be_removed_or_demoted(make_pano, client_for, users):
    pano = make_pano()
    c = client_for("owner")
    owner = users["owner"]
    c.post(reverse("accounts:remove", args=[pano.slug, owner.pk]))
    pano.refresh_from_db()
    assert pano.owner_id == owner.pk
    r = c.post(reverse("accounts:change_role", args=[pano.slug, owner.pk]), {"role": "viewer"}, follow=True)
    pano.refresh_from_db()
    assert pano.owner_id == owner.pk and b"last owner" in r.content
    # With a second owner the first may step down.
    c.post(reverse("accounts:change_role", args=[pano.slug, users["editor"].pk]), {"role": "owner"})
    r = c.post(reverse("accounts:change_role", args=[pano.slug, owner.pk]), {"role": "viewer"})
    pano.refresh_from_db()
    assert pano.owner_id is None
    assert Membership.objects.get(user=owner, panorama=pano).role == "viewer"
    assert r.status_code == 302 and r["Location"] == pano.get_absolute_url()
    # The editor-turned-owner is now the last owner.
    c2 = client_for("editor")
    c2.post(reverse("accounts:remove", args=[pano.slug, users["editor"].pk]))
    assert Membership.objects.get(user=users["editor"], panorama=pano).role == "owner"


def test_invitation_by_email_sign_up_and_accept(make_pano, client_for):
    pano = make_pano(public=False)
    c = client_for("owner")
    r = c.post(reverse("accounts:invite", args=[pano.slug]), {"who": "Ann@Example.org", "role": "reviewer"})
    assert r.status_code == 302
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["Ann@Example.org"]
    assert "reviewer" in mail.outbox[0].body
    page = c.get(reverse("accounts:members", args=[pano.slug])).content.decode()
    assert "Ann@Example.org" in page and "Invitations waiting" in page
    path = re.search(r"https?://[^/]+(/accounts/invite/\S+/)", mail.outbox[0].body).group(1)
    guest = client_for(None)
    form = guest.get(path)
    assert form.status_code == 200 and b"password1" in form.content
    bad = guest.post(path, {"username": "ann", "password1": "a", "password2": "b"})
    assert bad.status_code == 400
    r = guest.post(path, {"username": "ann", "password1": "Strong-pass-482", "password2": "Strong-pass-482"})
    assert r.status_code == 302 and r["Location"] == pano.get_absolute_url()
    from django.contrib.auth import get_user_model

    ann = get_user_model().objects.get(username="ann")
    assert ann.email == "Ann@Example.org" and not ann.is_staff
    assert Membership.objects.get(user=ann, panorama=pano).role == "reviewer"
    assert guest.get(pano.get_absolute_url()).status_code == 200
    # The link works once.
    assert client_for(None).get(path).status_code == 404


def test_invitation_accepted_by_signed_in_user_and_revoked(make_pano, client_for, users):
    pano = make_pano()
    c = client_for("owner")
    c.post(reverse("accounts:invite", args=[pano.slug]), {"who": "out@example.org", "role": "editor"})
    path = re.search(r"https?://[^/]+(/accounts/invite/\S+/)", mail.outbox[-1].body).group(1)
    out = client_for("outsider")
    assert b"Accept as outsider" in out.get(path).content
    out.post(path)
    assert Membership.objects.get(user=users["outsider"], panorama=pano).role == "editor"
    c.post(reverse("accounts:invite", args=[pano.slug]), {"who": "late@example.org", "role": "viewer"})
    path2 = re.search(r"https?://[^/]+(/accounts/invite/\S+/)", mail.outbox[-1].body).group(1)
    from webapp.accounts.models import Invitation

    inv = Invitation.objects.get(email="late@example.org")
    c.post(reverse("accounts:revoke", args=[pano.slug, inv.pk]))
    assert client_for(None).get(path2).status_code == 404
    assert client_for(None).get("/accounts/invite/not-a-token/").status_code == 404


def test_invitation_expires(make_pano, client_for, settings):
    from datetime import timedelta

    from webapp.accounts.models import Invitation

    pano = make_pano()
    inv, token = Invitation.issue(pano, "old@example.org", "viewer", None)
    Invitation.objects.filter(pk=inv.pk).update(created=inv.created - timedelta(days=settings.TERAPAN_INVITE_DAYS + 1))
    assert client_for(None).get(f"/accounts/invite/{token}/").status_code == 404


def test_owner_sets_presentation_and_embedding(make_pano, client_for):
    pano = make_pano()
    c = client_for("owner")
    page = c.get(reverse("accounts:members", args=[pano.slug])).content.decode()
    assert f"http://testserver/p/{pano.slug}/embed/" in page and f"http://testserver/iiif/{pano.slug}/info.json" in page
    url = reverse("accounts:presentation", args=[pano.slug])
    r = c.post(
        url, {"title": "Alps at dawn", "description": "d", "credits": "Photos: me", "embed_origins": "gopher://x"}
    )
    assert r.status_code == 400 and b"is not an origin" in r.content
    pano.refresh_from_db()
    assert pano.title == "Alps"
    ok = {
        "title": "Alps at dawn",
        "description": "d",
        "credits": "Photos: me",
        "embed_origins": "https://museum.example",
    }
    assert c.post(url, ok).status_code == 302
    pano.refresh_from_db()
    assert (pano.title, pano.credits, pano.embed_origins) == ("Alps at dawn", "Photos: me", "https://museum.example")
    assert client_for("editor").post(url, {**ok, "title": "Hijack"}).status_code == 403
    pano.refresh_from_db()
    assert pano.title == "Alps at dawn"


def test_new_invitation_replaces_a_pending_one(make_pano, client_for):
    from webapp.accounts.models import Invitation

    pano = make_pano()
    c = client_for("owner")
    c.post(reverse("accounts:invite", args=[pano.slug]), {"who": "twice@example.org", "role": "viewer"})
    first = re.search(r"https?://[^/]+(/accounts/invite/\S+/)", mail.outbox[-1].body).group(1)
    c.post(reverse("accounts:invite", args=[pano.slug]), {"who": "Twice@example.org", "role": "editor"})
    assert Invitation.objects.filter(panorama=pano).count() == 1
    assert Invitation.objects.get(panorama=pano).role == "editor"
    assert client_for(None).get(first).status_code == 404


def test_title_with_a_line_break_breaks_no_email(make_pano, client_for, users, django_capture_on_commit_callbacks):
    """A crafted title with CR/LF is saved on one line, and an older such title does not make
    invitations or mention e-mails fail (BadHeaderError, a 500 after the comment was saved)."""
    from webapp.panoramas.models import Panorama

    pano = make_pano(public=False)
    url = reverse("accounts:presentation", args=[pano.slug])
    form = {"title": "Fjord\r\nBcc: x@evil.example", "description": "", "credits": "", "embed_origins": ""}
    assert client_for("owner").post(url, form).status_code == 302
    pano.refresh_from_db()
    assert pano.title == "Fjord Bcc: x@evil.example"
    Panorama.objects.filter(pk=pano.pk).update(title="Fjord\nsecond line")  # as the admin or old data may hold it
    r = client_for("owner").post(
        reverse("accounts:invite", args=[pano.slug]), {"who": "new@example.org", "role": "viewer"}
    )
    assert r.status_code == 302 and mail.outbox[-1].subject == "Invitation to review Fjord second line on Terapan"
    users["editor"].email = "ed@example.org"
    users["editor"].save()
    from .test_review import make_region, post

    rid = make_region(client_for, pano)["terapan"]["id"]
    with django_capture_on_commit_callbacks(execute=True):
        r = post(client_for("reviewer"), reverse("review:comments", kwargs={"pk": rid}), {"body": "@editor look"})
    assert r.status_code == 201
    assert "Fjord second line" in mail.outbox[-1].subject and "\n" not in mail.outbox[-1].subject
