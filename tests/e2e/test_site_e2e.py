"""The site pages in Debian's Chromium at 1440x900 and 390x844: a non-staff
reviewer signs in through the site and finds the panorama; the owner manages
members; exports and the embed page work; OpenSeadragon opens the IIIF
info.json. No JavaScript console errors, no horizontal scroll on these pages."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from processing.tiles.pyramid import PyramidParams, build_pyramid

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing", allow_module_level=True)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

W, H = 1600, 500
SIZES = {"desktop": (1440, 900), "phone": (390, 844)}
IIIF_TILE_RE = re.compile(r"/iiif/[\w-]+/(full|\d+,\d+,\d+,\d+)/(max|\d+,\d+)/0/default\.jpg$")


def landscape(path: Path) -> Path:
    import pyvips

    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.stack([80 + 100 * yy / H, 120 + 60 * np.sin(xx / 90.0), 200 - 120 * yy / H], -1)
    img[(yy > H * 0.6) & ((xx // 40 + yy // 40) % 2 == 0)] = (60, 140, 60)
    img += np.random.default_rng(5).normal(0, 5, img.shape)
    pyvips.Image.new_from_array(np.clip(img, 0, 255).astype(np.uint8)).write_to_file(str(path))
    return path


@pytest.fixture
def site(live_server, settings, tmp_path, django_user_model):
    from webapp.panoramas.models import Membership, Panorama, Pyramid

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    media = tmp_path / "media"
    settings.MEDIA_ROOT = media
    owner = django_user_model.objects.create_user("olga", password="owner-pass-1", email="olga@example.org")
    rita = django_user_model.objects.create_user("rita", password="rita-pass-1", email="rita@example.org")
    assert not rita.is_staff
    pano = Panorama.objects.create(
        slug="fjord",
        title="Fjord 360",
        is_public=False,
        owner=owner,
        wrap=True,
        description="The fjord from the western ridge, a long description that wraps on a phone screen.",
        credits="Photos: Olga N. Processing: Terapan.",
    )
    Membership.objects.create(user=rita, panorama=pano, role="reviewer")
    rel = f"panoramas/{pano.pk}/pyramids/v1"
    info = build_pyramid(landscape(tmp_path / "l.png"), media / rel, PyramidParams(quality=88))
    pyr = Pyramid.objects.create(
        panorama=pano, version=1, path=rel, width=info["width"], height=info["height"],
        tile_size=info["tile_size"], overlap=info["overlap"], format="jpg", state=Pyramid.State.READY,
    )  # fmt: skip
    pano.published_pyramid = pyr
    pano.save()
    return {"url": live_server.url, "pano": pano, "pyr": pyr}


def new_page(browser, size, errors):
    ctx = browser.new_context(viewport={"width": size[0], "height": size[1]}, accept_downloads=True)
    page = ctx.new_page()
    page.set_default_timeout(15000)
    page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("response", lambda r: r.status >= 400 and errors.append(f"HTTP {r.status} {r.url}"))
    return ctx, page


# Elements reaching past the window's right edge, except inside a box that scrolls or
# clips on purpose (the viewer's toolbar, OpenSeadragon's canvas, an ellipsis). Page
# widths cannot tell: on phones html and body clip horizontal overflow.
OUTSIDE_JS = """() => [...document.querySelectorAll('body *')].filter(e => {
  const b = e.getBoundingClientRect();
  if (b.width <= 0 || b.right <= innerWidth + 1) return false;
  for (let p = e.parentElement; p && p !== document.body; p = p.parentElement) {
    if (['auto', 'scroll', 'hidden'].includes(getComputedStyle(p).overflowX)) return false;
  }
  return true;
}).map(e => e.tagName + '.' + e.className + '#' + e.id)"""


def no_horizontal_scroll(page, where: str) -> None:
    sw, iw = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert sw <= iw, f"{where}: page is {sw} px wide in a {iw} px window"
    outside = page.evaluate(OUTSIDE_JS)
    assert not outside, f"{where}: past the {iw} px window's edge: {outside[:5]}"


def sign_in(page, url: str, username: str, password: str) -> None:
    page.goto(url + "/")
    page.click("header.topbar a:has-text('Log in')")
    page.wait_for_url(re.compile(r"/accounts/login/"))
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("form button[type=submit]")


@pytest.mark.parametrize("size", list(SIZES), ids=list(SIZES))
def test_reviewer_signs_in_and_finds_the_panorama(browser, site, artifacts, size):
    errors: list[str] = []
    ctx, page = new_page(browser, SIZES[size], errors)
    url, pano = site["url"], site["pano"]

    page.goto(url + "/")
    assert page.locator(".pano-card").count() == 0  # private: nothing for anonymous visitors
    no_horizontal_scroll(page, "home (anonymous)")
    sign_in(page, url, "rita", "wrong")
    assert "correct username and password" in page.content()
    assert "staff account" not in page.content()
    no_horizontal_scroll(page, "login with error")
    page.screenshot(path=str(artifacts / f"site-login-{size}.png"))
    page.fill("#id_username", "rita")
    page.fill("#id_password", "rita-pass-1")
    page.click("form button[type=submit]")
    page.wait_for_selector(".pano-card[data-slug=fjord]")
    card = page.locator(".pano-card[data-slug=fjord]")
    assert "Fjord 360" in card.inner_text() and "GP" in card.inner_text() and "Photos: Olga N." in card.inner_text()
    assert "you: reviewer" in card.inner_text()
    # The thumbnail is drawn from the pyramid.
    page.wait_for_function(
        "() => { const i = document.querySelector('.pano-card img'); return i && i.complete && i.naturalWidth > 0; }"
    )
    assert page.evaluate("document.querySelector('.pano-card img').naturalWidth") == 960
    assert page.locator(".pano-card a:has-text('Members')").count() == 0  # reviewers do not manage members
    no_horizontal_scroll(page, "home")
    page.screenshot(path=str(artifacts / f"site-home-{size}.png"))
    card.locator("h2 a").click()
    page.wait_for_url(re.compile(rf"/p/{pano.slug}/"))
    page.wait_for_function("() => document.body.dataset.osdOpen === '1'")
    # Signed in as rita (the name is hidden on phones to keep the top bar one row; "Log out" stays).
    assert page.locator("header.topbar .who").text_content() == "rita"
    assert page.locator("header.topbar button:has-text('Log out')").is_visible()

    # The export page: the preview's view fills the form; the download is an image of that size.
    page.goto(f"{url}/p/{pano.slug}/export/")
    page.wait_for_function("() => +document.getElementById('ex-w').value > 0")
    no_horizontal_scroll(page, "export")
    page.fill("#ex-x", "100")
    page.fill("#ex-y", "50")
    page.fill("#ex-w", "800")
    page.fill("#ex-h", "400")
    page.fill("#ex-width", "400")
    page.select_option("#ex-format", "png")
    assert page.locator("#ex-out").inner_text().startswith("400 \u00d7 200")
    page.wait_for_selector(".export-frame")  # the typed area is framed on the preview
    no_horizontal_scroll(page, "export with a framed area")
    if size == "phone":  # the page scrolls with the window (body was the scroller under overflow-x: hidden)
        assert page.evaluate("(window.scrollTo(0, 10000), window.scrollY)") > 0
        page.evaluate("window.scrollTo(0, 0)")
    with page.expect_download() as dl:
        page.click("#ex-submit")
    path = dl.value.path()
    import pyvips

    im = pyvips.Image.new_from_file(str(path))
    assert (im.width, im.height) == (400, 200) and dl.value.suggested_filename.endswith(".png")
    page.fill("#ex-width", "900")  # wider than the area: refused before any request
    assert page.locator("#ex-error").is_visible() and page.locator("#ex-submit").is_disabled()
    page.screenshot(path=str(artifacts / f"site-export-{size}.png"))

    # Signing out goes back to the home page, signed out.
    page.goto(url + "/")
    page.click("header.topbar button:has-text('Log out')")
    page.wait_for_selector("header.topbar a:has-text('Log in')")

    # Forgotten password: the e-mailed link sets a new one, which signs in.
    from django.core import mail

    page.goto(url + "/accounts/login/")
    page.click("a:has-text('Forgot your password?')")
    no_horizontal_scroll(page, "password reset")
    page.fill("#id_email", "rita@example.org")
    page.click("form button[type=submit]")
    page.wait_for_url(re.compile(r"/accounts/password-reset/sent/"))
    link = re.search(r"https?://\S+/accounts/reset/\S+/", mail.outbox[-1].body).group(0)
    page.goto(link)
    page.wait_for_selector("#id_new_password1")
    no_horizontal_scroll(page, "new password")
    page.fill("#id_new_password1", "Rita-new-pass-5")
    page.fill("#id_new_password2", "Rita-new-pass-5")
    page.click("form button[type=submit]")
    page.wait_for_url(re.compile(r"/accounts/reset/done/"))
    sign_in(page, url, "rita", "Rita-new-pass-5")
    page.wait_for_selector(".pano-card[data-slug=fjord]")
    ctx.close()
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("size", list(SIZES), ids=list(SIZES))
def test_owner_manages_members_and_invites(browser, site, artifacts, size):
    from django.core import mail

    from webapp.panoramas.models import Membership

    errors: list[str] = []
    ctx, page = new_page(browser, SIZES[size], errors)
    url, pano = site["url"], site["pano"]
    sign_in(page, url, "olga", "owner-pass-1")
    page.wait_for_selector(".pano-card[data-slug=fjord]")
    page.click(".pano-card a:has-text('Members')")
    page.wait_for_url(re.compile(r"/p/fjord/members/"))
    no_horizontal_scroll(page, "members")
    page.fill("#id_who", "newcomer@example.org")
    page.select_option("#id_role", "viewer")
    page.click("#invite-form button[type=submit]")
    page.wait_for_selector(".msg.success")
    assert "newcomer@example.org" in page.locator(".invitation").inner_text()
    assert mail.outbox and mail.outbox[-1].to == ["newcomer@example.org"]
    # Rita becomes an editor.
    row = page.locator(".member[data-user=rita]")
    row.locator("select").select_option("editor")
    row.locator("button:has-text('Change')").click()
    page.wait_for_selector(".msg.success")
    assert Membership.objects.get(user__username="rita", panorama=pano).role == "editor"
    # The last owner's Remove button is disabled.
    assert page.locator(".member[data-user=olga] .remove-form button").is_disabled()
    no_horizontal_scroll(page, "members after changes")
    page.screenshot(path=str(artifacts / f"site-members-{size}.png"), full_page=True)

    # The invitee follows the e-mailed link, creates an account and lands in the viewer.
    link = re.search(r"https?://\S+/accounts/invite/\S+/", mail.outbox[-1].body).group(0)
    ctx2, guest = new_page(browser, SIZES[size], errors)
    guest.goto(link)
    no_horizontal_scroll(guest, "accept invitation")
    guest.fill("#id_username", "newcomer")
    guest.fill("#id_password1", "Newcomer-pass-77")
    guest.fill("#id_password2", "Newcomer-pass-77")
    guest.click("form button[type=submit]")
    guest.wait_for_url(re.compile(r"/p/fjord/"))
    guest.wait_for_function("() => document.body.dataset.osdOpen === '1'")
    assert Membership.objects.get(user__username="newcomer", panorama=pano).role == "viewer"
    ctx2.close()

    # An existing account is invited, not added: it joins by accepting on its home page.
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("walt", password="walt-pass-1")
    page.fill("#id_who", "walt")
    page.select_option("#id_role", "reviewer")
    page.click("#invite-form button[type=submit]")
    page.wait_for_selector(".msg.success")
    assert not Membership.objects.filter(user__username="walt", panorama=pano).exists()
    ctx3, walt = new_page(browser, SIZES[size], errors)
    sign_in(walt, url, "walt", "walt-pass-1")
    walt.wait_for_selector("#invitations")
    no_horizontal_scroll(walt, "invitations on the home page")
    walt.click("#invitations button:has-text('Accept')")
    walt.wait_for_url(re.compile(r"/p/fjord/"))
    walt.wait_for_function("() => document.body.dataset.osdOpen === '1'")
    assert Membership.objects.get(user__username="walt", panorama=pano).role == "reviewer"
    ctx3.close()
    ctx.close()
    assert not errors, "\n".join(errors)


def test_embed_and_openseadragon_opens_iiif_info_json(browser, site, artifacts):
    """Public panorama: the embed page draws it, and OpenSeadragon reads it through IIIF."""
    pano = site["pano"]
    pano.is_public = True
    pano.save()
    errors: list[str] = []
    for size in SIZES.values():
        ctx, page = new_page(browser, size, errors)
        iiif_tiles: list[str] = []
        page.on(
            "response", lambda r, seen=iiif_tiles: IIIF_TILE_RE.search(r.url) and r.status == 200 and seen.append(r.url)
        )
        resp = page.goto(f"{site['url']}/p/{pano.slug}/embed/?source=iiif")
        assert "frame-ancestors 'self'" in resp.headers["content-security-policy"]
        page.wait_for_function(
            "() => window.terapanEmbed && window.terapanEmbed.world.getItemCount() === 1"
            " && window.terapanEmbed.world.getItemAt(0).getFullyLoaded()"
        )
        src = page.evaluate(
            """() => { const s = window.terapanEmbed.world.getItemAt(0).source;
            return {iiif: s instanceof OpenSeadragon.IIIFTileSource, w: s.width, h: s.height, version: s.version}; }"""
        )
        assert src == {"iiif": True, "w": W, "h": H, "version": 3}, src
        assert iiif_tiles, "no IIIF tile was fetched"
        # The canvas shows the panorama, not a blank frame.
        std = page.evaluate(
            """() => { const c = window.terapanEmbed.drawer.canvas; const d = c.getContext('2d')
            .getImageData(0, 0, c.width, c.height).data; let n = 0, s = 0, s2 = 0;
            for (let i = 0; i < d.length; i += 4 * 53) { const v = d[i] + d[i + 1] + d[i + 2]; n++; s += v; s2 += v * v; }
            const m = s / n; return Math.sqrt(s2 / n - m * m); }"""
        )
        assert std > 10, std
        no_horizontal_scroll(page, "embed")
        page.screenshot(path=str(artifacts / f"site-embed-iiif-{size[0]}.png"))
        ctx.close()
    assert not errors, "\n".join(errors)


def test_admin_progress_page_warns_without_worker(browser, site, django_user_model, artifacts):
    """A queued run and no worker: the live progress page says so and groups the run."""
    from django.test import Client

    from webapp.panoramas.models import Job

    pano = site["pano"]
    for kind in ("stack", "stack", "composite", "pyramid"):
        Job.objects.create(kind=kind, panorama=pano, status="queued")
    django_user_model.objects.create_superuser("boss", password="boss-pass-1")
    c = Client()
    c.force_login(django_user_model.objects.get(username="boss"))
    host = re.sub(r"^https?://", "", site["url"]).split(":")[0]
    errors: list[str] = []
    ctx, page = new_page(browser, SIZES["desktop"], errors)
    ctx.add_cookies([{"name": "sessionid", "value": c.cookies["sessionid"].value, "domain": host, "path": "/"}])
    page.goto(f"{site['url']}/admin/panoramas/panorama/{pano.pk}/progress/")
    page.wait_for_selector("#warnings .worker-warning")
    text = page.locator("#warnings").inner_text()
    assert "No worker is listening to the 'gpu' queue" in text and "'default' queue" in text
    run = page.locator("details.run").first
    assert run.get_attribute("open") is not None
    assert "waiting for a worker" in run.locator("summary").inner_text()
    assert run.locator("tbody tr").count() == 4
    page.screenshot(path=str(artifacts / "site-admin-progress-no-worker.png"))
    ctx.close()
    assert not errors, "\n".join(errors)
