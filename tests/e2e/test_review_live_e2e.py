"""Live review in a real browser, at desktop (1440x900) and phone (390x844) sizes.

Non-staff members of each role (signed in through a session cookie): draw a
rectangle and a polygon by clicks, resize, comment, reply, @mention, change a
status where the role allows and be refused where not; a second browser sees
new regions and comments within 10 s without reloading; region and comment
links reopen the viewer there; the viewer's old traps (links outside the image,
r/f, the seam, controls lost in full screen) are gone; pages fit a phone.
"""

from __future__ import annotations

import json
import os
import time

import pytest

# setup is the fixture (live server, users per role, a real pyramid) of the viewer's e2e test.
from .test_viewer_e2e import CONSOLE_ERRORS, H, W, new_page, setup, wait_drawn  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
DESKTOP, PHONE = (1440, 900), (390, 844)
LIVE_S = 10_000  # a second viewer must see changes within 10 s


@pytest.fixture(autouse=True)
def _own_console_and_contexts(browser):
    """Each test judges its own console; pages left open (a failed test) do not poll into the next."""
    CONSOLE_ERRORS.clear()
    yield
    for ctx in list(browser.contexts):
        ctx.close()


def open_viewer(browser, setup, who, size, hash_="", help_seen=True, **context_options):  # noqa: F811
    ctx, page = new_page(browser, setup["cookies"](who) if who else None, size=size, **context_options)
    if help_seen:  # the help overlay is tested once; elsewhere it is already dismissed
        ctx.add_init_script("localStorage.setItem('terapan.help.dismissed', '1')")
    page.goto(f"{setup['url']}/p/{setup['pano'].slug}/{hash_}")
    wait_drawn(page)
    if who:
        page.wait_for_function("() => document.body.dataset.regionsLoaded !== undefined")
    if not hash_:  # the start view zooms in once the overview is drawn: wait for its tiles too
        page.wait_for_function("() => document.body.dataset.startView !== undefined")
        wait_drawn(page)
    return ctx, page


def osd_point(page, fx, fy):
    box = page.locator("#osd").bounding_box()
    return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy


def drag(page, start, end, steps=10):
    page.mouse.move(*start)
    page.mouse.down()
    for i in range(1, steps + 1):
        page.mouse.move(start[0] + (end[0] - start[0]) * i / steps, start[1] + (end[1] - start[1]) * i / steps)
    page.mouse.up()


def touch_drag(page, start, end, steps=10):
    """A one-finger drag as the phone's touchscreen sends it (CDP touch events)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": start[0], "y": start[1]}]})
    for i in range(1, steps + 1):
        x = start[0] + (end[0] - start[0]) * i / steps
        y = start[1] + (end[1] - start[1]) * i / steps
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
        page.wait_for_timeout(16)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def settled_view(page, quiet_ms=400, timeout_s=15):
    """The viewport once it has stopped moving (a closing drawer resizes and re-centres it for a while under load)."""
    last, deadline = None, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = page.evaluate(f"Terapan.readView(window.terapan.viewer, {W})")
        if view == last:
            return view
        last = view
        page.wait_for_timeout(quiet_ms)
    raise AssertionError(f"the viewport kept moving for {timeout_s} s: {last}")


def selected_handle_boxes(page, count=4):
    """The selected shape's handles, read in one go once all are laid out (Annotorious redraws them as the view moves)."""
    page.wait_for_function(
        """n => { const h = [...document.querySelectorAll('.a9s-annotation.selected .a9s-handle')];
             return h.length >= n && h.every(e => e.getBoundingClientRect().width > 0); }""",
        arg=count,
        timeout=LIVE_S,
    )
    return page.evaluate(
        """() => [...document.querySelectorAll('.a9s-annotation.selected .a9s-handle')].map(e => {
             const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width, height: r.height}; })"""
    )


def api_status(page, url, body, method="POST"):
    return page.evaluate(
        """async ([url, body, method]) => (await fetch(url, {method, headers: {'Content-Type': 'application/json',
            'X-CSRFToken': Terapan.csrf()}, body: JSON.stringify(body)})).status""",
        [url, body, method],
    )


def no_horizontal_scroll(page):
    from .test_site_e2e import OUTSIDE_JS

    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1") and not page.evaluate(
        OUTSIDE_JS
    )


def real_errors():
    # Allowed: the deliberate 403 probes (refused by role) and Chromium's own favicon request.
    return [e for e in CONSOLE_ERRORS if "403" not in e and not e.startswith("Failed to load resource")]


def test_live_review_between_two_browsers_desktop(browser, setup, artifacts):  # noqa: F811
    from webapp.review.models import Comment, Region

    t0 = time.monotonic()
    CONSOLE_ERRORS.clear()
    rita_ctx, rita = open_viewer(browser, setup, "rita", DESKTOP, "#x=1500&y=450&z=0.6")
    eddie_ctx, eddie = open_viewer(browser, setup, "eddie", DESKTOP, "#x=1500&y=450&z=0.6")
    revalidated: list[str] = []  # idle polls the browser revalidates by ETag (the server's 304 shows as 200 here)
    eddie.on(
        "response",
        lambda r: (
            "/changes/?since=" in r.url and r.request.all_headers().get("if-none-match") and revalidated.append(r.url)
        ),
    )

    for _ in range(40):  # nothing changes yet: the third poll at the latest is conditional
        if revalidated:
            break
        eddie.wait_for_timeout(250)
    assert revalidated, "no poll was a conditional request"

    # Reviewer draws a rectangle (drag) and comments with a mention; "Comment" works right after drawing.
    rita.click("#draw-tools button[data-tool=rect]")
    drag(rita, osd_point(rita, 0.35, 0.40), osd_point(rita, 0.50, 0.55))
    rita.wait_for_selector("#region-list li")
    rita.fill("#comment-body", "Seam across the red roof, @eddie please re-render.")
    rita.click("#comment-form button[type=submit]")
    rita.wait_for_selector("#thread li .mention")
    region = Region.objects.get()
    assert region.author.username == "rita" and region.w > 100 and region.h > 50
    assert f"region={region.pk}" in rita.evaluate("location.hash")

    # The editor's open viewer sees region, comment and a notification without reloading.
    eddie.wait_for_selector("#region-list li", timeout=LIVE_S)
    eddie.wait_for_function("() => document.querySelector('#region-list li .ncomments').textContent === '1 comment'")
    eddie.wait_for_function("() => !document.getElementById('notif-count').hidden", timeout=LIVE_S)
    assert eddie.locator("#notif-count").inner_text() == "1"
    eddie.click("#notif-button")
    eddie.wait_for_selector("#notif-items li.unread")
    eddie.click("#notif-items li a")  # a #comment= link on the same page opens the region there
    eddie.wait_for_selector(f"#comment-{Comment.objects.get().pk}.highlight")
    eddie.wait_for_function("() => document.getElementById('notif-count').hidden")

    # The editor replies and changes the status; the reviewer sees both live.
    eddie.click("#thread li .actions button.reply")
    assert eddie.locator("#reply-to").is_visible()
    eddie.type("#comment-body", "on it")
    eddie.click("#comment-form button[type=submit]")
    eddie.wait_for_selector("#thread .replies li")
    eddie.click("#status-buttons button[data-status=needs_rerender]")
    eddie.wait_for_selector("#status-buttons button.active[data-status=needs_rerender]")
    rita.wait_for_selector("#thread .replies li", timeout=LIVE_S)
    rita.wait_for_selector("#region-list li .status.st-needs_rerender", timeout=LIVE_S)
    reply = Comment.objects.exclude(parent=None).get()
    assert reply.parent.author.username == "rita" and reply.body.startswith("@rita on it")
    rita.wait_for_function("() => document.getElementById('notif-count').textContent === '1'", timeout=LIVE_S)

    # The reviewer may not change a status: no buttons, and the API refuses.
    assert rita.locator("#status-buttons").count() == 0
    status_url = rita.evaluate("window.terapan.config.api.status").replace("{id}", str(region.pk))
    assert api_status(rita, status_url, {"status": "approved"}) == 403

    # Resize: drag the rectangle's bottom-right handle; the new size is saved.
    before = (region.w, region.h)
    corner = max(selected_handle_boxes(rita), key=lambda b: b["x"] + b["y"])
    start = (corner["x"] + corner["width"] / 2, corner["y"] + corner["height"] / 2)
    drag(rita, start, (start[0] + 60, start[1] + 40))
    rita.wait_for_function("() => Number(document.body.dataset.shapeSaves || 0) >= 1")
    region.refresh_from_db()
    assert region.w > before[0] + 30 and region.h > before[1] + 20, (before, region.bbox)

    # Polygon by clicks and a double-click, as the tooltip says.
    rita.click("#draw-tools button[data-tool=polygon]")
    for fx, fy in ((0.62, 0.30), (0.75, 0.33), (0.72, 0.50)):
        rita.mouse.click(*osd_point(rita, fx, fy))
        rita.wait_for_timeout(120)
    rita.mouse.dblclick(*osd_point(rita, 0.63, 0.48))
    rita.wait_for_function("() => document.body.dataset.regions === '2'")
    poly = Region.objects.order_by("-pk").first()
    assert "polygon" in poly.target["selector"]["value"] and poly.target["selector"]["type"] == "SvgSelector"
    assert poly.w > 80 and poly.h > 50, poly.bbox
    # Moving one of its points is saved too.
    rita.wait_for_function(f"() => document.getElementById('detail-title').textContent.startsWith('Region #{poly.pk}')")
    saves = int(rita.evaluate("Number(document.body.dataset.shapeSaves || 0)"))
    top_left = min(selected_handle_boxes(rita, count=3), key=lambda b: b["x"] + b["y"])
    start = (top_left["x"] + top_left["width"] / 2, top_left["y"] + top_left["height"] / 2)
    drag(rita, start, (start[0] - 50, start[1] - 40))
    rita.wait_for_function(f"() => Number(document.body.dataset.shapeSaves || 0) > {saves}")
    moved = Region.objects.get(pk=poly.pk)
    assert moved.target["selector"]["value"] != poly.target["selector"]["value"]
    assert moved.x < poly.x - 20 and moved.y < poly.y - 15, (poly.bbox, moved.bbox)
    eddie.wait_for_function("() => document.body.dataset.regions === '2'", timeout=LIVE_S)

    # Editing one's own comment.
    rita.click(f"#region-list li[data-id='{region.pk}']")
    rita.wait_for_selector("#thread li .actions button.edit")
    rita.click("#thread li .actions button.edit")
    rita.fill("#thread textarea.edit-body", "Seam across the red roof and the chimney, @eddie please re-render.")
    rita.click("#thread .edit button.save")
    rita.wait_for_selector("#thread li .edited")
    assert "chimney" in Comment.objects.get(parent=None, region=region).body
    eddie.wait_for_function("() => document.getElementById('thread').textContent.includes('chimney')", timeout=LIVE_S)
    rita.screenshot(path=str(artifacts / "e2e-live-review.png"))
    eddie_ctx.close()

    # The owner approves from a region link; the reviewer's open viewer follows.
    olga_ctx, olga = open_viewer(browser, setup, "olga", DESKTOP, f"#region={region.pk}")
    olga.wait_for_selector("#status-buttons button.active[data-status=needs_rerender]")
    olga.click("#status-buttons button[data-status=approved]")
    rita.wait_for_selector(f"#region-list li[data-id='{region.pk}'] .status.st-approved", timeout=LIVE_S)
    olga_ctx.close()

    # A newly published version reaches the open viewers, a member's and an anonymous visitor's
    # (same tiles, version 2).
    from webapp.panoramas.models import Pyramid

    anon_ctx, anon = open_viewer(browser, setup, None, DESKTOP)

    v1 = setup["pyr"]
    v2 = Pyramid.objects.create(
        panorama=setup["pano"], version=2, path=v1.path, width=v1.width, height=v1.height, tile_size=v1.tile_size,
        overlap=v1.overlap, format=v1.format, state=Pyramid.State.READY,
    )  # fmt: skip
    setup["pano"].published_pyramid = v2
    setup["pano"].save()
    rita.wait_for_selector("#published a[href*='?v=2']", timeout=LIVE_S)
    # The visitor may only see the published version: the viewer switches to v2 in place, same view.
    view = anon.evaluate(f"Terapan.readView(window.terapan.viewer, {W})")
    anon.wait_for_function("() => document.body.dataset.version === '2'", timeout=LIVE_S)
    anon.wait_for_function(
        "() => { const i = window.terapan.viewer.world.getItemAt(0); return i && i.source.tilesUrl.includes('/v2/'); }"
    )
    wait_drawn(anon)
    assert anon.evaluate(f"Terapan.readView(window.terapan.viewer, {W})") == view
    rita_ctx.close()
    anon_ctx.close()

    # A viewer reads but cannot draw, comment or change a status.
    vera_ctx, vera = open_viewer(browser, setup, "vera", DESKTOP)
    assert vera.locator("#draw-tools, #comment-form, #status-buttons").count() == 0
    assert api_status(vera, status_url, {"status": "approved"}) == 403
    comments_url = vera.evaluate("window.terapan.config.api.comments").replace("{id}", str(region.pk))
    assert api_status(vera, comments_url, {"body": "hello"}) == 403
    vera_ctx.close()

    # A region link reopens that region (flies there); a comment link highlights the comment.
    ctx, page = open_viewer(browser, setup, "vera", DESKTOP, f"#region={poly.pk}")
    page.wait_for_function(f"() => document.getElementById('detail-title').textContent.startsWith('Region #{poly.pk}')")
    page.wait_for_function(f"() => location.hash.includes('region={poly.pk}') && location.hash.includes('z=')")
    view = page.evaluate(f"Terapan.readView(window.terapan.viewer, {W})")
    assert poly.x <= view["x"] <= poly.x + poly.w and poly.y <= view["y"] <= poly.y + poly.h, (view, poly.bbox)
    ctx.close()
    ctx, page = open_viewer(browser, setup, "rita", DESKTOP, f"#comment={reply.pk}")
    page.wait_for_selector(f"#comment-{reply.pk}.highlight")
    # The reviewer's view at desktop size, the image filling the viewer: the figure for docs/viewer.md.
    if os.environ.get("TERAPAN_UPDATE_SCREENSHOTS"):
        page.evaluate(
            f"Terapan.applyView(window.terapan.viewer, {{x: 1500, y: {H / 2}, "
            f"z: window.terapan.viewer.viewport.getContainerSize().y / {H}}}, true)"
        )
        wait_drawn(page)
        page.screenshot(path=str(artifacts.parent / "docs" / "images" / "viewer_desktop.png"))
    ctx.close()
    assert not real_errors(), real_errors()
    assert time.monotonic() - t0 < 90


def test_phone_layout_drawing_and_no_traps(browser, setup, artifacts):  # noqa: F811
    from webapp.review.models import Region

    CONSOLE_ERRORS.clear()
    url, slug = setup["url"], setup["pano"].slug

    # Anonymous first visit: start view fills the screen with a band, title and help shown.
    ctx, page = new_page(browser, size=DESKTOP)
    page.goto(f"{url}/p/{slug}/")
    wait_drawn(page)
    page.wait_for_function("() => document.body.dataset.startView === 'band'")
    osd_h = page.locator("#osd").bounding_box()["height"]
    z = page.evaluate(f"Terapan.readView(window.terapan.viewer, {W}).z")
    assert abs(z - osd_h / H) < 0.03, (z, osd_h / H)  # the image's height fills the viewer: no black bands
    assert page.locator("#start-title").is_visible() and page.locator("#help").is_visible()
    page.click("#help button[data-close]")
    page.reload()
    wait_drawn(page)
    assert page.locator("#help").is_hidden()  # remembered
    # Hand-edited link far outside the image and beyond the zoom limit: clamped.
    page.goto(f"{url}/p/{slug}/#x=99999&y=99999&z=50")
    page.reload()
    wait_drawn(page)
    view = page.evaluate(f"Terapan.readView(window.terapan.viewer, {W})")
    assert 0 <= view["x"] < W and 0 <= view["y"] <= H and view["z"] <= 4.0, view
    # r and f no longer rotate or flip.
    page.locator("#osd .openseadragon-canvas").first.focus()
    page.keyboard.press("r")
    page.keyboard.press("f")
    assert page.evaluate(
        "[window.terapan.viewer.viewport.getRotation(), window.terapan.viewer.viewport.getFlip()]"
    ) == [
        0,
        False,
    ]
    # Past the 360 seam and back: the view returns to the first turn (navigator box on the minimap).
    page.evaluate(
        "() => { const v = window.terapan.viewer.viewport; v.panTo(new OpenSeadragon.Point(v.getCenter().x + 1.3, v.getCenter().y)); }"
    )
    page.wait_for_function(
        "() => { const c = window.terapan.viewer.viewport.getCenter(); return c.x >= 0 && c.x < 1; }"
    )
    # Full screen keeps the zoom readout and the link button.
    page.evaluate("window.terapan.viewer.setFullPage(true)")
    page.wait_for_timeout(300)
    assert page.locator("#zoom-readout").is_visible() and page.locator("#share-link").is_visible()
    ctx.close()

    # Phone: the image fills the screen, the toolbar is one row, the panel is a drawer.
    ctx, page = open_viewer(browser, setup, "rita", PHONE, has_touch=True, is_mobile=True)
    page.wait_for_function("() => document.body.dataset.startView === 'band'")
    osd = page.locator("#osd").bounding_box()
    bar = page.locator("#toolbar").bounding_box()
    assert osd["width"] >= 389 and osd["height"] > 700, osd
    assert bar["height"] < 56, bar
    assert page.locator("#review-panel").is_hidden()
    assert no_horizontal_scroll(page)
    # Drawing with a finger from the top-left corner, where OpenSeadragon's buttons sit on a desktop.
    page.tap("#draw-tools button[data-tool=rect]")
    view_before = page.evaluate(f"Terapan.readView(window.terapan.viewer, {W})")
    touch_drag(page, osd_point(page, 0.03, 0.03), osd_point(page, 0.6, 0.3))
    page.wait_for_selector("#review-panel #region-list li")
    assert page.locator("#review-panel").is_visible()  # the drawer opened on the new region
    region = Region.objects.get()
    assert region.w > 100 and region.h > 50, region.bbox
    assert page.evaluate(f"Terapan.readView(window.terapan.viewer, {W})") == view_before  # drew, did not pan
    assert not page.evaluate("window.terapan.viewer.isFullPage()")
    page.fill("#comment-body", "From the phone: the roofs at the left edge are doubled.")
    page.click("#comment-form button[type=submit]")
    page.wait_for_selector("#thread li")
    assert no_horizontal_scroll(page)
    page.click("#panel-close")
    page.wait_for_function("() => !document.body.classList.contains('drawer-open')")
    if os.environ.get("TERAPAN_UPDATE_SCREENSHOTS"):
        page.click("#panel-toggle")
        page.wait_for_timeout(400)
        page.screenshot(path=str(artifacts.parent / "docs" / "images" / "viewer_phone.png"))
    # Every viewer page fits the phone: home, compare, viewer without a session.
    for path in ("/", f"/p/{slug}/compare/#x=1500&y=450&z=0.5"):
        page.goto(url + path)
        page.wait_for_load_state("load")
        assert no_horizontal_scroll(page), path
    ctx.close()
    assert not real_errors(), real_errors()


def test_compare_page_honours_its_link(browser, setup):  # noqa: F811
    CONSOLE_ERRORS.clear()
    ctx, page = new_page(browser, setup["cookies"]("eddie"), size=DESKTOP)
    page.goto(f"{setup['url']}/p/{setup['pano'].slug}/compare/#x=2100&y=400&z=0.8")
    page.wait_for_function("() => document.body.dataset.osdOpen === '1'")
    page.wait_for_timeout(300)
    view = page.evaluate(f"Terapan.readView(window.terapan.a, {W})")
    assert abs(view["x"] - 2100) <= 3 and abs(view["z"] - 0.8) < 0.01, view
    assert page.locator("#zoom-readout").inner_text().strip() == "80 %"
    ctx.close()
    assert not real_errors(), json.dumps(real_errors())


def tap(page, point, cdp):
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": point[0], "y": point[1]}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def test_polygon_by_finger_taps_on_a_phone(browser, setup):  # noqa: F811
    """Each tap adds a corner (Annotorious kept only the first: a tap sends no mousemove); a double tap closes it."""
    from webapp.review.models import Region

    CONSOLE_ERRORS.clear()
    ctx, page = open_viewer(browser, setup, "rita", PHONE, has_touch=True, is_mobile=True)
    page.tap("#draw-tools button[data-tool=polygon]")
    cdp = page.context.new_cdp_session(page)
    for fx, fy in ((0.3, 0.6), (0.6, 0.62), (0.5, 0.8)):
        tap(page, osd_point(page, fx, fy), cdp)
        page.wait_for_timeout(250)
    tap(page, osd_point(page, 0.3, 0.78), cdp)
    page.wait_for_timeout(100)
    tap(page, osd_point(page, 0.3, 0.78), cdp)
    page.wait_for_function("() => document.body.dataset.regions === '1'")
    poly = Region.objects.get()
    points = {p for p in poly.target["selector"]["value"].split('"')[1].split()}
    assert len(points) >= 4, poly.target
    assert poly.w > 80 and poly.h > 100, poly.bbox
    ctx.close()
    assert not real_errors(), real_errors()


def test_compare_controls_fit_a_phone(browser, setup):  # noqa: F811
    """Every compare control is on screen at 390 px (html's overflow-x: hidden hid "Curtain" past the edge)."""
    CONSOLE_ERRORS.clear()
    ctx, page = new_page(browser, setup["cookies"]("eddie"), size=PHONE)
    page.goto(f"{setup['url']}/p/{setup['pano'].slug}/compare/")
    page.wait_for_function("() => document.body.dataset.osdOpen === '1'")
    outside = page.evaluate(
        """() => [...document.querySelectorAll('.toolbar > *, .toolbar label, .toolbar button')]
             .filter(e => e.getBoundingClientRect().right > innerWidth + 1).map(e => e.textContent.trim())"""
    )
    assert outside == [], outside
    page.click("input[value=curtain]")
    assert page.locator("#compare.curtain").count() == 1
    pane = page.locator("#osd-a").bounding_box()
    assert pane["height"] > 500 and pane["y"] + pane["height"] <= PHONE[1] + 1, pane
    ctx.close()
    assert not real_errors(), real_errors()


def test_removed_member_is_told_and_polling_stops(browser, setup):  # noqa: F811
    """Removed from the panorama (or signed out elsewhere) with the viewer open: said so once, no endless 403s."""
    from webapp.panoramas.models import Membership

    CONSOLE_ERRORS.clear()
    ctx, page = open_viewer(browser, setup, "rita", DESKTOP)
    Membership.objects.filter(user__username="rita").delete()
    page.wait_for_function("() => document.getElementById('live').textContent === 'no access'", timeout=LIVE_S)
    assert "no longer have access" in page.locator("#review-error").inner_text()
    polls = page.evaluate("document.body.dataset.polls")
    page.wait_for_timeout(4000)  # more than one poll interval
    assert page.evaluate("document.body.dataset.polls") == polls
    ctx.close()
    assert not real_errors(), real_errors()


def test_long_names_and_words_stay_inside_the_panel(browser, setup, django_user_model):  # noqa: F811
    """A 150-character username (Django's limit) and a long unbroken comment do not run out of the review panel."""
    from webapp.panoramas.models import Membership
    from webapp.review.models import Comment, Region

    CONSOLE_ERRORS.clear()
    name = "u" * 150
    long = django_user_model.objects.create_user(name)
    Membership.objects.create(user=long, panorama=setup["pano"], role="reviewer")
    sel = {
        "type": "FragmentSelector",
        "conformsTo": "http://www.w3.org/TR/media-frags/",
        "value": "xywh=pixel:100,300,300,200",
    }
    region = Region.objects.create(
        panorama=setup["pano"], version=1, target={"selector": sel}, x=100, y=300, w=300, h=200, author=long
    )
    Comment.objects.create(region=region, author=long, body="W" * 600)
    for size in (DESKTOP, PHONE):
        ctx, page = open_viewer(browser, setup, "rita", size, f"#region={region.pk}")
        page.wait_for_function("() => document.getElementById('thread').textContent.includes('WWWW')")
        if not page.locator("#review-panel").is_visible():
            page.click("#panel-toggle")
        page.wait_for_timeout(400)  # the drawer slides in
        out = page.evaluate(
            """() => { const p = document.getElementById('review-panel').getBoundingClientRect();
                 return [...document.querySelectorAll('#review-panel *')].filter(e => {
                   const b = e.getBoundingClientRect(); return b.width > 0 && b.right > p.right + 1; })
                 .map(e => e.tagName + '.' + e.className); }"""
        )
        assert out == [], (size, out)
        ctx.close()
    assert not real_errors(), real_errors()


def test_resize_by_finger_on_a_phone_does_not_pan(browser, setup):  # noqa: F811
    """Dragging a handle by touch resizes by the whole drag (OpenSeadragon used to pan under the finger too)."""
    from webapp.review.models import Region

    CONSOLE_ERRORS.clear()
    ctx, page = open_viewer(browser, setup, "rita", PHONE, has_touch=True, is_mobile=True)
    page.tap("#draw-tools button[data-tool=rect]")
    touch_drag(page, osd_point(page, 0.2, 0.2), osd_point(page, 0.6, 0.35))
    page.wait_for_selector("#review-panel #region-list li")
    page.click("#panel-close")
    page.wait_for_function("() => !document.body.classList.contains('drawer-open')")
    region = Region.objects.get()
    view = settled_view(page)
    corner = max(selected_handle_boxes(page), key=lambda b: b["x"] + b["y"])
    start = (corner["x"] + corner["width"] / 2, corner["y"] + corner["height"] / 2)
    touch_drag(page, start, (start[0] + 50, start[1] + 60))
    page.wait_for_function("() => Number(document.body.dataset.shapeSaves || 0) >= 1")
    resized = Region.objects.get()
    grow_w, grow_h = (resized.w - region.w) * view["z"], (resized.h - region.h) * view["z"]  # in screen pixels
    assert abs(grow_w - 50) < 8 and abs(grow_h - 60) < 8, (region.bbox, resized.bbox, view)
    assert page.evaluate(f"Terapan.readView(window.terapan.viewer, {W})") == view
    ctx.close()
    assert not real_errors(), real_errors()
