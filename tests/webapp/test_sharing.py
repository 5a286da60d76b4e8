"""Home page cards, thumbnails, the embed page, exports and the IIIF Image API 3.0."""

from __future__ import annotations

import numpy as np
import pytest
import pyvips
from django.urls import reverse

from processing.tiles.pyramid import level_size, num_levels, tile_path

pytestmark = pytest.mark.django_db

ALL = ("owner", "editor", "reviewer", "viewer", "outsider", None)
MEMBERS = ("owner", "editor", "reviewer", "viewer", "staff")


def body(resp) -> bytes:
    return b"".join(resp.streaming_content) if resp.streaming else resp.content


def decode(data: bytes) -> np.ndarray:
    return pyvips.Image.new_from_buffer(data, "").numpy()


# ---------------------------------------------------------------- home


def test_home_cards_with_thumbnail_size_description_credits(make_pano, client_for):
    pano = make_pano("alps")
    pano.description = "Seen from the ridge at dawn."
    pano.credits = "Photos: A. Climber. CC BY 4.0"
    pano.save()
    make_pano("secret", public=False)
    html = client_for(None).get("/").content.decode()
    assert "Alps" in html and "Seen from the ridge at dawn." in html and "CC BY 4.0" in html
    assert "0.000 GP" in html  # 300x200 = 0.00006 GP
    assert "Secret" not in html
    thumb = reverse("sharing:thumbnail", kwargs={"slug": "alps", "pyramid_id": pano.published_pyramid_id})
    assert f'src="{thumb}"' in html
    html = client_for("viewer").get("/").content.decode()
    assert "Secret" in html and "you: viewer" in html
    assert reverse("accounts:members", args=["alps"]) not in html
    assert reverse("accounts:members", args=["alps"]) in client_for("owner").get("/").content.decode()


def test_home_size_in_gigapixels(make_pano, client_for):
    pano = make_pano()
    pyr = pano.published_pyramid
    type(pyr).objects.filter(pk=pyr.pk).update(width=120000, height=20000)
    assert "2.400 GP" in client_for(None).get("/").content.decode()


@pytest.mark.parametrize("who", ALL)
def test_thumbnail_permissions_and_pixels(make_pano, client_for, who):
    pano = make_pano(public=False)
    url = reverse("sharing:thumbnail", kwargs={"slug": pano.slug, "pyramid_id": pano.published_pyramid_id})
    r = client_for(who).get(url)
    if who in ("outsider", None):
        assert r.status_code == 404
        return
    assert r.status_code == 200 and r["Content-Type"] == "image/jpeg"
    assert r["Cache-Control"].startswith("private")
    im = decode(body(r))
    assert im.shape[:2] == (200, 300)  # never upscaled: the panorama is 300x200
    assert (pano.media_dir / "thumbnails").is_dir()


def test_public_thumbnail_cached_publicly(make_pano, client_for):
    pano = make_pano()
    url = reverse("sharing:thumbnail", kwargs={"slug": pano.slug, "pyramid_id": pano.published_pyramid_id})
    r = client_for(None).get(url)
    assert r.status_code == 200 and r["Cache-Control"].startswith("public")


# ---------------------------------------------------------------- embed


def test_embed_page_csp_frame_ancestors(make_pano, client_for):
    pano = make_pano()
    url = reverse("sharing:embed", args=[pano.slug])
    r = client_for(None).get(url)
    assert r.status_code == 200
    assert "frame-ancestors 'self'" in r["Content-Security-Policy"]
    assert "X-Frame-Options" not in r
    assert b"openseadragon.min.js" in r.content and b"embed-config" in r.content
    pano.embed_origins = "https://museum.example https://*.library.example"
    pano.full_clean()
    pano.save()
    csp = client_for(None).get(url)["Content-Security-Policy"]
    assert "frame-ancestors https://museum.example https://*.library.example" in csp
    assert "script-src 'self'" in csp
    # Every other page still refuses to be framed.
    home = client_for(None).get("/")
    assert "frame-ancestors 'none'" in home["Content-Security-Policy"] and home["X-Frame-Options"] == "DENY"


def test_embed_origins_validated(make_pano):
    from django.core.exceptions import ValidationError

    pano = make_pano()
    pano.embed_origins = "https://ok.example javascript:alert(1)"
    with pytest.raises(ValidationError, match="javascript"):
        pano.full_clean()


@pytest.mark.parametrize("who", ALL)
def test_embed_private_members_only(make_pano, client_for, who):
    pano = make_pano(public=False)
    r = client_for(who).get(reverse("sharing:embed", args=[pano.slug]))
    assert r.status_code == (404 if who in ("outsider", None) else 200)


# ---------------------------------------------------------------- export


def export(c, slug, **params):
    return c.get(reverse("sharing:export_image", args=[slug]), params)


@pytest.mark.parametrize("fmt,ctype", [("png", "image/png"), ("jpg", "image/jpeg"), ("tif", "image/tiff")])
def test_export_formats_and_pixels(make_pano, client_for, media, fmt, ctype):
    pano = make_pano(fmt="png")
    r = export(client_for(None), pano.slug, x=40, y=30, w=200, h=100, width=200, format=fmt)
    assert r.status_code == 200, body(r)
    assert r["Content-Type"] == ctype
    assert "attachment" in r["Content-Disposition"]
    data = body(r)
    assert int(r["Content-Length"]) == len(data)
    im = decode(data)[:, :, :3]
    assert im.shape == (100, 200, 3)
    src = pyvips.Image.new_from_file(str(tile_path(pano.published_pyramid.abs_path, 9, 0, 0, "png"))).numpy()
    # Full resolution, lossless formats: the pyramid's pixels (tile 0,0 covers x<64, y<64).
    if fmt != "jpg":
        assert np.array_equal(im[:34, :24], src[30:64, 40:64, :3])
    else:
        assert np.abs(im[:34, :24].astype(int) - src[30:64, 40:64, :3]).mean() < 12


def test_export_scaled_and_leaves_no_file(make_pano, client_for, settings):
    from pathlib import Path

    pano = make_pano()
    r = export(client_for(None), pano.slug, width=150, format="png")
    assert r.status_code == 200 and r["X-Terapan-Export-Size"] == "150x100"
    assert decode(body(r)).shape[:2] == (100, 150)
    assert not list((Path(settings.VAR_DIR) / "exports").glob("export-*"))


def test_export_limits_and_bad_input(make_pano, client_for, settings):
    pano = make_pano()
    c = client_for(None)
    settings.TERAPAN_EXPORT_MAX_PIXELS = 5000
    r = export(c, pano.slug, width=300)
    assert r.status_code == 400 and "exceeds the limit" in r.json()["error"]
    assert export(c, pano.slug, width=80).status_code == 200
    settings.TERAPAN_EXPORT_MAX_PIXELS = 10**7
    settings.TERAPAN_EXPORT_MAX_SIDE = 100
    assert "a side" in export(c, pano.slug, width=200).json()["error"]
    settings.TERAPAN_EXPORT_MAX_SIDE = 16384
    assert "larger than the region" in export(c, pano.slug, w=50, h=50, width=100).json()["error"]
    assert "outside" in export(c, pano.slug, x=5000, y=0, w=10, h=10).json()["error"]
    assert "format" in export(c, pano.slug, format="gif").json()["error"]
    assert "number" in export(c, pano.slug, x="abc").json()["error"]
    # Infinities and overflowing numbers are bad input too, not a server error.
    for bad in ({"w": "inf"}, {"width": "1e400"}, {"height": "-inf"}, {"x": "nan"}):
        r = export(c, pano.slug, **bad)
        assert r.status_code == 400 and "number" in r.json()["error"], bad


def test_export_busy_answers_503(make_pano, client_for, monkeypatch):
    import threading

    from webapp.sharing import views

    pano = make_pano()
    slots = threading.BoundedSemaphore(1)
    monkeypatch.setattr(views, "_EXPORT_SLOTS", slots)
    monkeypatch.setattr(views, "EXPORT_WAIT_S", 0.2)
    slots.acquire()  # another export holds the only slot
    try:
        r = export(client_for(None), pano.slug, width=30)
        assert r.status_code == 503 and r["Retry-After"] == "10" and "busy" in r.json()["error"]
    finally:
        slots.release()
    assert export(client_for(None), pano.slug, width=30).status_code == 200


def test_iiif_large_images_share_the_export_slots(make_pano, client_for, monkeypatch):
    """Anyone may ask a public panorama for full/max (up to the export limit): large IIIF
    images wait for an export slot like exports do; tiles never wait."""
    import threading

    from webapp.sharing import views

    pano = make_pano()
    slots = threading.BoundedSemaphore(1)
    monkeypatch.setattr(views, "_EXPORT_SLOTS", slots)
    monkeypatch.setattr(views, "EXPORT_WAIT_S", 0.2)
    monkeypatch.setattr(views, "IIIF_FREE_PIXELS", 64 * 64)
    slots.acquire()  # an export holds the only slot
    try:
        r = client_for(None).get(iiif_url(pano.slug, "full", "max"))
        assert r.status_code == 503 and r["Retry-After"] == "10"
        assert client_for(None).get(iiif_url(pano.slug, "0,0,64,64", "64,")).status_code == 200
    finally:
        slots.release()
    assert client_for(None).get(iiif_url(pano.slug, "full", "max")).status_code == 200
    assert slots.acquire(timeout=0)  # released after the render


@pytest.mark.parametrize("who", ALL)
def test_export_permissions_private(make_pano, client_for, who):
    pano = make_pano(public=False)
    c = client_for(who)
    ok = who not in ("outsider", None)
    assert export(c, pano.slug, width=30).status_code == (200 if ok else 404)
    assert c.get(reverse("sharing:export", args=[pano.slug])).status_code == (200 if ok else 404)


def test_export_of_a_review_region_members_only(make_pano, client_for, users):
    from webapp.review.models import Region

    pano = make_pano()
    reg = Region.objects.create(panorama=pano, version=1, target={}, x=10, y=20, w=60, h=40, author=users["reviewer"])
    r = export(client_for("viewer"), pano.slug, region=reg.pk, format="png")
    assert r.status_code == 200 and r["X-Terapan-Export-Size"] == "60x40"
    page = client_for("viewer").get(reverse("sharing:export", args=[pano.slug]), {"region": reg.pk})
    assert page.context["config"]["initial"]["w"] == 60
    # Regions are for members: a public visitor learns nothing about them.
    assert export(client_for(None), pano.slug, region=reg.pk).status_code == 404


def test_export_page_opens_a_linked_view(make_pano, client_for):
    pano = make_pano()
    page = client_for(None).get(reverse("sharing:export", args=[pano.slug]), {"x": 10, "y": 5, "w": 400, "h": 50})
    assert page.context["config"]["initial"] == {"format": "jpg", "x": 10, "y": 5, "w": 290, "h": 50}
    bad = client_for(None).get(reverse("sharing:export", args=[pano.slug]), {"x": "a", "y": 5, "w": 4, "h": 5})
    assert bad.status_code == 200 and bad.context["config"]["initial"] == {"format": "jpg"}
    for junk in ("inf", "1e400", "nan"):
        bad = client_for(None).get(reverse("sharing:export", args=[pano.slug]), {"x": junk, "y": 5, "w": 4, "h": 5})
        assert bad.status_code == 200 and bad.context["config"]["initial"] == {"format": "jpg"}, junk


def test_export_older_version_members_only(make_pano, client_for):
    pano = make_pano(versions=2)
    assert export(client_for("viewer"), pano.slug, v=1, width=30).status_code == 200
    assert export(client_for(None), pano.slug, v=1, width=30).status_code == 404
    assert export(client_for(None), pano.slug, v=2, width=30).status_code == 200


# ---------------------------------------------------------------- IIIF


def test_iiif_info_json_fields(make_pano, client_for):
    pano = make_pano()
    pyr = pano.published_pyramid
    r = client_for(None).get(reverse("sharing:iiif_info", args=[pano.slug]), HTTP_ACCEPT="application/ld+json")
    assert r.status_code == 200
    assert r["Content-Type"] == 'application/ld+json;profile="http://iiif.io/api/image/3/context.json"'
    assert r["Access-Control-Allow-Origin"] == "*"
    assert r["Link"] == '<http://iiif.io/api/image/3/level0.json>;rel="profile"'
    info = r.json()
    assert info["@context"] == "http://iiif.io/api/image/3/context.json"
    assert info["id"] == f"http://testserver/iiif/{pano.slug}"
    assert info["type"] == "ImageService3"
    assert info["protocol"] == "http://iiif.io/api/image"
    assert info["profile"] == "level0"
    assert (info["width"], info["height"]) == (pyr.width, pyr.height) == (300, 200)
    levels = num_levels(300, 200)
    assert info["tiles"] == [{"width": 64, "height": 64, "scaleFactors": [2**k for k in range(levels)]}]
    assert {"width": 300, "height": 200} in info["sizes"] and {"width": 1, "height": 1} in info["sizes"]
    for s in info["sizes"]:
        assert set(s) == {"width", "height"} and s["width"] >= 1
    assert client_for(None).get(reverse("sharing:iiif_info", args=[pano.slug]))["Content-Type"] == "application/json"
    base = client_for(None).get(f"/iiif/{pano.slug}")
    assert base.status_code == 303 and base["Location"].endswith(f"/iiif/{pano.slug}/info.json")


def iiif_url(slug, region, size, rotation="0", quality="default", fmt="jpg"):
    return f"/iiif/{slug}/{region}/{size}/{rotation}/{quality}.{fmt}"


def test_iiif_tiles_match_pyramid_tiles(make_pano, client_for):
    """Every tile OpenSeadragon asks for at scale factors 1, 2, 4 is the pyramid's tile, overlap cut."""
    pano = make_pano()
    pyr = pano.published_pyramid
    c = client_for(None)
    top = num_levels(300, 200) - 1
    for sf in (1, 2, 4):
        level = top - sf.bit_length() + 1
        lw, lh = level_size(300, 200, level)
        for col in range((lw + 63) // 64):
            for row in range((lh + 63) // 64):
                x, y = col * 64 * sf, row * 64 * sf
                w, h = min(64 * sf, 300 - x), min(64 * sf, 200 - y)
                ow, oh = min(64, lw - col * 64), min(64, lh - row * 64)
                region = "full" if (x, y, w, h) == (0, 0, 300, 200) else f"{x},{y},{w},{h}"
                size = "max" if (ow, oh) == (300, 200) else f"{ow},{oh}"
                r = c.get(iiif_url(pano.slug, region, size))
                assert r.status_code == 200, (sf, col, row, r.content)
                assert r["Content-Type"] == "image/jpeg" and r["Access-Control-Allow-Origin"] == "*"
                got = decode(r.content)
                assert got.shape[:2] == (oh, ow)
                tile = pyvips.Image.new_from_file(str(tile_path(pyr.abs_path, level, col, row, "jpg"))).numpy()
                left, top_ = (1 if col else 0), (1 if row else 0)
                want = tile[top_ : top_ + oh, left : left + ow].astype(int)
                # Same pixels, re-encoded once as JPEG (quality 90).
                assert np.abs(got.astype(int) - want).mean() < 4, (sf, col, row)
    # A whole small level, as OpenSeadragon asks for it.
    lw, lh = level_size(300, 200, top - 3)
    assert decode(c.get(iiif_url(pano.slug, "full", f"{lw},{lh}")).content).shape[:2] == (lh, lw)


def test_iiif_sizes_and_regions(make_pano, client_for):
    pano = make_pano()
    c = client_for(None)
    assert decode(c.get(iiif_url(pano.slug, "full", "150,")).content).shape[:2] == (100, 150)
    assert decode(c.get(iiif_url(pano.slug, "full", ",50")).content).shape[:2] == (50, 75)
    assert decode(c.get(iiif_url(pano.slug, "full", "!100,100")).content).shape[:2] == (66, 100)
    assert decode(c.get(iiif_url(pano.slug, "full", "pct:50")).content).shape[:2] == (100, 150)
    assert decode(c.get(iiif_url(pano.slug, "square", "max")).content).shape[:2] == (200, 200)
    assert decode(c.get(iiif_url(pano.slug, "pct:0,0,50,50", "max")).content).shape[:2] == (100, 150)
    assert decode(c.get(iiif_url(pano.slug, "250,150,100,100", "max")).content).shape[:2] == (50, 50)


@pytest.mark.parametrize(
    "region,size,rotation,quality,fmt,status",
    [
        ("full", "400,", "0", "default", "jpg", 400),  # upscale without ^
        ("full", "^400,", "0", "default", "jpg", 501),
        ("full", "max", "90", "default", "jpg", 501),
        ("full", "max", "x", "default", "jpg", 400),
        ("full", "max", "0", "gray", "jpg", 501),
        ("full", "max", "0", "sepia", "jpg", 400),
        ("full", "max", "0", "default", "png", 501),
        ("0,0,0,10", "max", "0", "default", "jpg", 400),
        ("400,0,10,10", "max", "0", "default", "jpg", 400),
        ("a,b,c,d", "max", "0", "default", "jpg", 400),
        ("full", "0,", "0", "default", "jpg", 400),
        ("full", "!10,", "0", "default", "jpg", 400),
        ("full", "pct:inf", "0", "default", "jpg", 400),
        ("full", "pct:nan", "0", "default", "jpg", 400),
        ("full", "pct:1e400", "0", "default", "jpg", 400),
        ("pct:0,0," + "9" * 400 + ",10", "max", "0", "default", "jpg", 400),
        ("0,0," + "9" * 400 + ",10", "max", "0", "default", "jpg", 400),
    ],
)
def test_iiif_bad_requests(make_pano, client_for, region, size, rotation, quality, fmt, status):
    pano = make_pano()
    r = client_for(None).get(iiif_url(pano.slug, region, size, rotation, quality, fmt))
    assert r.status_code == status, r.content


def test_iiif_max_area_limits_max(make_pano, client_for, settings):
    settings.TERAPAN_EXPORT_MAX_PIXELS = 6000
    pano = make_pano()
    info = client_for(None).get(reverse("sharing:iiif_info", args=[pano.slug])).json()
    assert info["maxArea"] == 6000
    im = decode(client_for(None).get(iiif_url(pano.slug, "full", "max")).content)
    assert im.shape[0] * im.shape[1] <= 6000 and im.shape[1] == 94
    assert client_for(None).get(iiif_url(pano.slug, "full", "300,")).status_code == 400


@pytest.mark.parametrize("who", ALL)
def test_iiif_private_members_only_no_cors(make_pano, client_for, who):
    pano = make_pano(public=False)
    c = client_for(who)
    info = c.get(reverse("sharing:iiif_info", args=[pano.slug]))
    tile = c.get(iiif_url(pano.slug, "0,0,64,64", "64,64"))
    if who in ("outsider", None):
        assert info.status_code == 404 and tile.status_code == 404
    else:
        assert info.status_code == 200 and tile.status_code == 200
        assert "Access-Control-Allow-Origin" not in info and info["Cache-Control"].startswith("private")


def test_iiif_serves_the_published_version(make_pano, client_for):
    pano = make_pano(versions=2)
    v1 = pano.pyramids.get(version=1)
    t2 = decode(client_for(None).get(iiif_url(pano.slug, "0,0,64,64", "64,64")).content).astype(int)
    pano.published_pyramid = v1
    pano.save()
    t1 = decode(client_for(None).get(iiif_url(pano.slug, "0,0,64,64", "64,64")).content).astype(int)
    assert np.abs(t1 - t2).mean() > 10  # the two versions differ (different random seeds)
