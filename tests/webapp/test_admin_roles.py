"""Issue 15: the admin respects Django's model permissions and panorama roles.

Every admin URL is tried with a staff user who holds no role on the (private)
panorama, once without any permission and once with every model permission:
none of them shows or changes anything of that panorama. An editor with the
permissions gets through, so the checks are not simply closed.
"""

from __future__ import annotations

from pathlib import Path

import django_rq
import pytest
from django.contrib.auth.models import Permission
from django.urls import URLPattern, reverse

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_pano, users, django_user_model, settings, tmp_path):  # noqa: ANN001, ANN201
    from webapp.panoramas.models import Frame, Job, Membership, Stack, SubPanorama
    from webapp.review.models import Region

    pano = make_pano("secret", public=False)
    sub = SubPanorama.objects.create(panorama=pano, name="main")
    stack = Stack.objects.create(subpanorama=sub, name="s0")
    roots = tmp_path / "imports"
    (roots / "capture").mkdir(parents=True)
    original = roots / "capture" / "f0.png"
    original.write_bytes(b"x")
    settings.TERAPAN_IMPORT_ROOTS = [roots]
    frame = Frame.objects.create(stack=stack, original_path=str(original))
    job = Job.objects.create(kind=Job.Kind.STACK, panorama=pano, stack=stack, status="failed", error="boom")
    ingest = Job.objects.create(kind=Job.Kind.INGEST, panorama=pano, params={"user": "owner"})
    region = Region.objects.create(panorama=pano, version=1, target={}, x=0, y=0, w=5, h=5, author=users["owner"])
    thumbs = Path(settings.MEDIA_ROOT) / "panoramas" / str(pano.pk) / "thumbs" / str(stack.pk)
    thumbs.mkdir(parents=True)
    (thumbs / f"{frame.pk}.jpg").write_bytes(b"\xff\xd8\xff")
    nobody = django_user_model.objects.create_user("nobody", password="pw", is_staff=True)
    permitted = django_user_model.objects.create_user("permitted", password="pw", is_staff=True)
    permitted.user_permissions.add(*Permission.objects.filter(content_type__app_label__in=["panoramas", "review"]))
    editor = django_user_model.objects.create_user("staffeditor", password="pw", is_staff=True)
    editor.user_permissions.add(*Permission.objects.filter(content_type__app_label__in=["panoramas", "review"]))
    Membership.objects.create(user=editor, panorama=pano, role="editor")
    return {
        "pano": pano,
        "stack": stack,
        "frame": frame,
        "job": job,
        "ingest": ingest,
        "region": region,
        "pyramid": pano.published_pyramid,
        "sub": sub,
        "original": original,
        "users": {"nobody": nobody, "permitted": permitted, "editor": editor},
    }


def _urls(w: dict) -> list[tuple[str, str, dict]]:
    """(method, url, data) of every admin page that touches the panorama."""
    p, s, f, j, y = w["pano"], w["stack"], w["frame"], w["job"], w["pyramid"]
    mem = w["pano"].memberships.first()
    out = [
        ("get", reverse("admin:panoramas_panorama_change", args=[p.pk]), {}),
        ("post", reverse("admin:panoramas_panorama_delete", args=[p.pk]), {"post": "yes"}),
        ("get", reverse("admin:panoramas_panorama_rerender", args=[p.pk]) + "?full=1", {}),
        ("post", reverse("admin:panoramas_panorama_rerender", args=[p.pk]), {"full": "1", "confirm": "yes"}),
        ("get", reverse("admin:panoramas_panorama_progress", args=[p.pk]), {}),
        ("get", reverse("admin:panoramas_panorama_progress_json", args=[p.pk]), {}),
        ("get", reverse("admin:panoramas_stack_change", args=[s.pk]), {}),
        ("get", reverse("admin:panoramas_frame_change", args=[f.pk]), {}),
        ("post", reverse("admin:panoramas_frame_change", args=[f.pk]), {"original_path": "/etc/hostname"}),
        ("get", reverse("admin:panoramas_job_change", args=[j.pk]), {}),
        ("post", reverse("admin:panoramas_job_retry", args=[j.pk]), {}),
        ("get", reverse("admin:panoramas_pyramid_change", args=[y.pk]), {}),
        ("post", reverse("admin:panoramas_pyramid_publish", args=[y.pk]), {"confirm": "yes"}),
        ("get", reverse("admin:panoramas_membership_change", args=[mem.pk]), {}),
        ("post", reverse("admin:panoramas_membership_change", args=[mem.pk]), {"role": "owner"}),
        ("get", reverse("admin:panoramas_subpanorama_change", args=[w["sub"].pk]), {}),
        ("get", reverse("admin:review_region_change", args=[w["region"].pk]), {}),
        ("post", reverse("admin:review_region_delete", args=[w["region"].pk]), {"post": "yes"}),
        ("get", reverse("ingest:job", args=[w["ingest"].pk]), {}),
        ("get", reverse("ingest:thumb", args=[s.pk, f.pk]), {}),
        ("post", reverse("ingest:index"), {"slug": p.slug, "folder": str(w["original"].parent), "dry_run": ""}),
    ]
    return out


def _rq_urls() -> list[str]:
    import django_rq.urls

    out = []
    for pat in django_rq.urls.urlpatterns:
        if not isinstance(pat, URLPattern):
            continue
        route = str(pat.pattern)
        for conv, val in (("<int:", "1"), ("<str:", "default"), ("<path:", "x"), ("<slug:", "x")):
            while conv in route:
                a = route.index(conv)
                route = route[:a] + val + route[route.index(">", a) + 1 :]
        if "^" in route or "(" in route:
            continue
        out.append("/admin/rq/" + route)
    return out


@pytest.mark.parametrize("who", ["nobody", "permitted"])
def test_staff_without_a_role_gets_nothing(world, client, who: str) -> None:  # noqa: ANN001
    from webapp.panoramas.models import Frame, Job, Membership, Panorama

    client.force_login(world["users"][who])
    n_jobs = Job.objects.count()
    for method, url, data in _urls(world):
        r = getattr(client, method)(url, data)
        # 403 (no permission or no role), 404 (nothing to see), 302 to the admin index
        # (Django's answer for an object one may not view): never the page or the change.
        assert r.status_code in (302, 403, 404), (who, method, url, r.status_code)
        if r.status_code == 302:
            assert "/login/" in r["Location"] or r["Location"].rstrip("/").endswith("/admin"), (url, r["Location"])
    assert Job.objects.count() == n_jobs  # no import, no retry, no re-render queued
    assert Panorama.objects.filter(pk=world["pano"].pk).exists()
    assert Frame.objects.get(pk=world["frame"].pk).original_path == str(world["original"])
    assert not Membership.objects.filter(role="owner").exists()
    from webapp.review.models import Region

    assert Region.objects.filter(pk=world["region"].pk).exists()
    # Lists show nothing of the panorama.
    for name in ("panorama", "stack", "job", "pyramid", "frame"):
        r = client.get(reverse(f"admin:panoramas_{name}_changelist"))
        assert r.status_code == 403 or world["pano"].slug not in r.content.decode(), name
    # The RQ dashboard: superusers only.
    for url in _rq_urls():
        assert client.get(url).status_code == 403, url
        assert client.post(url).status_code == 403, url
    assert django_rq.get_connection("default").ping()


def test_editor_with_permissions_gets_through(world, client) -> None:  # noqa: ANN001
    client.force_login(world["users"]["editor"])
    p = world["pano"]
    assert client.get(reverse("admin:panoramas_panorama_progress", args=[p.pk])).status_code == 200
    js = client.get(reverse("admin:panoramas_panorama_progress_json", args=[p.pk])).json()
    assert any(j["retry_url"] for j in js["jobs"])
    assert client.get(reverse("admin:panoramas_panorama_change", args=[p.pk])).status_code == 200
    assert client.get(reverse("ingest:thumb", args=[world["stack"].pk, world["frame"].pk])).status_code == 200
    assert "s0" in client.get(reverse("admin:panoramas_stack_changelist")).content.decode()
    assert client.get("/admin/rq/").status_code == 403  # staff editor, not superuser


def test_superuser_reaches_rq_dashboard(client, users) -> None:  # noqa: ANN001
    client.force_login(users["staff"])
    assert client.get("/admin/rq/").status_code == 200


def test_frame_path_must_stay_inside_import_roots(world, admin_client, tmp_path) -> None:  # noqa: ANN001
    from webapp.panoramas.models import Frame

    f = world["frame"]
    url = reverse("admin:panoramas_frame_change", args=[f.pk])
    secret = tmp_path / "private.txt"
    secret.write_text("secret")
    link = world["original"].parent / "sneaky.png"
    link.symlink_to(secret)
    for path in (str(secret), "/etc/hostname", str(link), "relative/f.png"):
        r = admin_client.post(url, {"stack": f.stack_id, "original_path": path, "size_bytes": 0, "transform": "[]",
                                    "exposure": "{}"})  # fmt: skip
        assert r.status_code == 200 and "import folder" in r.content.decode(), path
        assert Frame.objects.get(pk=f.pk).original_path == str(world["original"])
    inside = world["original"].parent / "f1.png"
    inside.write_bytes(b"y")
    r = admin_client.post(url, {"stack": f.stack_id, "original_path": str(inside), "size_bytes": 0, "transform": "[]",
                                "exposure": "{}"})  # fmt: skip
    assert r.status_code == 302, r.content.decode()[:2000]
    assert Frame.objects.get(pk=f.pk).original_path == str(inside)


def test_progress_shows_paths_to_editors_only(world, client, django_user_model) -> None:  # noqa: ANN001
    from webapp.panoramas.models import Job, Membership

    Job.objects.filter(pk=world["job"].pk).update(error="OSError: [Errno 28] (writing /srv/media/panoramas/1/x.tif)")
    staff_viewer = django_user_model.objects.create_user("staffviewer", password="pw", is_staff=True)
    Membership.objects.create(user=staff_viewer, panorama=world["pano"], role="viewer")
    url = reverse("admin:panoramas_panorama_progress_json", args=[world["pano"].pk])
    client.force_login(staff_viewer)
    seen = {j["id"]: j for j in client.get(url).json()["jobs"]}[world["job"].pk]
    assert "/srv/" not in seen["error"] and "x.tif" in seen["error"] and seen["retry_url"] is None
    client.force_login(world["users"]["editor"])
    seen = {j["id"]: j for j in client.get(url).json()["jobs"]}[world["job"].pk]
    assert "/srv/media/panoramas/1/x.tif" in seen["error"]
