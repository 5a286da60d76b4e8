"""Tile serving, DZI, viewer pages: headers, caching, traversal, permissions per role."""

from __future__ import annotations

import os

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

ALL = ("owner", "editor", "reviewer", "viewer", "outsider", None)


def tile_url(pyr, level, col, row, fmt=None):
    return reverse(
        "viewer:tile",
        kwargs={
            "pyramid_id": pyr.pk,
            "version": pyr.version,
            "level": level,
            "col": col,
            "row": row,
            "fmt": fmt or pyr.format,
        },
    )


def dzi_url(pyr):
    return reverse("viewer:dzi", kwargs={"pyramid_id": pyr.pk, "version": pyr.version})


def test_urls_match_contract(make_pano):
    pano = make_pano()
    pyr = pano.published_pyramid
    assert pano.get_absolute_url() == f"/p/{pano.slug}/"
    assert dzi_url(pyr) == f"/tiles/{pyr.pk}/v{pyr.version}/image.dzi"
    assert tile_url(pyr, 9, 2, 1) == f"/tiles/{pyr.pk}/v{pyr.version}/image_files/9/2_1.jpg"
    assert reverse("viewer:compare", kwargs={"slug": "x"}) == "/p/x/compare/"


def test_tile_headers_etag_and_304(make_pano, client_for):
    pano = make_pano()
    pyr = pano.published_pyramid
    c = client_for(None)
    r = c.get(tile_url(pyr, 9, 0, 0))
    assert r.status_code == 200
    assert r["Content-Type"] == "image/jpeg"
    assert r["Cache-Control"] == "public, max-age=86400, s-maxage=600, immutable"
    etag = r["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    body = b"".join(r.streaming_content)
    assert body[:3] == b"\xff\xd8\xff"
    assert int(r["Content-Length"]) == len(body)
    assert "Cookie" not in r.get("Vary", "")
    r2 = c.get(tile_url(pyr, 9, 0, 0), HTTP_IF_NONE_MATCH=etag)
    assert r2.status_code == 304 and r2["ETag"] == etag
    assert r2["Cache-Control"].startswith("public")
    r3 = c.get(tile_url(pyr, 9, 0, 0), HTTP_IF_NONE_MATCH='"other"')
    assert r3.status_code == 200
    # Other tiles have other tags.
    assert c.get(tile_url(pyr, 9, 1, 0))["ETag"] != etag


def test_dzi(make_pano, client_for):
    pyr = make_pano().published_pyramid
    r = client_for(None).get(dzi_url(pyr))
    assert r.status_code == 200
    assert r["Content-Type"] == "application/xml"
    body = b"".join(r.streaming_content).decode()
    assert 'TileSize="64"' in body and 'Width="300"' in body and 'Height="200"' in body


def test_private_tiles_are_private_and_member_only(make_pano, client_for):
    pano = make_pano(public=False)
    pyr = pano.published_pyramid
    url = tile_url(pyr, 9, 0, 0)
    for who in ("owner", "editor", "reviewer", "viewer", "staff"):
        r = client_for(who).get(url)
        assert r.status_code == 200, who
        assert r["Cache-Control"] == "private, max-age=31536000, immutable"
        assert client_for(who).get(dzi_url(pyr)).status_code == 200
    for who in ("outsider", None):
        assert client_for(who).get(url).status_code == 404, who
        assert client_for(who).get(dzi_url(pyr)).status_code == 404, who


def test_unpublished_version_needs_membership(make_pano, client_for):
    pano = make_pano(public=True, versions=2)
    from webapp.panoramas.models import Pyramid

    v1 = Pyramid.objects.get(panorama=pano, version=1)
    assert pano.published_pyramid.version == 2
    assert client_for(None).get(tile_url(v1, 9, 0, 0)).status_code == 404
    assert client_for("outsider").get(tile_url(v1, 9, 0, 0)).status_code == 404
    r = client_for("viewer").get(tile_url(v1, 9, 0, 0))
    assert r.status_code == 200 and r["Cache-Control"].startswith("private")


def test_tiles_outside_the_pyramid_are_404(make_pano, client_for):
    pyr = make_pano().published_pyramid
    c = client_for("owner")
    assert c.get(tile_url(pyr, 9, 4, 3)).status_code == 200  # last tile of the top level
    for level, col, row in [(9, 5, 0), (9, 0, 4), (10, 0, 0), (99999, 0, 0), (0, 1, 0), (0, 0, 1)]:
        assert c.get(tile_url(pyr, level, col, row)).status_code == 404, (level, col, row)
    assert c.get(tile_url(pyr, 9, 0, 0, fmt="png")).status_code == 404  # wrong format
    # Wrong version or unknown pyramid.
    assert c.get(f"/tiles/{pyr.pk}/v{pyr.version + 1}/image_files/9/0_0.jpg").status_code == 404
    assert c.get(f"/tiles/{pyr.pk + 100}/v1/image_files/9/0_0.jpg").status_code == 404
    assert c.get(f"/tiles/{pyr.pk}/v{pyr.version}/image_files/9/0_0.gif").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/tiles/{id}/v1/image_files/9/../../../../../../etc/passwd",
        "/tiles/{id}/v1/image_files/9/..%2f..%2f..%2fetc%2fpasswd",
        "/tiles/{id}/v1/image_files/9/%2e%2e/%2e%2e/0_0.jpg",
        "/tiles/{id}/v1/image_files//etc/passwd",
        "/tiles/{id}/v1/image_files/9/0_0.jpg/../../../image.dzi",
        "/tiles/{id}/v1/image_files/-1/0_0.jpg",
        "/tiles/{id}/v1/image_files/9/0_-1.jpg",
        "/tiles/{id}/v1/image.dzi%00.jpg",
        "/tiles/{id}/v1/%2Fetc%2Fpasswd",
    ],
)
def test_traversal_attempts_never_serve_outside_files(make_pano, client_for, path):
    pyr = make_pano().published_pyramid
    r = client_for("owner").get(path.format(id=pyr.pk))
    if r.status_code == 200:
        body = b"".join(r.streaming_content)
        assert b"root:" not in body
        # Only the pyramid's own files may ever come back (Django normalises ../ in the test client).
        assert body[:3] == b"\xff\xd8\xff" or body.startswith(b"<?xml")
    else:
        assert r.status_code in (301, 302, 400, 404)


def test_symlink_planted_in_pyramid_is_refused(make_pano, client_for, media, tmp_path):
    pano = make_pano()
    pyr = pano.published_pyramid
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8\xff secret outside the pyramid")
    tile = media / pyr.path / "image_files" / "9" / "1_1.jpg"
    tile.unlink()
    os.symlink(secret, tile)
    r = client_for("owner").get(tile_url(pyr, 9, 1, 1))
    assert r.status_code == 404
    # A symlinked level folder pointing outside is refused too.
    level = media / pyr.path / "image_files" / "8"
    outside = tmp_path / "outside-level"
    level.rename(outside)
    os.symlink(outside, level)
    assert client_for("owner").get(tile_url(pyr, 8, 0, 0)).status_code == 404
    # A symlink that stays inside the pyramid is fine.
    t00 = media / pyr.path / "image_files" / "9" / "0_0.jpg"
    t01 = media / pyr.path / "image_files" / "9" / "0_1.jpg"
    t01.unlink()
    os.symlink(t00, t01)
    assert client_for("owner").get(tile_url(pyr, 9, 0, 1)).status_code == 200


def test_pyramid_path_outside_media_is_refused(make_pano, client_for, tmp_path):
    pano = make_pano()
    pyr = pano.published_pyramid
    pyr.path = "../" + str(tmp_path.name)  # a row pointing outside MEDIA_ROOT
    pyr.save()
    assert client_for("owner").get(dzi_url(pyr)).status_code == 404


def test_x_accel_redirect(make_pano, client_for, settings):
    pyr = make_pano().published_pyramid
    settings.TERAPAN_X_ACCEL = "/_media/"
    r = client_for(None).get(tile_url(pyr, 9, 0, 0))
    assert r.status_code == 200
    assert r["X-Accel-Redirect"] == f"/_media/{pyr.path}/image_files/9/0_0.jpg"
    assert r["Content-Type"] == "image/jpeg"
    assert r.content == b""


def test_head_and_post_on_tiles(make_pano, client_for):
    pyr = make_pano().published_pyramid
    c = client_for(None)
    assert c.head(tile_url(pyr, 9, 0, 0)).status_code == 200
    assert c.post(tile_url(pyr, 9, 0, 0)).status_code == 405


@pytest.mark.parametrize("public", [True, False])
def test_viewer_page_permissions(make_pano, client_for, public):
    pano = make_pano(public=public)
    url = pano.get_absolute_url()
    for who in ("owner", "editor", "reviewer", "viewer", "staff"):
        r = client_for(who).get(url)
        assert r.status_code == 200, who
        assert b"openseadragon.min.js" in r.content
        assert b"annotorious" in r.content  # members see the review layer
    r = client_for("outsider").get(url)
    assert r.status_code == (200 if public else 404)
    r = client_for(None).get(url)
    if public:
        assert r.status_code == 200
        assert b"openseadragon.min.js" in r.content
        assert b"annotorious" not in r.content and b"review-panel" not in r.content
    else:
        assert r.status_code == 302 and "/login/" in r["Location"]


def test_viewer_page_tools_per_role(make_pano, client_for):
    pano = make_pano(public=False)
    url = pano.get_absolute_url()
    viewer = client_for("viewer").get(url).content
    reviewer = client_for("reviewer").get(url).content
    editor = client_for("editor").get(url).content
    assert b'id="draw-tools"' not in viewer and b'id="comment-form"' not in viewer
    assert b'id="draw-tools"' in reviewer and b'id="comment-form"' in reviewer
    assert b'id="status-buttons"' not in reviewer
    assert b'id="status-buttons"' in editor
    assert b'"canReview": false' in viewer and b'"canEdit": true' in editor


def test_home_lists_what_you_can_view(make_pano, client_for):
    make_pano("public-one", public=True)
    make_pano("secret-one", public=False)
    anon = client_for(None).get("/").content.decode()
    assert "/p/public-one/" in anon and "/p/secret-one/" not in anon
    assert "GP" in anon
    member = client_for("viewer").get("/").content.decode()
    assert "/p/public-one/" in member and "/p/secret-one/" in member
    assert "/p/secret-one/" not in client_for("outsider").get("/").content.decode()


def test_compare_page(make_pano, client_for):
    pano = make_pano(public=False, versions=2)
    url = reverse("viewer:compare", kwargs={"slug": pano.slug})
    r = client_for("viewer").get(url + "?a=1&b=2")
    assert r.status_code == 200 and b"compare.js" in r.content
    assert client_for("viewer").get(url + "?a=1&b=7").status_code == 404
    assert client_for("viewer").get(url + "?a=x").status_code == 404
    assert client_for("outsider").get(url).status_code == 404
    assert client_for(None).get(url).status_code == 404


def test_version_query(make_pano, client_for):
    pano = make_pano(public=True, versions=2)
    assert client_for("viewer").get(pano.get_absolute_url() + "?v=1").status_code == 200
    # Non-members only ever see the published version.
    assert client_for(None).get(pano.get_absolute_url() + "?v=1").status_code == 404


def test_static_vendor_files_exist():
    from django.contrib.staticfiles import finders

    for name in (
        "viewer/vendor/openseadragon/openseadragon.min.js",
        "viewer/vendor/openseadragon/images/zoomin_rest.png",
        "viewer/vendor/annotorious/openseadragon-annotorious.min.js",
        "viewer/vendor/annotorious/annotorious.min.css",
        "viewer/js/viewer.js",
        "viewer/js/review.js",
        "viewer/css/viewer.css",
    ):
        assert finders.find(name), name


def test_permissions_helpers(make_pano, users):
    from django.contrib.auth.models import AnonymousUser

    from webapp.viewer.permissions import can_edit, can_review, can_view, role_of

    pano = make_pano(public=False)
    assert role_of(users["owner"], pano) == "owner"
    assert role_of(users["staff"], pano) == "owner"
    assert role_of(users["editor"], pano) == "editor"
    assert role_of(users["outsider"], pano) is None
    assert role_of(AnonymousUser(), pano) is None
    assert [can_view(users[u], pano) for u in ("viewer", "outsider")] == [True, False]
    assert [can_review(users[u], pano) for u in ("viewer", "reviewer", "editor")] == [False, True, True]
    assert [can_edit(users[u], pano) for u in ("reviewer", "editor", "owner")] == [False, True, True]
    pano.is_public = True
    pano.save()
    assert can_view(AnonymousUser(), pano) and not can_review(AnonymousUser(), pano)
    pano.published_pyramid = None
    pano.save()
    assert not can_view(AnonymousUser(), pano)  # public but nothing published yet
