"""Review API: W3C annotations, comments, status, stacks; roles, CSRF, validation."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

RECT = {
    "selector": {
        "type": "FragmentSelector",
        "conformsTo": "http://www.w3.org/TR/media-frags/",
        "value": "xywh=pixel:10,20,30,40",
    }
}
POLY = {"selector": {"type": "SvgSelector", "value": '<svg><polygon points="10,10 100,15 60,90"></polygon></svg>'}}


def post(c, url, data, method="post"):
    return getattr(c, method)(url, json.dumps(data), content_type="application/json")


def annos_url(pano):
    return reverse("review:annotations", kwargs={"slug": pano.slug})


def make_region(client_for, pano, who="reviewer", target=RECT, comment="first look"):
    r = post(
        client_for(who),
        annos_url(pano),
        {"target": target, "body": [{"type": "TextualBody", "purpose": "commenting", "value": comment}]},
    )
    assert r.status_code == 201, r.content
    return r.json()


def test_create_rect_and_polygon_as_web_annotations(make_pano, client_for):
    pano = make_pano(public=False)
    a = make_region(client_for, pano)
    assert a["type"] == "Annotation" and a["@context"] == "http://www.w3.org/ns/anno.jsonld"
    assert a["target"]["selector"]["value"] == "xywh=pixel:10,20,30,40"
    assert a["target"]["source"].endswith(f"/v{pano.published_pyramid.version}/image.dzi")
    assert a["terapan"]["bbox"] == {"x": 10, "y": 20, "w": 30, "h": 40}
    assert a["terapan"]["status"] == "open" and a["terapan"]["author"] == "reviewer"
    assert a["terapan"]["comments"] == 1
    assert a["body"][0]["value"] == "first look" and a["body"][0]["purpose"] == "commenting"
    p = make_region(client_for, pano, target=POLY)
    assert p["terapan"]["bbox"] == {"x": 10, "y": 10, "w": 90, "h": 80}
    assert p["target"]["selector"]["value"] == '<svg><polygon points="10,10 100,15 60,90"></polygon></svg>'
    listing = client_for("viewer").get(annos_url(pano)).json()
    assert listing["total"] == 2 and [i["terapan"]["id"] for i in listing["items"]] == [
        a["terapan"]["id"],
        p["terapan"]["id"],
    ]


def test_geometry_is_clipped_or_refused(make_pano, client_for):
    pano = make_pano(public=False)  # 300x200
    c = client_for("reviewer")
    clipped = post(
        c, annos_url(pano), {"target": {"selector": {"type": "FragmentSelector", "value": "xywh=pixel:280,190,50,50"}}}
    )
    assert clipped.status_code == 201
    assert clipped.json()["terapan"]["bbox"] == {"x": 280, "y": 190, "w": 20, "h": 10}
    bad = [
        {"selector": {"type": "FragmentSelector", "value": "xywh=pixel:400,10,5,5"}},  # outside
        {"selector": {"type": "FragmentSelector", "value": "xywh=pixel:10,10,0,5"}},  # empty
        {"selector": {"type": "FragmentSelector", "value": "xywh=pixel:a,b,c,d"}},
        {"selector": {"type": "FragmentSelector", "value": "xywh=pixel:1e999,1,1,1"}},
        {"selector": {"type": "SvgSelector", "value": '<svg><polygon points="1,1 2,2"></polygon></svg>'}},  # 2 points
        {"selector": {"type": "SvgSelector", "value": '<svg onload="alert(1)"><script>x</script></svg>'}},
        {
            "selector": {
                "type": "SvgSelector",
                "value": '<svg><polygon points="-50,-50 -10,-50 -10,-10"></polygon></svg>',
            }
        },
        {"selector": {"type": "CssSelector", "value": "#x"}},
        {"selector": "xywh=1,2,3,4"},
        "not an object",
        None,
    ]
    for target in bad:
        r = post(c, annos_url(pano), {"target": target})
        assert r.status_code == 400, target
        assert "error" in r.json()


def test_input_validation_400s(make_pano, client_for):
    pano = make_pano(public=False)
    c = client_for("reviewer")
    assert c.post(annos_url(pano), "not json", content_type="application/json").status_code == 400
    assert c.post(annos_url(pano), {"target": "x"}).status_code == 400  # form-encoded
    assert post(c, annos_url(pano), [1, 2]).status_code == 400
    huge = {"target": RECT, "comment": "x" * 70_000}
    r = post(c, annos_url(pano), huge)
    assert r.status_code == 400 and "larger than" in r.json()["error"]
    r = post(c, annos_url(pano), {"target": RECT, "comment": "y" * 5001})
    assert r.status_code == 400 and "5000" in r.json()["error"]
    assert post(c, annos_url(pano), {"target": RECT, "version": 99}).status_code == 400
    assert post(c, annos_url(pano), {"target": RECT, "version": "1"}).status_code == 400
    region = make_region(client_for, pano)
    curl = reverse("review:comments", kwargs={"pk": region["terapan"]["id"]})
    for body in ("", "   ", None, 5, "z" * 5001):
        assert post(c, curl, {"body": body}).status_code == 400, body
    surl = reverse("review:status", kwargs={"pk": region["terapan"]["id"]})
    assert post(client_for("editor"), surl, {"status": "bogus"}).status_code == 400
    assert post(client_for("editor"), surl, {"status": ["open"]}).status_code == 400  # unhashable, not a 500
    # A lone surrogate (valid JSON escape, not Unicode) is refused, whichever field holds it.
    for data in ({"body": "\ud800 junk"}, {"body": "ok", "note": ["\udfff"]}):
        raw = json.dumps(data)  # ensure_ascii keeps the escape as the six characters \ud800
        r = c.post(curl, raw, content_type="application/json")
        assert r.status_code == 400 and "surrogate" in r.json()["error"], data
    r = post(c, curl, {"body": "x", "parent": 2**64})
    assert r.status_code == 400 and "parent" in r.json()["error"]
    assert client_for("viewer").get(annos_url(pano) + "?status=bogus").status_code == 400


def test_roles_on_every_endpoint(make_pano, client_for):
    pano = make_pano(public=False)
    region = make_region(client_for, pano)
    rid = region["terapan"]["id"]
    one = reverse("review:annotation", kwargs={"pk": rid})
    comments = reverse("review:comments", kwargs={"pk": rid})
    status = reverse("review:status", kwargs={"pk": rid})
    stacks = reverse("review:stacks", kwargs={"slug": pano.slug})
    reads = [annos_url(pano), one, comments, stacks]
    for who in ("viewer", "reviewer", "editor", "owner", "staff"):
        for url in reads:
            assert client_for(who).get(url).status_code == 200, (who, url)
    for who in ("outsider", None):
        for url in reads:
            assert client_for(who).get(url).status_code == 404, (who, url)  # private: no leak
    # Writing: viewers cannot draw or comment.
    v = client_for("viewer")
    assert post(v, annos_url(pano), {"target": RECT}).status_code == 403
    assert post(v, comments, {"body": "hi"}).status_code == 403
    assert post(v, status, {"status": "approved"}).status_code == 403
    assert v.delete(one).status_code == 403
    # Reviewers comment but do not change status.
    assert post(client_for("reviewer"), comments, {"body": "a reviewer comment"}).status_code == 201
    assert post(client_for("reviewer"), status, {"status": "approved"}).status_code == 403
    # Editors and owners change status.
    for who, st in (("editor", "needs_rerender"), ("owner", "approved"), ("staff", "resolved")):
        r = post(client_for(who), status, {"status": st})
        assert r.status_code == 200 and r.json()["terapan"]["status"] == st
    assert client_for("viewer").get(comments).json()["items"][1]["body"] == "a reviewer comment"


def test_public_panorama_outsiders_get_403_not_data(make_pano, client_for):
    pano = make_pano(public=True)
    make_region(client_for, pano)
    for who in ("outsider", None):
        r = client_for(who).get(annos_url(pano))
        assert r.status_code == 403 and "members" in r.json()["error"]
        assert post(client_for(who), annos_url(pano), {"target": RECT}).status_code == 403
        assert client_for(who).get(reverse("review:stacks", kwargs={"slug": pano.slug})).status_code == 403


def test_author_or_editor_may_modify(make_pano, client_for, users):
    from webapp.panoramas.models import Membership

    pano = make_pano(public=False)
    other = users["outsider"]
    Membership.objects.create(user=other, panorama=pano, role="reviewer")
    region = make_region(client_for, pano, who="reviewer")
    one = reverse("review:annotation", kwargs={"pk": region["terapan"]["id"]})
    moved = {"target": {"selector": {"type": "FragmentSelector", "value": "xywh=pixel:50,50,10,10"}}}
    assert post(client_for("outsider"), one, moved, method="put").status_code == 403  # another reviewer
    r = post(client_for("reviewer"), one, moved, method="put")
    assert r.status_code == 200 and r.json()["terapan"]["bbox"] == {"x": 50, "y": 50, "w": 10, "h": 10}
    assert r.json()["terapan"]["canModify"] is True
    assert client_for("outsider").get(one).json()["terapan"]["canModify"] is False
    assert client_for("outsider").delete(one).status_code == 403
    assert client_for("editor").delete(one).status_code == 200
    assert client_for("editor").get(one).status_code == 404


def test_csrf_is_enforced(make_pano, client_for):
    pano = make_pano(public=False)
    region = make_region(client_for, pano)
    rid = region["terapan"]["id"]
    c = client_for("editor", csrf=True)
    for url, data in (
        (annos_url(pano), {"target": RECT}),
        (reverse("review:comments", kwargs={"pk": rid}), {"body": "x"}),
        (reverse("review:status", kwargs={"pk": rid}), {"status": "approved"}),
    ):
        assert post(c, url, data).status_code == 403
    assert c.delete(reverse("review:annotation", kwargs={"pk": rid})).status_code == 403
    # With the token from the viewer page it works.
    c.get(pano.get_absolute_url())
    token = c.cookies["csrftoken"].value
    r = c.post(annos_url(pano), json.dumps({"target": RECT}), content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert r.status_code == 201


def test_rerender_signal(make_pano, client_for):
    from webapp.review.signals import rerender_requested

    pano = make_pano(public=False)
    region = make_region(client_for, pano)
    got = []

    def handler(sender, region, user, **kw):
        got.append((region.pk, user.username))

    rerender_requested.connect(handler)
    try:
        url = reverse("review:status", kwargs={"pk": region["terapan"]["id"]})
        post(client_for("editor"), url, {"status": "needs_rerender"})
        post(client_for("editor"), url, {"status": "needs_rerender"})  # no change: no second signal
    finally:
        rerender_requested.disconnect(handler)
    assert got == [(region["terapan"]["id"], "editor")]


def test_stacks_endpoint(make_pano, client_for):
    from webapp.panoramas.models import Stack, SubPanorama

    pano = make_pano(public=False)
    sub = SubPanorama.objects.create(panorama=pano, name="main")
    Stack.objects.create(
        subpanorama=sub, name="s00", status="running", progress=42.0, footprint={"x": 0, "y": 0, "w": 100, "h": 80}
    )
    Stack.objects.create(
        subpanorama=sub, name="s01", col=1, status="done", footprint={"x": 90, "y": 0, "w": 100, "h": 80}
    )
    Stack.objects.create(subpanorama=sub, name="s02", col=2, status="pending")
    data = client_for("viewer").get(reverse("review:stacks", kwargs={"slug": pano.slug})).json()
    assert data["total"] == 3
    assert data["counts"] == {"running": 1, "done": 1, "pending": 1}
    s0 = data["items"][0]
    assert (
        s0["name"] == "s00"
        and s0["progress"] == 42.0
        and s0["footprint"] == {"x": 0.0, "y": 0.0, "w": 100.0, "h": 80.0}
    )
    assert data["items"][2]["footprint"] is None
    r = client_for("viewer").get(reverse("review:stacks", kwargs={"slug": pano.slug}))
    assert "no-cache" in r["Cache-Control"] or "max-age=0" in r["Cache-Control"]


def test_methods_not_allowed(make_pano, client_for):
    pano = make_pano(public=False)
    assert client_for("editor").put(annos_url(pano)).status_code == 405
    assert client_for("editor").post(reverse("review:stacks", kwargs={"slug": pano.slug})).status_code == 405
    assert client_for("editor").get("/api/annotations/99999/").status_code == 404
