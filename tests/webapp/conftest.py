"""Fixtures for viewer and review tests: users per role and panoramas with real pyramids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from processing.tiles.pyramid import PyramidParams, build_pyramid

ROLES = ("viewer", "reviewer", "editor")
W, H = 300, 200


def make_image(path: Path, width: int = W, height: int = H, seed: int = 0) -> Path:
    import pyvips

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack(
        [(xx * 255 // max(1, width - 1)), (yy * 255 // max(1, height - 1)), rng.integers(0, 256, (height, width))], -1
    )
    pyvips.Image.new_from_array(img.astype(np.uint8)).write_to_file(str(path))
    return path


@pytest.fixture(autouse=True)
def _fast_hasher(settings):
    # PBKDF2 at full strength costs seconds per test on a shared 2-core machine.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def media(settings, tmp_path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = root
    return root


@pytest.fixture
def users(django_user_model) -> dict:
    out = {
        name: django_user_model.objects.create_user(name, password="pw-" + name)
        for name in ("owner", *ROLES, "outsider")
    }
    out["staff"] = django_user_model.objects.create_superuser("staff", password="pw-staff")
    return out


@pytest.fixture
def make_pano(media, users, tmp_path):
    """make_pano(slug, public=True, versions=1) -> Panorama with READY pyramids and members."""
    from webapp.panoramas.models import Membership, Panorama, Pyramid

    def make(slug: str = "alps", public: bool = True, versions: int = 1, fmt: str = "jpg"):
        pano = Panorama.objects.create(slug=slug, title=slug.title(), is_public=public, owner=users["owner"], wrap=True)
        for role in ROLES:
            Membership.objects.create(user=users[role], panorama=pano, role=role)
        pyr = None
        for v in range(1, versions + 1):
            src = make_image(tmp_path / f"{slug}-{v}.png", seed=v)
            rel = f"panoramas/{pano.pk}/pyramids/v{v}"
            info = build_pyramid(src, media / rel, PyramidParams(tile_size=64, format=fmt))
            pyr = Pyramid.objects.create(
                panorama=pano,
                version=v,
                path=rel,
                width=info["width"],
                height=info["height"],
                tile_size=64,
                overlap=1,
                format=fmt,
                state=Pyramid.State.READY,
                stats=info,
            )
        pano.published_pyramid = pyr
        pano.save()
        return pano

    return make


@pytest.fixture
def stacked_pano(make_pano):
    """stacked_pano(slug, n=3) -> a private panorama with one sub-panorama of N stacks (no frames);
    the queues are emptied afterwards."""
    import django_rq

    from webapp.panoramas.models import Stack, SubPanorama

    def make(slug: str, n: int = 3):
        pano = make_pano(slug, public=False)
        sub = SubPanorama.objects.create(panorama=pano, name="main")
        for i in range(n):
            Stack.objects.create(subpanorama=sub, name=f"s{i}", col=i)
        return pano

    yield make
    for name in ("gpu", "default"):
        django_rq.get_queue(name).empty()


@pytest.fixture
def client_for(client, users):
    """client_for(name) -> a test Client logged in as that user (None: anonymous)."""
    from django.test import Client

    def make(name: str | None, csrf: bool = False) -> Client:
        c = Client(enforce_csrf_checks=csrf)
        if name is not None:
            c.force_login(users[name])
        return c

    return make
