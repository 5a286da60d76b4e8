"""Re-render planning, the admin confirmation flow and the rerender command (no workers)."""

from __future__ import annotations

import json
from io import StringIO

import django_rq
import pytest
from django.core.management import call_command

from webapp.panoramas.models import Job, Panorama, Pyramid, Stack, SubPanorama
from webapp.panoramas.rerender import (
    RerenderError,
    intersects,
    merge_recipe,
    parse_param_overrides,
    plan_rerender,
    union,
)


def test_parse_param_overrides() -> None:
    got = parse_param_overrides(["fuse.method=naive", "sharpness.drop_worst=3", "sharpen.amount=0.5"])
    assert got == {"fuse": {"method": "naive"}, "sharpness": {"drop_worst": 3}, "sharpen": {"amount": 0.5}}
    for bad in ("fuse", "fuse.method", "=3", ".x=1"):
        with pytest.raises(RerenderError):
            parse_param_overrides([bad])


def test_merge_recipe_does_not_mutate() -> None:
    base = {"fuse": {"method": "kernel"}}
    merged = merge_recipe(base, {"fuse": {"kernel_sigma": 0.7}, "sharpen": {"amount": 1}})
    assert merged == {"fuse": {"method": "kernel", "kernel_sigma": 0.7}, "sharpen": {"amount": 1}}
    assert base == {"fuse": {"method": "kernel"}}


def test_intersects_wraps_round_360() -> None:
    assert intersects((0, 0, 10, 10), (5, 5, 10, 10))
    assert not intersects((0, 0, 10, 10), (20, 0, 10, 10))
    # A footprint crossing the right edge of a 100-px wide panorama touches x=0..5.
    assert intersects((95, 0, 10, 10), (0, 0, 5, 5), wrap_width=100)
    assert not intersects((95, 0, 10, 10), (0, 0, 5, 5))
    assert union([(10, 5, 10, 10), (30, 0, 5, 5)], 100, 50) == (10, 0, 25, 15)
    assert union([(95, 0, 10, 10)], 100, 50) == (0, 0, 100, 10)


@pytest.fixture
def pano(db) -> Panorama:
    p = Panorama.objects.create(slug="p", title="P", composite_path="panoramas/1/composites/x.tif")
    pyr = Pyramid.objects.create(panorama=p, version=1, path="x", width=1000, height=200, state="ready")
    p.published_pyramid = pyr
    p.save()
    sub = SubPanorama.objects.create(panorama=p, name="main")
    for i in range(5):
        Stack.objects.create(
            subpanorama=sub, name=f"s{i}", col=i, footprint={"x": i * 200 - 20, "y": 10, "w": 240, "h": 180}
        )
    return p


@pytest.mark.django_db
def test_plan_region_selects_overlapping_stacks(pano: Panorama) -> None:
    plan = plan_rerender(pano, region=(450, 50, 20, 20))
    assert [s.name for s in plan.stacks] == ["s2"]
    assert plan.region == (380, 10, 240, 180)  # the footprint's area is re-blended
    assert 0 < plan.tiles_estimate < 100
    plan = plan_rerender(pano, region=(190, 50, 20, 20))
    assert [s.name for s in plan.stacks] == ["s0", "s1"]
    assert plan.region == (0, 10, 1000, 180)  # s0 straddles the 360-degree seam
    with pytest.raises(RerenderError, match="outside"):
        plan_rerender(pano, region=(5000, 0, 10, 10))
    full = plan_rerender(pano, full=True)
    assert full.full and len(full.stacks) == 5


@pytest.mark.django_db
def test_plan_validates_recipe(pano: Panorama) -> None:
    s = Stack.objects.get(name="s1")
    with pytest.raises(RerenderError, match="invalid recipe"):
        plan_rerender(pano, stack_ids=[s.pk], overrides={"fuse": {"no_such_param": 1}})
    plan = plan_rerender(pano, stack_ids=[s.pk], overrides={"sharpness": {"drop_worst": 1}})
    assert [x.name for x in plan.stacks] == ["s1"]


@pytest.mark.django_db
def test_admin_confirmation_then_enqueue(admin_client, pano: Panorama) -> None:
    for q in ("gpu", "default"):
        django_rq.get_queue(q).empty()
    s = Stack.objects.get(name="s3")
    url = f"/admin/panoramas/panorama/{pano.pk}/rerender/?stacks={s.pk}"
    page = admin_client.get(url)
    assert page.status_code == 200
    body = page.content.decode()
    assert "s3" in body and "Tiles to re-encode" in body and "Estimate" in body
    assert Job.objects.count() == 0  # GET only shows the plan
    r = admin_client.post(
        f"/admin/panoramas/panorama/{pano.pk}/rerender/",
        {"stacks": str(s.pk), "confirm": "yes", "params": "sharpness.drop_worst=1"},
    )
    assert r.status_code == 302
    kinds = sorted(Job.objects.values_list("kind", flat=True))
    assert kinds == ["composite", "pyramid", "stack"]
    s.refresh_from_db()
    assert s.recipe == {"sharpness": {"drop_worst": 1}}
    assert django_rq.get_queue("gpu").count == 1
    comp = Job.objects.get(kind="composite")
    assert comp.params["region"] == [580, 10, 240, 180]
    progress = admin_client.get(f"/admin/panoramas/panorama/{pano.pk}/progress.json").json()
    assert {j["kind"] for j in progress["jobs"]} == {"stack", "composite", "pyramid"}
    for q in ("gpu", "default"):
        django_rq.get_queue(q).empty()


@pytest.mark.django_db
def test_rerender_requires_staff_and_post(client, django_user_model, pano: Panorama) -> None:
    user = django_user_model.objects.create_user("u", password="pw")
    client.force_login(user)
    r = client.get(f"/admin/panoramas/panorama/{pano.pk}/rerender/?full=1")
    assert r.status_code == 302 and "/admin/login/" in r["Location"]
    assert Job.objects.count() == 0


@pytest.mark.django_db
def test_rollback_publishes_older_version(admin_client, pano: Panorama, tmp_path, settings) -> None:
    settings.MEDIA_ROOT = tmp_path
    (tmp_path / "old").mkdir()
    old = Pyramid.objects.create(panorama=pano, version=2, path="old", width=1000, height=200, state="ready")
    assert admin_client.get(f"/admin/panoramas/pyramid/{old.pk}/publish/").status_code == 200
    pano.refresh_from_db()
    assert pano.published_pyramid.version == 1  # GET changes nothing
    admin_client.post(f"/admin/panoramas/pyramid/{old.pk}/publish/", {"confirm": "yes"})
    pano.refresh_from_db()
    assert pano.published_pyramid_id == old.pk


@pytest.mark.django_db
def test_rerender_command_json(pano: Panorama) -> None:
    for q in ("gpu", "default"):
        django_rq.get_queue(q).empty()
    out = StringIO()
    call_command("rerender", "p", "--region", "450,50,20,20", "--json", stdout=out)
    last = json.loads(out.getvalue().strip().splitlines()[-1])
    assert last["stacks_rerendered"] == 1 and last["version"] == 1
    for q in ("gpu", "default"):
        django_rq.get_queue(q).empty()


@pytest.mark.django_db
def test_region_admin_leads_to_rerender_confirmation(admin_client, pano: Panorama, admin_user) -> None:  # noqa: ANN001
    from webapp.review.models import Region

    r = Region.objects.create(panorama=pano, version=1, target={}, x=450, y=50, w=20, h=20, author=admin_user)
    resp = admin_client.post("/admin/review/region/", {"action": "rerender", "_selected_action": [str(r.pk)]})
    assert resp.status_code == 302 and f"region_id={r.pk}" in resp["Location"]
    page = admin_client.get(resp["Location"]).content.decode()
    assert "s2" in page and "Yes, re-render" in page
    assert (
        "Re-render the stacks under this region"
        in admin_client.get(f"/admin/review/region/{r.pk}/change/").content.decode()
    )
