"""manage.py plan and the admin's confirmation page: the farm's jobs, bytes, memory and time from measured rates."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db

RATES = {
    "block_mp_per_s": 4.0,
    "reduce_cpu_s": 2.0,
    "stack_s": 60.0,
    "layout_s_per_stack": 0.1,
    "tile_bytes_per_mp": 50000.0,
    "block_peak_mb": 600.0,
    "reduce_peak_mb": 330.0,
}


@pytest.fixture
def pano(tmp_path, monkeypatch):
    from webapp.panoramas.models import Frame, Panorama, Stack, SubPanorama

    monkeypatch.setenv("TERAPAN_FARM_RATES", str(tmp_path / "rates.json"))
    p = Panorama.objects.create(slug="big", title="big", scale=2.0)
    sub = SubPanorama.objects.create(panorama=p, name="main")
    for i in range(40):
        s = Stack.objects.create(subpanorama=sub, name=f"s{i}", col=i)
        Frame.objects.create(stack=s, original_path=f"/x/{i}.jpg", width=6000, height=4000)
    return p


def _plan(*args: str) -> dict:
    from io import StringIO

    out = StringIO()
    call_command("plan", "big", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


def test_plan_needs_measured_rates(pano):
    with pytest.raises(CommandError, match="bench farm"):
        call_command("plan", "big", "--workers", "4")


def test_plan_from_measured_rates(pano, tmp_path):
    (tmp_path / "rates.json").write_text(json.dumps({"rates": RATES}))
    one, eight = _plan("--workers", "1"), _plan("--workers", "8")
    # 40 stacks of 12000 x 8000 at 75 %: 2.88 GP
    assert one["gigapixels"] == pytest.approx(2.88, rel=0.01)
    assert one["stack_jobs"] == 40 and one["block_jobs"] == eight["block_jobs"] > 100
    assert one["reduce_jobs"] > 1 and one["stages"] >= 2
    assert one["stack_wall_s"] == pytest.approx(40 * 60.0)
    assert one["farm_cpu_s"] == pytest.approx(2880 / 4.0 + one["reduce_jobs"] * 2.0, rel=0.01)
    assert eight["wall_s"] < one["wall_s"] / 6
    assert one["block_peak_mb"] == 600.0
    assert one["pyramid_bytes"] == pytest.approx(2880 * 4 / 3 * 50000, rel=0.01)
    with_gpus = _plan("--workers", "1", "--gpus", "2")
    assert with_gpus["stack_wall_s"] == one["stack_wall_s"]  # no GPU rate measured: CPU only


def test_confirmation_page_shows_the_farm_plan(pano, tmp_path, admin_client):
    (tmp_path / "rates.json").write_text(json.dumps({"rates": RATES}))
    r = admin_client.get(f"/admin/panoramas/panorama/{pano.pk}/rerender/?full=1&workers=8")
    assert r.status_code == 200
    body = r.content.decode()
    assert 'id="farm-plan"' in body and "block" in body and "8 worker(s)" in body
