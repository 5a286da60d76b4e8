"""The viewer in a real browser: tiles drawn, deeper levels on zoom, deep links, review.

Debian's Chromium (/usr/bin/chromium) through Playwright against pytest-django's
live_server, with a real pyramid built by processing.tiles.pyramid.build_pyramid.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from processing.tiles.pyramid import PyramidParams, build_pyramid, num_levels

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing", allow_module_level=True)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

W, H = 3000, 900
ROOT = Path(__file__).resolve().parents[2]
CONSOLE_ERRORS: list[str] = []
TILE_RE = re.compile(r"/tiles/\d+/v\d+/image_files/(\d+)/(\d+)_(\d+)\.jpg$")


def synthetic_panorama(path: Path) -> Path:
    """A small fake 360-degree panorama: sky, ridges, a town with fine detail."""
    import pyvips

    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    sky = np.stack([90 + 60 * yy / H, 140 + 50 * yy / H, 230 - 40 * yy / H], -1)
    img = sky.copy()
    ridge = H * 0.45 + 60 * np.sin(xx[0] / 210.0) + 25 * np.sin(xx[0] / 47.0 + 1.3)
    far = (yy > ridge[None, :])[..., None]
    img = np.where(far, np.stack([70 + 0 * yy, 95 + 20 * np.sin(xx / 31.0), 80 + 0 * yy], -1), img)
    near = H * 0.68 + 35 * np.sin(xx[0] / 133.0 + 2.0)
    ground = (yy > near[None, :])[..., None]
    img = np.where(ground, np.stack([60 + 30 * ((xx // 12 + yy // 12) % 2), 110 + 0 * yy, 50 + 0 * yy], -1), img)
    rng = np.random.default_rng(7)
    for _ in range(70):  # houses with windows: detail only visible near full resolution
        x0, w = int(rng.integers(0, W - 60)), int(rng.integers(20, 60))
        h = int(rng.integers(20, 70))
        y1 = int(near[x0]) + 10
        img[y1 - h : y1, x0 : x0 + w] = rng.integers(150, 250, 3)
        img[y1 - h + 4 : y1 - 4 : 8, x0 + 3 : x0 + w - 3 : 6] = (40, 40, 60)
    img += rng.normal(0, 4, img.shape)
    pyvips.Image.new_from_array(np.clip(img, 0, 255).astype(np.uint8)).tiffsave(str(path), tile=True)
    return path


@pytest.fixture
def setup(live_server, settings, tmp_path, django_user_model):
    from django.test import Client

    from webapp.panoramas.models import Membership, Panorama, Pyramid, Stack, SubPanorama

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    media = tmp_path / "media"
    settings.MEDIA_ROOT = media
    owner = django_user_model.objects.create_user("olga")
    pano = Panorama.objects.create(slug="fjord", title="Fjord 360", is_public=True, owner=owner, wrap=True)
    users = {}
    for name, role in (("rita", "reviewer"), ("vera", "viewer"), ("eddie", "editor")):
        users[name] = django_user_model.objects.create_user(name)
        Membership.objects.create(user=users[name], panorama=pano, role=role)
    rel = f"panoramas/{pano.pk}/pyramids/v1"
    info = build_pyramid(synthetic_panorama(tmp_path / "pano.tif"), media / rel, PyramidParams(quality=85))
    pyr = Pyramid.objects.create(
        panorama=pano,
        version=1,
        path=rel,
        width=info["width"],
        height=info["height"],
        tile_size=info["tile_size"],
        overlap=info["overlap"],
        format="jpg",
        state=Pyramid.State.READY,
    )
    pano.published_pyramid = pyr
    pano.save()
    sub = SubPanorama.objects.create(panorama=pano, name="main")
    for i, st in enumerate(["done", "done", "running", "queued", "pending", "failed"]):
        Stack.objects.create(
            subpanorama=sub,
            name=f"s{i:02d}",
            col=i,
            status=st,
            progress=100.0 if st == "done" else 37.0,
            footprint={"x": i * 500, "y": 150, "w": 560, "h": 650},
        )

    def cookies_for(name):
        c = Client()
        c.force_login(users[name])
        host = re.sub(r"^https?://", "", live_server.url).split(":")[0]
        return [{"name": "sessionid", "value": c.cookies["sessionid"].value, "domain": host, "path": "/"}]

    return {"url": live_server.url, "pano": pano, "pyr": pyr, "info": info, "cookies": cookies_for}


def new_page(browser, cookies=None, size=(1280, 720)):
    ctx = browser.new_context(viewport={"width": size[0], "height": size[1]})
    if cookies:
        ctx.add_cookies(cookies)
    page = ctx.new_page()
    page.set_default_timeout(15000)
    # Console errors (CSP violations included) fail the test at the end.
    page.on("console", lambda m: m.type == "error" and CONSOLE_ERRORS.append(m.text))
    page.on("pageerror", lambda e: CONSOLE_ERRORS.append(f"{e} {e.stack}"))
    page.on("response", lambda r: r.status >= 400 and CONSOLE_ERRORS.append(f"HTTP {r.status} {r.url}"))
    return ctx, page


def wait_drawn(page):
    page.wait_for_function("() => document.body.dataset.osdOpen === '1'")
    page.wait_for_function("() => window.terapan.viewer.world.getItemAt(0).getFullyLoaded()")
    page.wait_for_timeout(300)


def canvas_stats(page):
    return page.evaluate(
        """() => {
        const c = window.terapan.viewer.drawer.canvas;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0, s = 0, s2 = 0;
        for (let i = 0; i < d.length; i += 4 * 97) { const v = d[i] + d[i + 1] + d[i + 2]; n++; s += v; s2 += v * v; }
        const m = s / n; return {mean: m, std: Math.sqrt(s2 / n - m * m)};
    }"""
    )


def test_viewer_end_to_end(browser, setup, artifacts):
    t0 = time.monotonic()
    url, pano = setup["url"], setup["pano"]
    top = num_levels(W, H) - 1

    # 1. Anonymous visitor of a public panorama: tiles drawn, no review layer.
    ctx, page = new_page(browser)
    levels: list[int] = []
    page.on("request", lambda r: (m := TILE_RE.search(r.url)) and levels.append(int(m.group(1))))
    page.goto(f"{url}/p/{pano.slug}/")
    wait_drawn(page)
    stats = canvas_stats(page)
    assert stats["std"] > 10, stats  # not a blank canvas
    assert page.locator("#review-panel").count() == 0 and page.locator("#draw-tools").count() == 0
    first_max = max(levels)
    assert first_max < top
    assert "%" in page.locator("#zoom-readout").inner_text()
    page.screenshot(path=str(artifacts / "e2e-anonymous.png"))

    # 2. Zoom to 200 % and pan: deeper levels are fetched, down to full resolution.
    page.evaluate(
        """() => { const v = window.terapan.viewer.viewport;
        v.zoomTo(v.imageToViewportZoom(2.0), v.imageToViewportCoordinates(new OpenSeadragon.Point(1200, 600)), true);
        v.panTo(v.imageToViewportCoordinates(new OpenSeadragon.Point(1200, 600)), true); }"""
    )
    wait_drawn(page)
    assert max(levels) == top, sorted(set(levels))
    readout = page.locator("#zoom-readout").inner_text()
    assert readout.strip() in ("200 %", "199 %", "201 %"), readout
    page.wait_for_function("() => location.hash.includes('z=')")
    hash_ = page.evaluate("location.hash")
    x, y = (float(re.search(rf"{k}=([-\d.]+)", hash_).group(1)) for k in "xy")
    assert abs(x - 1200) < 3 and abs(y - 600) < 3, hash_
    ctx.close()

    # 3. A deep link reproduces its view in a fresh browser.
    ctx, page = new_page(browser)
    page.goto(f"{url}/p/{pano.slug}/#x=2500&y=450&z=0.75")
    wait_drawn(page)
    view = page.evaluate(f"Terapan.readView(window.terapan.viewer, {W})")
    assert abs(view["x"] - 2500) <= 2 and abs(view["y"] - 450) <= 2 and abs(view["z"] - 0.75) < 0.01, view
    ctx.close()

    # 4. A reviewer draws a rectangle, comments; both survive a reload.
    ctx, page = new_page(browser, setup["cookies"]("rita"), size=(1400, 800))
    page.goto(f"{url}/p/{pano.slug}/#x=1500&y=450&z=0.45")
    wait_drawn(page)
    page.wait_for_function("() => document.body.dataset.regionsLoaded === '0'")
    page.click("#draw-tools button[data-tool=rect]")
    box = page.locator("#osd").bounding_box()
    sx, sy = box["x"] + box["width"] * 0.40, box["y"] + box["height"] * 0.45
    page.mouse.move(sx, sy)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(sx + 18 * i, sy + 9 * i)
    page.mouse.up()
    page.wait_for_selector("#region-list li")
    page.fill("#comment-body", "Seam visible across the red roof - please re-render.")
    page.click("#comment-form button[type=submit]")
    page.wait_for_selector("#thread li")
    from webapp.review.models import Comment, Region

    region = Region.objects.get()
    assert region.author.username == "rita" and region.w > 50 and region.h > 20
    assert Comment.objects.get().body.startswith("Seam visible")
    page.reload()
    wait_drawn(page)
    page.wait_for_function("() => document.body.dataset.regionsLoaded === '1'")
    assert "1 comment" in page.locator("#region-list li").inner_text()
    page.click("#region-list li")
    page.wait_for_selector("#thread li")
    assert "Seam visible" in page.locator("#thread").inner_text()
    assert page.locator(".a9s-annotation").count() == 1
    page.check("#wip-toggle")
    page.wait_for_selector(".wip.st-running")
    assert page.locator(".wip").count() == 6
    page.wait_for_timeout(600)
    page.screenshot(path=str(artifacts / "e2e-review.png"))
    ctx.close()

    # 5. An editor sees status buttons; a viewer has no drawing tools and gets 403 from the API.
    ctx, page = new_page(browser, setup["cookies"]("vera"))
    page.goto(f"{url}/p/{pano.slug}/")
    wait_drawn(page)
    page.wait_for_function("() => document.body.dataset.regionsLoaded === '1'")
    assert page.locator("#draw-tools").count() == 0 and page.locator("#comment-form").count() == 0
    status = page.evaluate(
        """async () => (await fetch(window.terapan.config.api.annotations, {method: 'POST',
            headers: {'Content-Type': 'application/json', 'X-CSRFToken': Terapan.csrf()},
            body: JSON.stringify({target: {selector: {type: 'FragmentSelector', value: 'xywh=pixel:1,1,5,5'}}})})).status"""
    )
    assert status == 403
    ctx.close()

    # A screenshot for the README: the editor's view with the review panel and work in progress.
    ctx, page = new_page(browser, setup["cookies"]("eddie"), size=(1400, 800))
    page.goto(f"{url}/p/{pano.slug}/#x=1500&y=450&z=0.45")
    wait_drawn(page)
    page.wait_for_function("() => document.body.dataset.regionsLoaded === '1'")
    assert page.locator("#status-buttons").count() == 1
    page.click("#region-list li")
    page.wait_for_selector("#thread li")
    page.evaluate("Terapan.applyView(window.terapan.viewer, {x: 1500, y: 470, z: 0.36}, true)")
    page.check("#wip-toggle")
    page.wait_for_selector(".wip.st-running")
    wait_drawn(page)
    page.wait_for_timeout(500)
    shot = artifacts / "viewer.png"
    page.screenshot(path=str(shot))
    ctx.close()
    # The README's figure is refreshed only on request (keeps the tree clean).
    docs = ROOT / "docs" / "images" / "viewer.png"
    if not docs.exists() or os.environ.get("TERAPAN_UPDATE_SCREENSHOTS"):
        docs.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, docs)
    # Allowed: the 403 probe above, Chromium's own favicon request, and a known
    # hover bug inside Annotorious 2.7 (element.getAttribute on mouse moves).
    errors = [
        e
        for e in CONSOLE_ERRORS
        if "403" not in e
        and not e.startswith("Failed to load resource")
        and not ("getAttribute is not a function" in e and "annotorious" in e)
    ]
    assert not errors, errors
    assert time.monotonic() - t0 < 60
