"""The sky capture in the chain: import_capture --sky and the admin import page
attach it to a panorama; the composite job merges it into the ground; a
partial re-render of a ground region leaves the sky as it was."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from tests.processing._ingest_helpers import make_capture
from tests.processing._sky_helpers import synthetic_captures
from webapp.panoramas.models import Frame, Job, Panorama, Stack, Status, SubPanorama

pytestmark = pytest.mark.django_db


@pytest.fixture
def env(settings, tmp_path: Path):
    imports = tmp_path / "imports"
    cap = make_capture(imports / "holmenkollen")
    settings.TERAPAN_IMPORT_ROOTS = [imports]
    settings.TERAPAN_INGEST_CACHE = tmp_path / "cache.sqlite3"
    settings.MEDIA_ROOT = tmp_path / "media"
    return cap


def _import(*args: str) -> str:
    out = io.StringIO()
    call_command("import_capture", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_import_capture_sky_attaches_one_sky_subpanorama(env) -> None:
    _import("holm", str(env.root / "A"))
    before = Frame.objects.count()
    out = _import("holm", str(env.root / "B"), "--sky")
    assert "(sky capture)" in out
    sky = SubPanorama.objects.get(panorama__slug="holm", is_sky=True)
    assert sky.name == "sky" and sky.stacks.count() == 2  # B's two bursts, all in one sub-panorama
    assert Frame.objects.count() > before
    assert not SubPanorama.objects.filter(panorama__slug="holm", is_sky=False, name="sky").exists()
    again = Frame.objects.count()
    _import("holm", str(env.root / "B"), "--sky")  # re-running changes nothing
    assert Frame.objects.count() == again
    # the sky sub-panorama cannot silently turn into ground
    with pytest.raises(CommandError, match="sky capture"):
        _import("holm", str(env.root / "B"), "--subpanorama", "sky")
    with pytest.raises(CommandError, match="ground stacks"):  # nor ground into sky
        ground = SubPanorama.objects.filter(panorama__slug="holm", is_sky=False).first()
        _import("holm", str(env.root / "B"), "--sky", "--subpanorama", ground.name)


def test_admin_import_page_offers_the_sky_option(env, client, django_user_model) -> None:
    from django.contrib.auth.models import Permission

    from webapp.ingest import jobs

    staff = django_user_model.objects.create_user("st", password="pw", is_staff=True)
    # Creating a panorama by import needs the add_panorama permission (issue 15).
    staff.user_permissions.add(Permission.objects.get(codename="add_panorama"))
    client.force_login(staff)
    page = client.get(reverse("ingest:index"))
    assert b'name="sky"' in page.content
    r = client.post(reverse("ingest:index"), {"slug": "adm", "folder": "holmenkollen/B", "sky": "on"})
    job = Job.objects.get(kind=Job.Kind.INGEST)
    assert r.status_code == 302 and job.params["sky"] is True
    import django_rq
    from rq.job import Job as RQJob

    RQJob.fetch(job.rq_id, connection=django_rq.get_connection("default")).delete()
    jobs.run_ingest(job.pk)  # what the worker would do
    job.refresh_from_db()
    assert job.status == Status.DONE and job.result["sky"] is True
    assert SubPanorama.objects.get(panorama__slug="adm").is_sky


def _stacks(pano: Panorama, media: Path, name: str, files: list[Path], rig: Path, sky: bool) -> list[Stack]:
    sp = SubPanorama.objects.create(panorama=pano, name=name, order=1 if sky else 0, is_sky=sky)
    angles = {r["file"]: r for r in csv.DictReader(rig.open())}
    out = []
    for k, f in enumerate(files):
        a = angles[f.name]
        st = Stack.objects.create(
            subpanorama=sp,
            name=f.stem,
            col=k,
            yaw=float(a["yaw"]),
            pitch=float(a["pitch"]),
            focal_px=float(a["focal"]),
            status=Status.DONE,
        )
        rel = f"panoramas/{pano.pk}/stacks/{st.pk}/h{k:02d}{name}.png"
        (media / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, media / rel)
        Stack.objects.filter(pk=st.pk).update(output_path=rel, recipe_hash=f"h{k:02d}{name}")
        out.append(st)
    return out


def _rgba(path: Path) -> np.ndarray:
    import tifffile

    return tifffile.imread(path)


def test_composite_job_merges_the_sky_and_rerender_keeps_it(settings, tmp_path: Path) -> None:
    import cv2

    from processing.stitch.layers import load_sky, proxy_to_block
    from webapp.panoramas.jobs import run_composite

    media = tmp_path / "media"
    settings.MEDIA_ROOT = media
    gfiles, sfiles, gd, sd = synthetic_captures(tmp_path / "cap")
    stitch = {"projection": "equirectangular", "wrap": True, "nfeatures": 600, "block": 256}
    pano = Panorama.objects.create(slug="s", title="S", scale=1.0, recipe_defaults={"stitch": stitch})
    ground = _stacks(pano, media, "ground", gfiles, gd / "rig.csv", sky=False)
    _stacks(pano, media, "sky", sfiles, sd / "rig.csv", sky=True)

    job = Job.objects.create(kind=Job.Kind.COMPOSITE, panorama=pano)
    res = run_composite(job.pk)
    assert res["placed"] == len(gfiles)  # the sky stacks are not stitched as ground
    assert res["sky"]["placed"] == len(sfiles) and res["sky"]["sky"] is True
    pano.refresh_from_db()
    base = media / pano.composite_path
    m = _rgba(base)
    assert (m[..., 3] > 0).mean() > 0.55  # ground ring + sky: far more than the ground's ~0.3
    assert load_sky(base).info["placed"] == len(sfiles)
    # the ground was rendered beside it and is gone; running the job again reuses the composite
    assert sorted(p.name for p in base.parent.iterdir() if p.name.startswith(".")) == []
    again = run_composite(Job.objects.create(kind=Job.Kind.COMPOSITE, panorama=pano).pk)
    assert again["reused"] is True and again["sky"]["reused"] is True

    # one ground stack re-rendered (brighter) in its own folder, then a region job
    width = m.shape[1]
    st = next(
        s for s in Stack.objects.filter(pk__in=[g.pk for g in ground]) if s.footprint["x"] + s.footprint["w"] < width
    )
    old = media / st.output_path
    new_rel = str(Path(st.output_path).with_name("h99new.png"))
    img = cv2.imread(str(old))
    cv2.imwrite(str(media / new_rel), np.clip(img.astype(np.float32) * 1.3, 0, 255).astype(np.uint8))
    Stack.objects.filter(pk=st.pk).update(output_path=new_rel, recipe_hash="h99new")
    fp = st.footprint
    region = [fp["x"], max(0, fp["y"] - 60), fp["w"], 120]  # across the ground's top border
    job2 = Job.objects.create(
        kind=Job.Kind.COMPOSITE, panorama=pano, params={"region": region, "base_composite": pano.composite_path}
    )
    res2 = run_composite(job2.pk)
    assert res2["partial"] is True and res2["sky"]["sky"] is True
    pano.refresh_from_db()
    new = media / pano.composite_path
    assert new != base and base.exists()  # versions are immutable
    assert not [p for p in new.parent.iterdir() if p.name.startswith(".")]
    p = _rgba(new)
    x0, y0, w, h = res2["region"]
    x1, y1 = x0 + w, y0 + h
    sm = load_sky(new)
    wts = proxy_to_block(sm.weights, sm.layout.canvas, (x0, y0, x1, y1))
    pr, mr = p[y0:y1, x0:x1], m[y0:y1, x0:x1]
    sky_only = wts > 0.999
    assert sky_only.sum() > 300
    assert np.array_equal(pr[sky_only], mr[sky_only])  # the sky exactly as it was
    ground_px = (wts < 1e-3) & (mr[..., 3] == 255)
    assert pr[ground_px][:, :3].astype(float).mean() > mr[ground_px][:, :3].astype(float).mean() + 5
