"""Who may do what, over every URL the site serves.

MATRIX lists, for each non-admin endpoint and each request kind, the status
every actor gets on a private and on a public panorama. Actors: owner, the
three member roles, an outsider (logged in, no membership), anonymous and a
staff superuser. URL patterns are enumerated from webapp.urls: an endpoint
missing from MATRIX fails test_every_endpoint_is_in_the_matrix, and every
admin URL (admin/, admin/rq/, admin/ingest/) is swept for staff-only access.
Also: CSRF on every state change, tile path traversal, security headers,
request size limits and `manage.py check --deploy`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
ACTORS = ("owner", "editor", "reviewer", "viewer", "outsider", None, "staff")
MEMBERS = ("owner", "editor", "reviewer", "viewer", "staff")
RECT = {"selector": {"type": "FragmentSelector", "value": "xywh=pixel:10,10,50,40"}}


# ------------------------------------------------------------------ world
@dataclass
class World:
    panos: dict[str, Any]
    users: dict[str, Any]
    media: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def pyr(self, which: str) -> Any:
        return self.panos[which].published_pyramid

    def region(self, which: str) -> Any:
        """A fresh region authored by the reviewer (so a DELETE never runs out)."""
        from webapp.review.models import Comment, Region

        r = Region.objects.create(
            panorama=self.panos[which], version=self.pyr(which).version, target=RECT,
            x=10, y=10, w=50, h=40, author=self.users["reviewer"],
        )  # fmt: skip
        Comment.objects.create(region=r, author=self.users["reviewer"], body="first")
        return r

    def fresh_member(self, which: str) -> int:
        """A new viewer of the panorama (so a removal never runs out); its user id."""
        from django.contrib.auth import get_user_model

        from webapp.panoramas.models import Membership

        user = get_user_model().objects.create_user(f"sec-fresh-{secrets.token_hex(4)}")
        Membership.objects.create(user=user, panorama=self.panos[which], role="viewer")
        return user.pk

    def fresh_invitation(self, which: str, invitee: Any = None) -> tuple[Any, str]:
        from webapp.accounts.models import Invitation

        return Invitation.issue(self.panos[which], "fresh@example.org", "viewer", self.users["owner"], invitee=invitee)


def _make_pyramid_source(path: Path, seed: int) -> Path:
    import numpy as np
    import pyvips

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    pyvips.Image.new_from_array(img).write_to_file(str(path))
    return path


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, tmp_path_factory) -> Any:
    """Built once per module (committed), torn down at the end; each test's own
    changes roll back with its transaction."""
    from django.contrib.auth import get_user_model
    from django.test import override_settings

    from processing.tiles.pyramid import PyramidParams, build_pyramid
    from webapp.panoramas.models import Frame, Job, Membership, Panorama, Pyramid, Stack, SubPanorama
    from webapp.panoramas.models import Status as St

    media = tmp_path_factory.mktemp("security-media")
    src_dir = tmp_path_factory.mktemp("security-src")
    hashers = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    with override_settings(MEDIA_ROOT=media, PASSWORD_HASHERS=hashers), django_db_blocker.unblock():
        User = get_user_model()
        users: dict[str, Any] = {
            n: User.objects.create_user(f"sec-{n}", password="pw")
            for n in ("owner", "editor", "reviewer", "viewer", "outsider")
        }
        users["staff"] = User.objects.create_superuser("sec-staff", password="pw-staff")
        panos = {}
        for i, (which, slug) in enumerate((("private", "secret-pano"), ("public", "open-pano"))):
            pano = Panorama.objects.create(slug=slug, title=slug, is_public=which == "public", owner=users["owner"])
            for role in ("editor", "reviewer", "viewer"):
                Membership.objects.create(user=users[role], panorama=pano, role=role)
            rel = f"panoramas/{pano.pk}/pyramids/v1"
            info = build_pyramid(
                _make_pyramid_source(src_dir / f"{slug}.png", i), media / rel, PyramidParams(tile_size=64)
            )
            pyr = Pyramid.objects.create(
                panorama=pano, version=1, path=rel, width=info["width"], height=info["height"],
                tile_size=64, overlap=1, format="jpg", state=Pyramid.State.READY,
            )  # fmt: skip
            pano.published_pyramid = pyr
            pano.save()
            panos[which] = pano
        w = World(panos, users, media)
        sub = SubPanorama.objects.create(panorama=panos["private"], name="main")
        stack = Stack.objects.create(subpanorama=sub, name="s0", footprint={"x": 0, "y": 0, "w": 10, "h": 10})
        frame = Frame.objects.create(stack=stack, original_path="/nonexistent/f0.jpg")
        job = Job.objects.create(kind=Job.Kind.INGEST, status=St.DONE, params={"slug": "secret-pano"})
        try:
            from webapp.ingest.jobs import thumbs_dir

            tdir = thumbs_dir(stack)
            tdir.mkdir(parents=True, exist_ok=True)
            (tdir / f"{frame.pk}.jpg").write_bytes(b"\xff\xd8\xff\xe0 thumb")
        except ImportError:
            pass
        w.extra.update(stack=stack, frame=frame, job=job)
        try:
            yield w
        finally:
            Job.objects.filter(pk=job.pk).delete()
            Panorama.objects.filter(pk__in=[p.pk for p in panos.values()]).delete()
            User.objects.filter(pk__in=[u.pk for u in users.values()]).delete()


@pytest.fixture(autouse=True)
def _media(world: World, settings) -> None:
    # Function-scoped settings fixtures (the webapp conftest's) must not undo the module's MEDIA_ROOT.
    settings.MEDIA_ROOT = world.media


def client(w: World, actor: str | None, csrf: bool = False) -> Client:
    c = Client(enforce_csrf_checks=csrf)
    if actor is not None:
        c.force_login(w.users[actor])
    return c


# ----------------------------------------------------------------- matrix
@dataclass(frozen=True)
class Probe:
    name: str  # URL name (namespace:name)
    method: str
    url: Callable[[World, str], str]  # (world, "private"|"public") -> URL
    private: dict[str | None, int]
    public: dict[str | None, int]
    body: dict[str, Any] | None = None
    redirect: tuple[str, ...] = ()  # where its 302s go, when not to a sign-in page

    def expected(self, which: str) -> dict[str | None, int]:
        return self.private if which == "private" else self.public


def _all(status: int) -> dict[str | None, int]:
    return dict.fromkeys(ACTORS, status)


def _members(ok: int, outsider: int, anon: int) -> dict[str | None, int]:
    return {**dict.fromkeys(MEMBERS, ok), "outsider": outsider, None: anon}


def _ranked(ok: int, minimum: str, outsider: int, anon: int) -> dict[str | None, int]:
    """OK from role MINIMUM up (staff counts as owner), 403 below it."""
    order = ("viewer", "reviewer", "editor", "owner")
    out: dict[str | None, int] = {r: ok if order.index(r) >= order.index(minimum) else 403 for r in order}
    out.update({"staff": ok, "outsider": outsider, None: anon})
    return out


def _staff_only(ok: int = 200) -> dict[str | None, int]:
    # staff_member_required sends everyone else to the admin login (302).
    return {**dict.fromkeys(ACTORS, 302), "staff": ok}


def _tile(w: World, p: str) -> str:
    pyr = w.pyr(p)
    return reverse(
        "viewer:tile",
        kwargs={"pyramid_id": pyr.pk, "version": pyr.version, "level": 0, "col": 0, "row": 0, "fmt": pyr.format},
    )


def _dzi(w: World, p: str) -> str:
    pyr = w.pyr(p)
    return reverse("viewer:dzi", kwargs={"pyramid_id": pyr.pk, "version": pyr.version})


def _slug(w: World, p: str) -> str:
    return w.panos[p].slug


def _region_url(name: str) -> Callable[[World, str], str]:
    return lambda w, p: reverse(name, kwargs={"pk": w.region(p).pk})


def _slugged(name: str, suffix: str = "") -> Callable[[World, str], str]:
    return lambda w, p: reverse(name, kwargs={"slug": _slug(w, p)}) + suffix


def _member_url(name: str) -> Callable[[World, str], str]:
    return lambda w, p: reverse(name, kwargs={"slug": _slug(w, p), "user_id": w.fresh_member(p)})


def _thumb(w: World, p: str) -> str:
    return reverse("sharing:thumbnail", kwargs={"slug": _slug(w, p), "pyramid_id": w.pyr(p).pk})


def _iiif_tile(w: World, p: str) -> str:
    return reverse(
        "sharing:iiif_image",
        kwargs={
            "slug": _slug(w, p),
            "region": "0,0,64,64",
            "size": "64,64",
            "rotation": "0",
            "quality": "default",
            "fmt": "jpg",
        },
    )


SIGNED_IN = ("owner", "editor", "reviewer", "viewer", "outsider", "staff")


def _anon_only(anon: int, others: int) -> dict[str | None, int]:
    return {**dict.fromkeys(SIGNED_IN, others), None: anon}


def _comment_url(w: World, p: str) -> str:
    return reverse("review:comment", kwargs={"pk": w.region(p).comments.get().pk})


# Private panoramas: outsiders and anonymous users learn nothing (404; pages send
# anonymous users to the login). Public ones: anyone sees the published
# pyramid; the review API stays members-only (403).
MATRIX: list[Probe] = [
    Probe("viewer:home", "GET", lambda w, p: reverse("viewer:home"), _all(200), _all(200)),
    Probe(
        "viewer:panorama", "GET", lambda w, p: reverse("viewer:panorama", kwargs={"slug": _slug(w, p)}),
        _members(200, 404, 302), _all(200),
    ),
    Probe(
        "viewer:compare", "GET", lambda w, p: reverse("viewer:compare", kwargs={"slug": _slug(w, p)}),
        _members(200, 404, 404), _all(200),
    ),
    Probe(
        "viewer:published", "GET", lambda w, p: reverse("viewer:published", kwargs={"slug": _slug(w, p)}),
        _members(200, 404, 404), _all(200),
    ),
    Probe("viewer:dzi", "GET", _dzi, _members(200, 404, 404), _all(200)),
    Probe("viewer:tile", "GET", _tile, _members(200, 404, 404), _all(200)),
    Probe(
        "review:annotations", "GET", lambda w, p: reverse("review:annotations", kwargs={"slug": _slug(w, p)}),
        _members(200, 404, 404), _members(200, 403, 403),
    ),
    Probe(
        "review:annotations", "POST", lambda w, p: reverse("review:annotations", kwargs={"slug": _slug(w, p)}),
        _ranked(201, "reviewer", 404, 404), _ranked(201, "reviewer", 403, 403),
        body={"target": RECT, "comment": "look here"},
    ),
    Probe(
        "review:stacks", "GET", lambda w, p: reverse("review:stacks", kwargs={"slug": _slug(w, p)}),
        _members(200, 404, 404), _members(200, 403, 403),
    ),
    Probe(
        "review:annotation", "GET", _region_url("review:annotation"),
        _members(200, 404, 404), _members(200, 403, 403),
    ),
    # The region's author is the reviewer; editors and owners may change anyone's.
    Probe(
        "review:annotation", "PUT", _region_url("review:annotation"),
        _ranked(200, "reviewer", 404, 404), _ranked(200, "reviewer", 403, 403), body={"target": RECT},
    ),
    Probe(
        "review:annotation", "PATCH", _region_url("review:annotation"),
        _ranked(200, "reviewer", 404, 404), _ranked(200, "reviewer", 403, 403), body={"target": RECT},
    ),
    Probe(
        "review:annotation", "DELETE", _region_url("review:annotation"),
        _ranked(200, "reviewer", 404, 404), _ranked(200, "reviewer", 403, 403),
    ),
    Probe(
        "review:comments", "GET", _region_url("review:comments"),
        _members(200, 404, 404), _members(200, 403, 403),
    ),
    Probe(
        "review:comments", "POST", _region_url("review:comments"),
        _ranked(201, "reviewer", 404, 404), _ranked(201, "reviewer", 403, 403), body={"body": "agreed"},
    ),
    Probe(
        "review:status", "POST", _region_url("review:status"),
        _ranked(200, "editor", 404, 404), _ranked(200, "editor", 403, 403), body={"status": "approved"},
    ),
    # Sharing: the home page, thumbnails, embed, exports and IIIF follow the viewer's rules.
    Probe("sharing:home", "GET", lambda w, p: reverse("sharing:home"), _all(200), _all(200)),
    Probe(
        "sharing:favicon", "GET", lambda w, p: reverse("sharing:favicon"), _all(301), _all(301),
        redirect=("/static/sharing/favicon.svg",),
    ),
    Probe("sharing:thumbnail", "GET", _thumb, _members(200, 404, 404), _all(200)),
    Probe("sharing:embed", "GET", _slugged("sharing:embed"), _members(200, 404, 404), _all(200)),
    Probe("sharing:export", "GET", _slugged("sharing:export"), _members(200, 404, 404), _all(200)),
    Probe(
        "sharing:export_image", "GET", _slugged("sharing:export_image", "?width=30"),
        _members(200, 404, 404), _all(200),
    ),
    Probe("sharing:iiif_base", "GET", _slugged("sharing:iiif_base"), _members(303, 404, 404), _all(303)),
    Probe("sharing:iiif_info", "GET", _slugged("sharing:iiif_info"), _members(200, 404, 404), _all(200)),
    Probe("sharing:iiif_image", "GET", _iiif_tile, _members(200, 404, 404), _all(200)),
    # Site sign-in: open to everyone; the signed-in are sent on from the login form.
    Probe(
        "accounts:login", "GET", lambda w, p: reverse("accounts:login"), _anon_only(200, 302), _anon_only(200, 302),
        redirect=("/",),
    ),
    Probe("accounts:logout", "POST", lambda w, p: reverse("accounts:logout"), _all(302), _all(302), redirect=("/",)),
    Probe("accounts:password_reset", "GET", lambda w, p: reverse("accounts:password_reset"), _all(200), _all(200)),
    Probe(
        "accounts:password_reset", "POST", lambda w, p: reverse("accounts:password_reset"), _all(302), _all(302),
        body={"email": "nobody@example.org"}, redirect=("/accounts/password-reset/sent/",),
    ),
    Probe("accounts:password_reset_done", "GET", lambda w, p: reverse("accounts:password_reset_done"), _all(200), _all(200)),
    Probe(
        "accounts:password_reset_confirm", "GET",
        lambda w, p: reverse("accounts:password_reset_confirm", kwargs={"uidb64": "MQ", "token": "bad-token"}),
        _all(200), _all(200),
    ),
    Probe(
        "accounts:password_reset_complete", "GET", lambda w, p: reverse("accounts:password_reset_complete"),
        _all(200), _all(200),
    ),
    Probe(
        "accounts:accept", "GET", lambda w, p: reverse("accounts:accept", kwargs={"token": w.fresh_invitation(p)[1]}),
        _all(200), _all(200),
    ),
    # An invitation addressed to the outsider's account: only that account may answer it.
    Probe(
        "accounts:respond", "POST",
        lambda w, p: reverse("accounts:respond", kwargs={"pk": w.fresh_invitation(p, w.users["outsider"])[0].pk}),
        {**dict.fromkeys(SIGNED_IN, 404), "outsider": 302, None: 302},
        {**dict.fromkeys(SIGNED_IN, 404), "outsider": 302, None: 302},
        redirect=("/p/", "/accounts/login/"),
    ),
    # Membership pages: owners (and staff superusers) only; other members 403, outsiders 404.
    Probe("accounts:members", "GET", _slugged("accounts:members"), _ranked(200, "owner", 404, 302), _ranked(200, "owner", 404, 302)),
    Probe(
        "accounts:invite", "POST", _slugged("accounts:invite"), _ranked(302, "owner", 404, 302),
        _ranked(302, "owner", 404, 302), body={"who": "new@example.org", "role": "viewer"},
        redirect=("/p/", "/accounts/login/"),
    ),
    Probe(
        "accounts:presentation",
        "POST",
        _slugged("accounts:presentation"),
        _ranked(302, "owner", 404, 302),
        _ranked(302, "owner", 404, 302),
        body={"title": "Renamed", "description": "", "credits": "", "embed_origins": ""},
        redirect=("/p/", "/accounts/login/"),
    ),
    Probe(
        "accounts:change_role", "POST", _member_url("accounts:change_role"), _ranked(302, "owner", 404, 302),
        _ranked(302, "owner", 404, 302), body={"role": "reviewer"}, redirect=("/p/", "/accounts/login/"),
    ),
    Probe(
        "accounts:remove", "POST", _member_url("accounts:remove"), _ranked(302, "owner", 404, 302),
        _ranked(302, "owner", 404, 302), body={}, redirect=("/p/", "/accounts/login/"),
    ),
    Probe(
        "accounts:revoke", "POST",
        lambda w, p: reverse("accounts:revoke", kwargs={"slug": _slug(w, p), "pk": w.fresh_invitation(p)[0].pk}),
        _ranked(302, "owner", 404, 302), _ranked(302, "owner", 404, 302), body={}, redirect=("/p/", "/accounts/login/"),
    ),
    Probe(
        "review:changes", "GET", lambda w, p: reverse("review:changes", kwargs={"slug": _slug(w, p)}) + "?since=0",
        _members(200, 404, 404), _members(200, 403, 403),
    ),
    Probe(
        "review:comment", "GET", _comment_url,
        _members(200, 404, 404), _members(200, 403, 403),
    ),
    # Only a comment's author (the reviewer here) edits it, whatever the others' rank.
    Probe(
        "review:comment", "PATCH", _comment_url,
        {**_members(403, 404, 404), "reviewer": 200}, {**_members(403, 403, 403), "reviewer": 200},
        body={"body": "edited"},
    ),
    # A user's own notifications: any signed-in user, whatever the panorama.
    Probe(
        "review:notifications", "GET", lambda w, p: reverse("review:notifications"),
        {**_all(200), None: 403}, {**_all(200), None: 403},
    ),
    Probe(
        "review:notifications_read", "POST", lambda w, p: reverse("review:notifications_read"),
        {**_all(200), None: 403}, {**_all(200), None: 403}, body={"all": True},
    ),
    Probe("ingest:index", "GET", lambda w, p: reverse("ingest:index"), _staff_only(), _staff_only()),
    Probe(
        "ingest:index", "POST", lambda w, p: reverse("ingest:index"), _staff_only(400), _staff_only(400),
        body={"slug": "x", "folder": "/etc"},  # staff: a folder outside the import roots -> form error
    ),
    Probe(
        "ingest:job", "GET", lambda w, p: reverse("ingest:job", kwargs={"job_id": w.extra["job"].pk}),
        _staff_only(), _staff_only(),
    ),
    Probe(
        "ingest:thumb", "GET",
        lambda w, p: reverse("ingest:thumb", kwargs={"stack_id": w.extra["stack"].pk, "frame_id": w.extra["frame"].pk}),
        _staff_only(), _staff_only(),
    ),
]  # fmt: skip

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def _send(c: Client, method: str, url: str, body: dict[str, Any] | None, form: bool = False) -> Any:
    if body is None:
        return getattr(c, method.lower())(url)
    if form:
        return getattr(c, method.lower())(url, body)
    return getattr(c, method.lower())(url, data=json.dumps(body), content_type="application/json")


def _present(name: str) -> bool:
    try:
        reverse(name, kwargs=None)
    except Exception as e:  # noqa: BLE001 - NoReverseMatch for missing args means it exists
        return "not a valid view function or pattern name" not in str(e) and "is not a registered namespace" not in str(
            e
        )
    return True


def _probe_id(p: Probe) -> str:
    return f"{p.method} {p.name}"


@pytest.mark.parametrize("probe", MATRIX, ids=[_probe_id(p) for p in MATRIX])
def test_access_matrix(probe: Probe, world: World) -> None:
    if not _present(probe.name):
        pytest.skip(f"{probe.name} is not installed")
    wrong = []
    clients = {actor: client(world, actor) for actor in ACTORS}
    for which in ("private", "public"):
        for actor, want in probe.expected(which).items():
            url = probe.url(world, which)
            r = _send(
                clients[actor], probe.method, url, probe.body, form=probe.name.startswith(("ingest:", "accounts:"))
            )
            got = r.status_code
            if got != want:
                wrong.append(f"{which} {actor or 'anonymous'}: {probe.method} {url} -> {got}, expected {want}")
            if got == 302 and want == 302:
                loc = r["Location"]
                # The site sign-in (webapp/accounts) for site pages, the admin's own for admin pages.
                if not loc.startswith(probe.redirect or ("/admin/login/", reverse("admin:login"), "/accounts/login/")):
                    wrong.append(f"{which} {actor}: redirected to {loc}, not the login")
    assert not wrong, "\n".join(wrong)


def test_home_lists_only_what_you_may_see(world: World) -> None:
    for actor in ACTORS:
        body = client(world, actor).get("/").content.decode()
        assert "open-pano" in body
        assert ("secret-pano" in body) == (actor in MEMBERS), actor


# ------------------------------------------------------- URL enumeration
def _walk(patterns: list[Any], prefix: str = "", ns: str | None = None):
    for p in patterns:
        if isinstance(p, URLResolver):
            sub_ns = ":".join(x for x in (ns, p.namespace) if x) or None
            yield from _walk(p.url_patterns, prefix + str(p.pattern), sub_ns)
        elif isinstance(p, URLPattern):
            name = f"{ns}:{p.name}" if ns and p.name else (p.name or "")
            yield prefix + str(p.pattern), name


ALL_ROUTES = list(_walk(get_resolver().url_patterns))


def test_every_endpoint_is_in_the_matrix() -> None:
    """A new view must be added to MATRIX (or live under admin/, swept below)."""
    covered = {p.name for p in MATRIX}
    missing = sorted(
        f"{route} ({name or 'unnamed'})"
        for route, name in ALL_ROUTES
        if not route.startswith("admin/") and name not in covered
    )
    assert not missing, "endpoints without an access test:\n" + "\n".join(missing)


def _concrete(route: str) -> list[str]:
    """Request paths for ROUTE with placeholder arguments."""
    if "^" in route:  # django-rq's regex routes (stats.json with an optional token)
        base = "/" + route.split("^")[0] + "stats.json/"
        return [base, base + "guessed-token/"] if "token" in route else [base]
    out = re.sub(r"<int:[^>]+>", "1", route)
    out = re.sub(r"<[^>]+>", "x", out)
    return ["/" + out]


# Admin URLs anyone may load (the login form) or that refuse GET outright.
ADMIN_PUBLIC = {"admin/login/": {200}, "admin/logout/": {302, 405}}


@pytest.mark.parametrize("actor", [None, "outsider", "owner"])
def test_admin_is_staff_only(world: World, actor: str | None) -> None:
    """Every URL under admin/ (Django admin, django-rq, ingest): no non-staff 200s.

    The panorama owner is no staff member: owning a panorama gives no admin.
    """
    c = client(world, actor)
    wrong = []
    routes = [(r, n) for r, n in ALL_ROUTES if r.startswith("admin/")]
    assert any(r.startswith("admin/rq/") for r, _ in routes) and any(r.startswith("admin/ingest/") for r, _ in routes)
    routes.sort(key=lambda rn: rn[0] == "admin/logout/")  # logging out last keeps the session
    for route, name in routes:
        allowed = ADMIN_PUBLIC.get(route, {302, 401, 403, 404, 405})
        for url in _concrete(route):
            for method in ("get", "post"):
                r = getattr(c, method)(url)
                status = r.status_code
                ok = status in allowed
                if route in ADMIN_PUBLIC:
                    ok = status in (allowed if method == "get" else {200, 302, 403, 405})  # login form, logout
                elif status == 302:
                    ok = r["Location"].startswith("/admin/login/")
                if not ok:
                    wrong.append(f"{method.upper()} {url} ({name}) -> {status}")
    assert not wrong, "\n".join(wrong)


def test_staff_reaches_admin_rq_and_ingest(world: World) -> None:
    c = client(world, "staff")
    assert c.get("/admin/").status_code == 200
    assert c.get(reverse("django_rq:home")).status_code == 200
    if _present("ingest:index"):
        assert c.get(reverse("ingest:index")).status_code == 200


# ---------------------------------------------------------------- CSRF
@pytest.mark.parametrize("probe", [p for p in MATRIX if p.method in STATE_CHANGING], ids=lambda p: _probe_id(p))
def test_csrf_on_every_state_change(probe: Probe, world: World) -> None:
    if not _present(probe.name):
        pytest.skip(f"{probe.name} is not installed")
    actor = "staff" if probe.name.startswith("ingest:") else "owner"
    form = probe.name.startswith(("ingest:", "accounts:"))
    c = client(world, actor, csrf=True)
    r = _send(c, probe.method, probe.url(world, "private"), probe.body, form=form)
    assert r.status_code == 403, f"{probe.method} {probe.name} without a CSRF token -> {r.status_code}"
    # With the token (cookie + header, as review.js sends it) the same request passes.
    c.get(reverse("viewer:panorama", kwargs={"slug": "secret-pano"}))
    token = c.cookies["csrftoken"].value
    url = probe.url(world, "private")
    if form:
        r = c.post(url, {**(probe.body or {}), "csrfmiddlewaretoken": token})
    else:
        data = json.dumps(probe.body) if probe.body is not None else None
        kw = {"data": data, "content_type": "application/json"} if data else {}
        r = getattr(c, probe.method.lower())(url, HTTP_X_CSRFTOKEN=token, **kw)
    assert r.status_code == probe.private["staff" if form else "owner"], r.content[:300]


def test_csrf_on_admin_login_and_logout(world: World) -> None:
    c = Client(enforce_csrf_checks=True)
    assert c.post("/admin/login/", {"username": "staff", "password": "pw-staff"}).status_code == 403
    c = client(world, "staff", csrf=True)
    assert c.post("/admin/logout/").status_code == 403


# ------------------------------------------------------------ traversal
TRAVERSALS = [
    "image_files/0/../../../../../../../etc/passwd",
    "image_files/0/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "image_files/%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "image_files/0/%252e%252e%252f%252e%252e%252fsecret.txt",  # double-encoded
    "image_files/0/..%252f..%252fsecret.txt",
    "image_files//etc/passwd",  # absolute
    "image_files/0/%2Fetc%2Fpasswd",
    "image_files/0/..\\..\\..\\secret.txt",  # backslashes
    "image_files/0/..%5c..%5c..%5csecret.txt",
    "image_files/0/0_0.jpg%00../../secret.txt",  # NUL
    "image_files/0/0_0.jpg\x00.txt",
    "image.dzi/../../../secret.txt",
    "image_files/0/0_0.jpg/../../../../secret.txt",
    "image_files/-1/0_0.jpg",
    "image_files/0/0_-1.jpg",
    "image_files/99999999999999999999/0_0.jpg",
]


@pytest.mark.parametrize("tail", TRAVERSALS)
def test_tile_traversal_never_leaves_the_pyramid(world: World, tail: str, tmp_path: Path) -> None:
    pyr = world.pyr("private")
    pyr_dir = world.media / pyr.path
    # Files an attacker would like: beside the pyramid, in MEDIA_ROOT and outside it.
    for d in (pyr_dir.parent, world.media, tmp_path):
        (d / "secret.txt").write_text("TOP SECRET")
    base = f"/tiles/{pyr.pk}/v{pyr.version}/"
    for actor in ("owner", None):
        r = client(world, actor).get(base + tail)
        body = b"".join(r.streaming_content) if getattr(r, "streaming", False) else r.content
        assert b"TOP SECRET" not in body and b"root:" not in body, (actor, tail)
        if r.status_code == 200:  # only the pyramid's own files, to members
            assert actor == "owner"
            assert body[:3] == b"\xff\xd8\xff" or body.startswith(b"<?xml"), body[:40]
        else:
            assert r.status_code in (301, 400, 404), (actor, tail, r.status_code)


def test_symlinks_planted_in_the_pyramid_are_refused(world: World, tmp_path: Path) -> None:
    pyr = world.pyr("public")
    files = world.media / pyr.path / "image_files"
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8\xff TOP SECRET")
    tile = files / "0" / "0_0.jpg"
    tile.unlink()
    tile.symlink_to(secret)
    url = _tile(world, "public")
    assert client(world, None).get(url).status_code == 404
    # A whole level folder replaced by a symlink to the outside.
    outside = tmp_path / "level"
    (files / "1").rename(outside)
    (files / "1").symlink_to(outside)
    url1 = url.replace("/image_files/0/", "/image_files/1/")
    assert client(world, "owner").get(url1).status_code == 404
    # The DZI itself as a symlink to a file outside.
    dzi = world.media / pyr.path / "image.dzi"
    dzi.rename(tmp_path / "image.dzi")
    dzi.symlink_to(tmp_path / "image.dzi")
    assert client(world, None).get(_dzi(world, "public")).status_code == 404


# -------------------------------------------------------------- headers
def test_security_headers(world: World) -> None:
    pyr = world.pyr("public")
    region = world.region("private")
    pages = {
        "home": ("/", None),
        "viewer": (reverse("viewer:panorama", kwargs={"slug": "open-pano"}), None),
        "tile": (_tile(world, "public"), None),
        "dzi": (_dzi(world, "public"), None),
        "api": (reverse("review:annotation", kwargs={"pk": region.pk}), "owner"),
        "api error": (reverse("review:annotation", kwargs={"pk": region.pk}), None),
        "404": ("/no/such/page/", None),
        "admin login": ("/admin/login/", None),
    }
    assert pyr is not None
    for what, (url, actor) in pages.items():
        r = client(world, actor).get(url)
        h = r.headers
        assert h.get("X-Content-Type-Options") == "nosniff", what
        assert h.get("Referrer-Policy") == "same-origin", what
        assert h.get("X-Frame-Options") == "DENY", what
        assert h.get("Cross-Origin-Opener-Policy") == "same-origin", what
        csp = h.get("Content-Security-Policy", "")
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp, what
        if not url.startswith("/admin/"):
            script = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
            assert script.split()[1:] == ["'self'"], f"{what}: {script}"
        assert "img-src 'self' data: blob:" in csp
        assert "camera=()" in h.get("Permissions-Policy", "")


def test_viewer_page_has_no_inline_script(world: World) -> None:
    """script-src 'self' holds only if pages carry no inline code (json_script data is inert)."""
    for slug, actor in (("open-pano", None), ("secret-pano", "owner")):
        html = client(world, actor).get(reverse("viewer:panorama", kwargs={"slug": slug})).content.decode()
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag or 'type="application/json"' in tag, tag
        assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"


# ------------------------------------------------------------ size limits
def test_request_size_limits(world: World, settings) -> None:
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE <= 10 * 2**20
    c = client(world, "owner")
    url = reverse("review:annotations", kwargs={"slug": "secret-pano"})
    too_big = settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1024
    body = json.dumps({"target": RECT, "comment": "x" * too_big})
    r = c.post(url, data=body, content_type="application/json")
    assert r.status_code in (400, 413), r.status_code
    # Under Django's limit but above the API's own cap.
    r = c.post(url, data=json.dumps({"target": RECT, "comment": "x" * 100_000}), content_type="application/json")
    assert r.status_code in (400, 413)
    region = world.region("private")
    r = c.post(
        reverse("review:comments", kwargs={"pk": region.pk}),
        data=json.dumps({"body": "y" * 5001}),
        content_type="application/json",
    )
    assert r.status_code == 400
    # Form posts: too many fields.
    staff = client(world, "staff")
    fields = {f"f{i}": "1" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 10)}
    if _present("ingest:index"):
        assert staff.post(reverse("ingest:index"), fields).status_code == 400


def test_malformed_json_is_400_not_500(world: World) -> None:
    c = client(world, "owner")
    url = reverse("review:annotations", kwargs={"slug": "secret-pano"})
    for body in (b"{", b"\xff\xfe", b"[]", b"null", b'{"target": {"selector": 5}}', b'{"target": ' * 5000):
        r = c.post(url, data=body, content_type="application/json")
        assert r.status_code == 400, (body[:20], r.status_code)


# ----------------------------------------------------------- deploy check
def test_check_deploy_is_clean(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "DATABASE_URL", "SECURE_SSL_REDIRECT", "DJANGO_ALLOW_ASYNC_UNSAFE")
    }
    env.update(
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="terapan.example.org",
        MEDIA_ROOT=str(tmp_path / "media"),
    )
    # TERAPAN_VAR_DIR stays the test one: the embedded Redis already running there is reused.
    r = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no issues" in r.stdout
