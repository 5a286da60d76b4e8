"""Settings parsing, the embedded Redis, models and the admin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from webapp import env
from webapp.embedded_redis import ensure_server

ROOT = Path(__file__).resolve().parents[2]


def test_env_bool_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_FLAG", "yes")
    assert env.env_bool("X_FLAG", False) is True
    monkeypatch.setenv("X_FLAG", "0")
    assert env.env_bool("X_FLAG", True) is False
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG"):
        env.env_bool("X_FLAG", True)


def test_env_int_and_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_N", "12x")
    with pytest.raises(ImproperlyConfigured, match="not an integer"):
        env.env_int("X_N", 1)
    monkeypatch.setenv("X_N", "-1")
    with pytest.raises(ImproperlyConfigured, match="minimum"):
        env.env_int("X_N", 1, minimum=0)
    monkeypatch.setenv("X_L", "a.example, b.example")
    assert env.env_list("X_L", []) == ["a.example", "b.example"]
    monkeypatch.setenv("X_L", "a,,b")
    with pytest.raises(ImproperlyConfigured, match="empty item"):
        env.env_list("X_L", [])


def _settings_in_subprocess(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "DATABASE_URL")}
    e.update(extra_env)
    code = "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='webapp.settings'; django.setup(); from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'])"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=e, capture_output=True, text=True, timeout=120)


def test_secret_key_required_without_debug() -> None:
    r = _settings_in_subprocess({"DEBUG": "0"})
    assert r.returncode != 0
    assert "SECRET_KEY is required" in r.stderr


def test_bad_database_url_refused() -> None:
    r = _settings_in_subprocess({"DATABASE_URL": "nosuchscheme://x"})
    assert r.returncode != 0
    assert "DATABASE_URL" in r.stderr


def test_database_url_postgres_parsed() -> None:
    r = _settings_in_subprocess({"DATABASE_URL": "postgres://u:p@db.example:5432/terapan"})
    assert r.returncode == 0, r.stderr
    assert "postgresql" in r.stdout


def test_embedded_redis_is_shared(tmp_path_factory: pytest.TempPathFactory) -> None:
    import redis

    var = Path("/tmp") / f"terapan-redis-test-{os.getpid()}"
    try:
        url1 = ensure_server(var)
        url2 = ensure_server(var)  # a second caller finds the same server
        assert url1 == url2
        r = redis.Redis.from_url(url1)
        r.set("terapan:test", "1")
        # Another process sees the same data through the same socket.
        out = subprocess.run(
            [sys.executable, "-c", f"import redis; print(redis.Redis.from_url({url1!r}).get('terapan:test'))"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "b'1'" in out.stdout
    finally:
        from webapp.embedded_redis import stop_server

        stop_server(var)


@pytest.mark.django_db
def test_models_and_admin(admin_client) -> None:
    from webapp.panoramas.models import Frame, Job, Panorama, Pyramid, Stack, SubPanorama

    p = Panorama.objects.create(slug="city", title="City")
    sp = SubPanorama.objects.create(panorama=p, name="main")
    st = Stack.objects.create(subpanorama=sp, name="s0", yaw=10.0)
    Frame.objects.create(stack=st, original_path="/data/f0.dng")
    Pyramid.objects.create(panorama=p, version=1, path="panoramas/1/pyramids/v1", width=100, height=50)
    Job.objects.create(kind=Job.Kind.STACK, panorama=p, stack=st)
    for url in (
        "/admin/panoramas/panorama/",
        f"/admin/panoramas/panorama/{p.pk}/change/",
        "/admin/panoramas/stack/",
        f"/admin/panoramas/stack/{st.pk}/change/",
        "/admin/panoramas/frame/",
        "/admin/panoramas/pyramid/",
        "/admin/panoramas/job/",
    ):
        assert admin_client.get(url).status_code == 200, url
