"""webapp.ingest: import_capture command, resumable import, admin page, thumbnails."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from tests.processing._ingest_helpers import make_capture
from webapp.ingest import services
from webapp.panoramas.models import Frame, Job, Membership, Panorama, Stack, Status, SubPanorama

pytestmark = pytest.mark.django_db


@pytest.fixture
def env(settings, tmp_path: Path):
    """An allowed import root holding the synthetic capture; a private cache and MEDIA_ROOT."""
    imports = tmp_path / "imports"
    cap = make_capture(imports / "holmenkollen")
    settings.TERAPAN_IMPORT_ROOTS = [imports]
    settings.TERAPAN_INGEST_CACHE = tmp_path / "cache.sqlite3"
    settings.MEDIA_ROOT = tmp_path / "media"
    return cap


def _fingerprint(root: Path) -> dict[str, tuple[str, int]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def _db_state(slug: str) -> list[tuple]:
    return sorted(
        Frame.objects.filter(stack__subpanorama__panorama__slug=slug).values_list(
            "stack__subpanorama__name",
            "stack__name",
            "stack__row",
            "stack__col",
            "stack__candidate_group",
            "original_path",
            "checksum",
            "size_bytes",
            "width",
            "height",
            "capture_time",
        )
    )


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("import_capture", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_import_creates_expected_stacks_and_is_idempotent(env) -> None:
    before = _fingerprint(env.root)
    _run("holm", str(env.root), "--columns", "2")
    pano = Panorama.objects.get(slug="holm")
    assert list(pano.subpanoramas.values_list("name", flat=True)) == ["A", "B"]
    got = sorted(
        (s.subpanorama.name, s.name, s.frames.count()) for s in Stack.objects.filter(subpanorama__panorama=pano)
    )
    assert got == sorted(env.stacks)
    f = Frame.objects.get(original_path=str(env.root / "A/100CAM/IMG_0002.jpg"))
    assert Path(f.original_path).is_absolute()
    assert f.checksum == hashlib.sha256(Path(f.original_path).read_bytes()).hexdigest()
    assert (f.width, f.height, f.size_bytes) == (96, 64, Path(f.original_path).stat().st_size)
    assert f.capture_time.isoformat() == "2024-03-01T10:00:00.050000+00:00"
    assert f.exposure["iso"] == 200 and f.exposure["time_source"] == "exif"
    assert Frame.objects.get(original_path=str(env.root / "B/P0001.png")).exposure["time_source"] == "mtime"
    a1, a4 = (Stack.objects.get(subpanorama__name="A", name=n) for n in env.repeat)
    assert a1.candidate_group and a1.candidate_group == a4.candidate_group
    assert (a4.row, a4.col) == (a1.row, a1.col)
    assert Frame.objects.filter(original_path__endswith="IMG_9000.jpg").count() == 0

    state = _db_state("holm")
    stamps = sorted(Stack.objects.values_list("updated", flat=True))
    out = json.loads(_run("holm", str(env.root), "--columns", "2", "--json").strip().splitlines()[-1])
    assert out["created"] == {"stacks": 0, "frames": 0} and out["unchanged_frames"] == env.frames
    assert _db_state("holm") == state
    assert sorted(Stack.objects.values_list("updated", flat=True)) == stamps
    assert SubPanorama.objects.count() == 2 and Panorama.objects.count() == 1
    assert _fingerprint(env.root) == before  # originals neither modified nor moved


def test_interrupted_import_resumes_to_the_same_result(env) -> None:
    _run("full", str(env.root))
    full = [(r[0], r[1], *r[5:]) for r in _db_state("full")]
    with pytest.raises(CommandError, match="stopped after 2 bursts"):
        _run("part", str(env.root), "--stop-after", "2")
    assert Stack.objects.filter(subpanorama__panorama__slug="part").count() == 2
    assert Frame.objects.filter(stack__subpanorama__panorama__slug="part").count() == 6 + 4
    _run("part", str(env.root))
    assert [(r[0], r[1], *r[5:]) for r in _db_state("part")] == full
    # and interrupted through the service hook, then resumed once more: still nothing duplicated
    with pytest.raises(services.ImportInterrupted):
        services.import_capture("part", env.root, stop_after=1)
    assert [(r[0], r[1], *r[5:]) for r in _db_state("part")] == full


def test_dry_run_json_plan(env) -> None:
    out = _run("dry", str(env.root), "--dry-run", "--json", "--columns", "2")
    plan = json.loads(out.strip().splitlines()[-1])
    assert Panorama.objects.count() == 0 and Frame.objects.count() == 0
    assert plan["dry_run"] is True and plan["stacks_found"] == len(env.stacks)
    assert plan["frames_placed"] == env.frames
    assert [(s["subpanorama"], s["name"], s["frames"]) for s in plan["stacks"]] == env.stacks
    assert plan["subpanoramas"] == [{"name": "A", "stacks": 4, "frames": 18}, {"name": "B", "stacks": 2, "frames": 6}]
    reasons = {n["path"]: n["reason"] for n in plan["not_placed"]}
    assert set(reasons) == set(env.skipped)
    for rel, why in env.skipped.items():
        assert reasons[rel].startswith(why)
    assert plan["not_placed_counts"] == {"corrupt": 1, "not an image": 1, "too small": 1}
    assert list(plan["candidate_groups"].values()) == [[f"A/{n}" for n in env.repeat]]


def test_one_subpanorama_option_and_bad_dir(env, tmp_path: Path) -> None:
    plan = json.loads(_run("one", str(env.root / "B"), "--dry-run", "--json", "--subpanorama", "west").splitlines()[-1])
    assert [s["name"] for s in plan["subpanoramas"]] == ["west"] and plan["stacks_found"] == 2
    with pytest.raises(CommandError, match="not a folder"):
        _run("x", str(tmp_path / "nope"))


def test_verify_frames_reports_changed_and_missing(env, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "imports" / "copy"
    shutil.copytree(env.root / "B", copy / "B")
    _run("v", str(copy))
    stack = Stack.objects.get(subpanorama__panorama__slug="v", name="P0001")
    assert services.verify_frames(stack) == []
    p1, p2 = copy / "B/P0001.png", copy / "B/P0002.png"
    data = bytearray(p1.read_bytes())
    data[-1] ^= 0xFF
    p1.write_bytes(bytes(data))  # same size, other content
    p2.unlink()
    assert sorted(services.verify_frames(stack)) == sorted([str(p1), str(p2)])


# ---------------------------------------------------------------- admin page


def _staff(django_user_model, client):
    """A staff user who may create panoramas (importing into others' needs a role on them)."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="add_panorama"))
    client.force_login(user)
    return user


def test_admin_page_refuses_non_staff(env, client, django_user_model) -> None:
    url = reverse("ingest:index")
    assert url == "/admin/ingest/"
    r = client.get(url)
    assert r.status_code == 302 and "/admin/login/" in r["Location"]
    plain = django_user_model.objects.create_user("plain", password="pw")
    client.force_login(plain)
    r = client.post(url, {"slug": "x", "folder": str(env.root), "dry_run": "on"})
    assert r.status_code == 302 and "/admin/login/" in r["Location"]
    assert Job.objects.count() == 0


def test_admin_refuses_folders_outside_the_roots(env, client, django_user_model, tmp_path: Path) -> None:
    _staff(django_user_model, client)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (env.root.parent / "sneaky").symlink_to(outside)  # inside by name, outside once resolved
    for folder in (str(outside), "../elsewhere", str(env.root.parent / "sneaky"), "/etc"):
        r = client.post(reverse("ingest:index"), {"slug": "x", "folder": folder})
        assert r.status_code == 400, folder
        assert "outside the allowed import folders" in r.content.decode()
    assert Job.objects.count() == 0
    with pytest.raises(services.ImportRootError):
        services.resolve_import_dir(str(env.root.parent / "sneaky"))
    assert services.resolve_import_dir("holmenkollen") == env.root.resolve()


def test_admin_post_needs_csrf(env, django_user_model) -> None:
    from django.test import Client

    c = Client(enforce_csrf_checks=True)
    _staff(django_user_model, c)
    r = c.post(reverse("ingest:index"), {"slug": "x", "folder": str(env.root)})
    assert r.status_code == 403
    assert Job.objects.count() == 0


def test_admin_enqueues_and_job_runs(env, client, django_user_model) -> None:
    import django_rq
    from rq.job import Job as RQJob

    from webapp.ingest import jobs

    _staff(django_user_model, client)
    r = client.get(reverse("ingest:index"))
    assert r.status_code == 200 and b"csrfmiddlewaretoken" in r.content
    r = client.post(reverse("ingest:index"), {"slug": "adm", "folder": "holmenkollen", "dry_run": "on", "columns": 2})
    job = Job.objects.get(kind=Job.Kind.INGEST)
    assert r.status_code == 302 and r["Location"] == reverse("ingest:job", args=[job.pk])
    conn = django_rq.get_connection("default")
    rq_job = RQJob.fetch(job.rq_id, connection=conn)
    try:
        assert rq_job.func_name == "webapp.ingest.jobs.run_ingest" and rq_job.args == (job.pk,)
        assert rq_job.timeout == 3600 and rq_job.origin == "default"
        assert job.params["folder"] == str(env.root.resolve()) and job.params["dry_run"] is True
    finally:
        rq_job.delete()
    jobs.run_ingest(job.pk)  # what the worker would do
    job.refresh_from_db()
    assert job.status == Status.DONE and job.progress == 100.0
    assert job.result["stacks_found"] == len(env.stacks) and Frame.objects.count() == 0
    page = client.get(reverse("ingest:job", args=[job.pk]))
    html = page.content.decode()
    assert page.status_code == 200 and "100CAM/IMG_0011" in html and "not an image" in html
    js = client.get(reverse("ingest:job", args=[job.pk]), {"format": "json"}).json()
    assert js["status"] == "done" and js["result"]["frames_placed"] == env.frames


def test_thumbnails_job_and_view(env, client, django_user_model) -> None:
    from webapp.ingest import jobs
    from webapp.ingest.admin_extras import stack_thumbnails_html

    _run("th", str(env.root), "--no-checksums")
    stack = Stack.objects.get(subpanorama__name="A", name=env.repeat[0])
    assert "no thumbnails yet" in stack_thumbnails_html(stack)
    res = jobs.make_thumbnails([stack.pk, Stack.objects.get(name="P0004").pk])
    assert res == {"made": 6, "kept": 0, "failed": 0}
    assert jobs.make_thumbnails([stack.pk])["kept"] == 3
    d = Path(jobs.thumbs_dir(stack))
    assert d == Path(os.fspath(env.root.parents[1] / "media" / "panoramas" / str(stack.subpanorama.panorama_id) / "thumbs" / str(stack.pk)))  # fmt: skip
    html = str(stack_thumbnails_html(stack))
    assert html.count("<img") == 3
    url = html.split('src="', 1)[1].split('"', 1)[0]
    assert client.get(url).status_code == 302  # anonymous: to the login page
    staff = _staff(django_user_model, client)
    assert client.get(url).status_code == 404  # staff without a role on this panorama
    Membership.objects.create(user=staff, panorama=stack.subpanorama.panorama, role="viewer")
    r = client.get(url)
    assert r.status_code == 200 and r["Content-Type"] == "image/jpeg"
    assert b"".join(r.streaming_content)[:2] == b"\xff\xd8"
    other = Frame.objects.exclude(stack=stack).first()
    assert client.get(reverse("ingest:thumb", args=[stack.pk, other.pk])).status_code == 404
