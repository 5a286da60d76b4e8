"""Live review API: the changes cursor (ETag/304), replies, edits, @mentions and notifications."""

from __future__ import annotations

import json

import pytest
from django.core import mail
from django.urls import reverse

from .test_review import RECT, annos_url, make_region, post

pytestmark = pytest.mark.django_db


def changes_url(pano, since=None):
    url = reverse("review:changes", kwargs={"slug": pano.slug})
    return url if since is None else f"{url}?since={since}"


def comments_url(region_id):
    return reverse("review:comments", kwargs={"pk": region_id})


def test_changes_cursor_regions_comments_deletions(make_pano, client_for):
    pano = make_pano(public=False)
    watcher = client_for("viewer")
    start = watcher.get(changes_url(pano)).json()
    assert start["regions"] == [] and start["published"]["version"] == 1 and start["reload"] is False
    cur = start["cursor"]
    a = make_region(client_for, pano)
    rid = a["terapan"]["id"]
    got = watcher.get(changes_url(pano, cur)).json()
    assert [r["terapan"]["id"] for r in got["regions"]] == [rid] and got["deleted"] == []
    assert got["cursor"] > cur
    cur = got["cursor"]
    # Nothing new: same ETag, and a conditional request gets 304 without a body.
    r1 = watcher.get(changes_url(pano, cur))
    assert r1.json()["regions"] == [] and r1["Cache-Control"] == "private, no-cache"
    r2 = watcher.get(changes_url(pano, cur), HTTP_IF_NONE_MATCH=r1["ETag"])
    assert r2.status_code == 304 and r2.content == b""
    # A comment and a status change on the region reach the watcher.
    post(client_for("reviewer"), comments_url(rid), {"body": "second look"})
    got = watcher.get(changes_url(pano, cur), HTTP_IF_NONE_MATCH=r1["ETag"])
    assert got.status_code == 200 and got.json()["regions"][0]["terapan"]["comments"] == 2
    cur = got.json()["cursor"]
    post(client_for("editor"), reverse("review:status", kwargs={"pk": rid}), {"status": "approved"})
    got = watcher.get(changes_url(pano, cur)).json()
    assert got["regions"][0]["terapan"]["status"] == "approved"
    cur = got["cursor"]
    assert client_for("reviewer").delete(reverse("review:annotation", kwargs={"pk": rid})).status_code == 200
    got = watcher.get(changes_url(pano, cur)).json()
    assert got["regions"] == [] and got["deleted"] == [rid]
    # A cursor from the future (database reset) asks the viewer to reload.
    assert watcher.get(changes_url(pano, got["cursor"] + 100)).json()["reload"] is True


def test_changes_roles_and_bad_cursor(make_pano, client_for):
    pano = make_pano(public=False)
    assert client_for(None).get(changes_url(pano)).status_code == 404
    assert client_for("outsider").get(changes_url(pano)).status_code == 404
    public = make_pano(slug="open", public=True)
    assert client_for("outsider").get(changes_url(public)).status_code == 403
    for bad in ("x", "-1", "1.5"):
        r = client_for("viewer").get(changes_url(pano, bad))
        assert r.status_code == 400 and "since" in r.json()["error"]


def test_published_version_change_is_seen(make_pano, client_for):
    pano = make_pano(public=False, versions=2)
    watcher = client_for("viewer")
    first = watcher.get(changes_url(pano, 0))
    other = pano.pyramids.exclude(pk=pano.published_pyramid_id).get()
    pano.published_pyramid = other
    pano.save()
    again = watcher.get(changes_url(pano, 0), HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 200 and again.json()["published"] == {"id": other.pk, "version": other.version}


def test_replies_edits_and_who_may_edit(make_pano, client_for):
    pano = make_pano(public=False)
    rid = make_region(client_for, pano)["terapan"]["id"]
    first = client_for("reviewer").get(comments_url(rid)).json()["items"][0]
    assert first["parent"] is None and first["canEdit"] is True and first["edited"] is None
    reply = post(client_for("editor"), comments_url(rid), {"body": "agreed", "parent": first["id"]})
    assert reply.status_code == 201 and reply.json()["parent"] == first["id"]
    other = make_region(client_for, pano, target=RECT)["terapan"]["id"]
    for bad in ({"body": "x", "parent": 10**9}, {"body": "x", "parent": "1"}, {"body": "x", "parent": True}):
        r = post(client_for("editor"), comments_url(other), bad)
        assert r.status_code == 400, bad
    r = post(client_for("editor"), comments_url(other), {"body": "x", "parent": first["id"]})
    assert r.status_code == 400 and "is not on region" in r.json()["error"]
    url = reverse("review:comment", kwargs={"pk": first["id"]})
    edited = post(client_for("reviewer"), url, {"body": "first look, edited"}, method="patch")
    assert edited.status_code == 200 and edited.json()["edited"] and edited.json()["body"] == "first look, edited"
    assert post(client_for("editor"), url, {"body": "not mine"}, method="patch").status_code == 403
    assert post(client_for("viewer"), url, {"body": "not mine"}, method="patch").status_code == 403
    assert post(client_for("reviewer"), url, {"body": "   "}, method="patch").status_code == 400
    assert client_for("viewer").get(url).json()["canEdit"] is False


def test_mentions_notify_members_by_page_badge_and_mail(
    make_pano, client_for, users, django_capture_on_commit_callbacks
):
    users["editor"].email = "ed@example.org"
    users["editor"].save()
    pano = make_pano(public=False)
    rid = make_region(client_for, pano)["terapan"]["id"]
    mail.outbox.clear()
    body = "@editor please look; @outsider is no member, @nobody neither. cc @viewer."
    with django_capture_on_commit_callbacks(execute=True):  # the e-mail leaves after the commit
        with_mentions = post(client_for("reviewer"), comments_url(rid), {"body": body})
    assert with_mentions.status_code == 201
    ed = client_for("editor").get(reverse("review:notifications")).json()
    assert ed["unread"] == 1 and ed["items"][0]["kind"] == "mention" and ed["items"][0]["author"] == "reviewer"
    assert ed["items"][0]["url"].endswith(f"/p/{pano.slug}/#comment={with_mentions.json()['id']}")
    assert client_for("viewer").get(reverse("review:notifications")).json()["unread"] == 1
    assert client_for("outsider").get(reverse("review:notifications")).json()["unread"] == 0
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["ed@example.org"]
    assert "#comment=" in mail.outbox[0].body and "mentioned you" in mail.outbox[0].subject
    # The unread count travels with the changes poll (the in-page badge).
    assert client_for("editor").get(changes_url(pano)).json()["unread"] == 1
    # A reply notifies the author replied to; editing does not notify twice.
    reply = post(client_for("editor"), comments_url(rid), {"body": "on it", "parent": with_mentions.json()["id"]})
    rita = client_for("reviewer").get(reverse("review:notifications")).json()
    assert rita["unread"] == 1 and rita["items"][0]["kind"] == "reply"
    url = reverse("review:comment", kwargs={"pk": with_mentions.json()["id"]})
    post(client_for("reviewer"), url, {"body": body + " (typo)"}, method="patch")
    assert client_for("editor").get(reverse("review:notifications")).json()["unread"] == 1
    # Mark read: one id, then all; bad input is a 400.
    read_url = reverse("review:notifications_read")
    note_id = ed["items"][0]["id"]
    assert post(client_for("editor"), read_url, {"ids": [note_id]}).json() == {"marked": 1, "unread": 0}
    assert post(client_for("reviewer"), read_url, {"all": True}).json()["unread"] == 0
    assert post(client_for("editor"), read_url, {"ids": "1"}).status_code == 400
    assert post(client_for("editor"), read_url, {"ids": [2**64]}).status_code == 400  # beyond any key: no 500
    assert client_for(None).get(reverse("review:notifications")).status_code == 403
    assert reply.status_code == 201


def test_viewer_page_config_for_live_review(make_pano, client_for):
    pano = make_pano(public=False)
    make_region(client_for, pano)
    html = client_for("reviewer").get(reverse("viewer:panorama", kwargs={"slug": pano.slug})).content.decode()
    cfg = json.loads(html.split('id="terapan-config" type="application/json">')[1].split("</script>")[0])
    assert cfg["cursor"] > 0 and cfg["api"]["changes"].endswith("/changes/")
    assert {"reviewer", "editor", "viewer"} <= set(cfg["members"]) and "outsider" not in cfg["members"]
    assert annos_url(pano) == cfg["api"]["annotations"]


def test_published_url_for_everyone_who_may_view(make_pano, client_for):
    pano = make_pano(public=True, versions=2)
    url = reverse("viewer:published", kwargs={"slug": pano.slug})
    first = client_for(None).get(url)
    pub = pano.published_pyramid
    got = first.json()["published"]
    assert (got["id"], got["version"], got["width"]) == (pub.pk, pub.version, pub.width)
    assert got["dzi"] == reverse("viewer:dzi", kwargs={"pyramid_id": pub.pk, "version": pub.version})
    assert client_for(None).get(url, HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 304
    other = pano.pyramids.exclude(pk=pub.pk).get()
    pano.published_pyramid = other
    pano.save()
    again = client_for("outsider").get(url, HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 200 and again.json()["published"]["version"] == other.version
    private = make_pano(slug="hidden", public=False)
    assert client_for(None).get(reverse("viewer:published", kwargs={"slug": private.slug})).status_code == 404


def test_removed_member_no_longer_reads_their_notifications(make_pano, client_for, users):
    from webapp.panoramas.models import Membership

    pano = make_pano(public=False)
    rid = make_region(client_for, pano)["terapan"]["id"]
    post(client_for("reviewer"), comments_url(rid), {"body": "@viewer see the roof"})
    assert client_for("viewer").get(reverse("review:notifications")).json()["unread"] == 1
    Membership.objects.filter(user=users["viewer"], panorama=pano).delete()
    gone = client_for("viewer").get(reverse("review:notifications")).json()
    assert gone == {"unread": 0, "items": []}
