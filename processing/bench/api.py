"""Review API and tile load on loopback, through the real production stack.

python -m processing bench api [--clients 8] [--seconds 10] [--workers 2]

Builds a throw-away site in a temporary folder (SQLite database, MEDIA_ROOT,
embedded Redis), migrates it, adds a private panorama with a small Deep Zoom
pyramid, a reviewer and a few regions, then starts gunicorn (webapp.wsgi,
gthread workers, DEBUG off) on 127.0.0.1 at a free port. N client threads
with keep-alive connections send a mix of requests for a bounded time:
tiles (60 %), the region list (30 %) and new comments (10 %, POST with the
CSRF token). Prints one JSON object: requests/s, latency p50/p99 in ms per
kind, errors (must be 0). Django runs only in subprocesses (processing/ never
imports it); everything is removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import emit

ROOT = Path(__file__).resolve().parents[2]

SETUP = r"""
import json, os, sys
import django
django.setup()
import numpy as np, pyvips
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from processing.tiles.pyramid import PyramidParams, build_pyramid, level_grid, num_levels
from webapp.panoramas.models import Membership, Panorama, Pyramid
from webapp.review.models import Comment, Region

size = json.loads(sys.argv[1])
user = get_user_model().objects.create_user("bench-reviewer", password=os.urandom(16).hex())
pano = Panorama.objects.create(slug="bench", title="Bench", is_public=False)
Membership.objects.create(user=user, panorama=pano, role="reviewer")
rng = np.random.default_rng(0)
img = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
src = os.path.join(settings.MEDIA_ROOT, "bench-src.png")
os.makedirs(settings.MEDIA_ROOT, exist_ok=True)
pyvips.Image.new_from_array(img).write_to_file(src)
rel = f"panoramas/{pano.pk}/pyramids/v1"
info = build_pyramid(src, os.path.join(settings.MEDIA_ROOT, rel), PyramidParams())
pyr = Pyramid.objects.create(panorama=pano, version=1, path=rel, width=info["width"], height=info["height"],
                             tile_size=info["tile_size"], overlap=info["overlap"], format=info["format"],
                             state=Pyramid.State.READY)
pano.published_pyramid = pyr
pano.save()
target = {"selector": {"type": "FragmentSelector", "value": "xywh=pixel:10,10,100,80"}}
regions = []
for i in range(20):
    r = Region.objects.create(panorama=pano, version=1, target=target, x=10, y=10, w=100, h=80, author=user)
    Comment.objects.create(region=r, author=user, body=f"comment {i}")
    regions.append(r.pk)
c = Client()
c.force_login(user)
tiles = []
for level in range(num_levels(pyr.width, pyr.height)):
    nc, nr = level_grid(pyr.width, pyr.height, pyr.tile_size, level)
    tiles += [f"/tiles/{pyr.pk}/v1/image_files/{level}/{x}_{y}.{pyr.format}" for x in range(nc) for y in range(nr)]
print(json.dumps({"session": c.cookies[settings.SESSION_COOKIE_NAME].value, "slug": pano.slug,
                  "regions": regions, "tiles": tiles, "pyramid": info}))
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, default=8, help="concurrent client threads (keep-alive)")
    p.add_argument("--seconds", type=float, default=10.0, help="load duration")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    p.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    p.add_argument("--size", type=int, nargs=2, default=(2048, 1536), metavar=("W", "H"), help="pyramid size")
    p.add_argument("--start-timeout", type=float, default=180.0, help="seconds to wait for gunicorn to answer")
    p.add_argument("--keep", action="store_true", help="keep the temporary site folder")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="webapp.settings",
        PYTHONPATH=str(ROOT),
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",
        MEDIA_ROOT=str(tmp / "media"),
        TERAPAN_VAR_DIR=str(tmp / "var"),
        LOG_LEVEL="ERROR",
    )
    return env


def _wait_ready(port: int, headers: dict[str, str], path: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path, headers=headers)
            if c.getresponse().status == 200:
                c.close()
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer in time")


class _Client(threading.Thread):
    def __init__(self, port: int, site: dict[str, Any], headers: dict[str, str], until: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.port, self.site, self.headers, self.until = port, site, headers, until
        self.rng = random.Random(seed)
        self.lat: dict[str, list[float]] = {"tile": [], "list": [], "comment": []}
        self.errors: list[str] = []
        self.conn: http.client.HTTPConnection | None = None
        self.connects = 0

    def _request(self, method: str, path: str, body: bytes | None, extra: dict[str, str]) -> int:
        for attempt in (0, 1):  # one reconnect if the server closed the idle connection
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                self.connects += 1
            try:
                self.conn.request(method, path, body=body, headers={**self.headers, **extra})
                resp = self.conn.getresponse()
                resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return resp.status
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def run(self) -> None:
        site = self.site
        while time.monotonic() < self.until:
            u = self.rng.random()
            if u < 0.6:
                kind, method, path, body, extra, want = "tile", "GET", self.rng.choice(site["tiles"]), None, {}, 200
            elif u < 0.9:
                kind, method, path, body, extra, want = (
                    "list",
                    "GET",
                    f"/api/p/{site['slug']}/annotations/",
                    None,
                    {},
                    200,
                )
            else:
                pk = self.rng.choice(site["regions"])
                body = json.dumps({"body": f"load test {self.rng.random():.6f}"}).encode()
                kind, method, path, want = "comment", "POST", f"/api/annotations/{pk}/comments/", 201
                extra = {"Content-Type": "application/json", "X-CSRFToken": site["csrf"]}
            t0 = time.perf_counter()
            try:
                status = self._request(method, path, body, extra)
            except (http.client.HTTPException, OSError) as e:
                self.errors.append(f"{method} {path}: {type(e).__name__}: {e}")
                continue
            self.lat[kind].append(time.perf_counter() - t0)
            if status != want:
                self.errors.append(f"{method} {path}: HTTP {status}")
        if self.conn is not None:
            self.conn.close()


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values) * 1000.0, q)), 2) if values else None


def _stop_redis(var_dir: Path) -> None:
    pidfile = var_dir / "redis.pid"
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)


def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="terapan-api-"))
    env = _env(tmp)
    proc: subprocess.Popen[bytes] | None = None
    log = None
    t_setup = time.perf_counter()
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
        out = subprocess.run(
            [sys.executable, "-c", SETUP, json.dumps(list(args.size))],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        site = json.loads(out.stdout.strip().splitlines()[-1])
        site["csrf"] = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
        headers = {"Cookie": f"sessionid={site['session']}; csrftoken={site['csrf']}", "Host": "127.0.0.1"}
        port = _free_port()
        log = open(tmp / "gunicorn.log", "wb")  # noqa: SIM115 - closed in the finally block
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "webapp.wsgi:application", "--bind", f"127.0.0.1:{port}",
                "--workers", str(args.workers), "--worker-class", "gthread", "--threads", str(args.threads),
                "--keep-alive", "30", "--log-level", "warning",
            ],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        _wait_ready(port, headers, f"/api/p/{site['slug']}/annotations/", proc, timeout=args.start_timeout)
        setup_s = time.perf_counter() - t_setup
        t0 = time.monotonic()
        until = t0 + args.seconds
        clients = [_Client(port, site, headers, until, seed=i) for i in range(args.clients)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        elapsed = time.monotonic() - t0
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log is not None:
            log.close()
        _stop_redis(tmp / "var")
        if proc is not None and proc.returncode not in (0, -signal.SIGTERM):
            print((tmp / "gunicorn.log").read_text(errors="replace")[-2000:], file=sys.stderr)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    lat = {k: [v for c in clients for v in c.lat[k]] for k in ("tile", "list", "comment")}
    every = [v for vals in lat.values() for v in vals]
    errors = [e for c in clients for e in c.errors]
    emit(
        {
            "bench": "api",
            "clients": args.clients,
            "workers": args.workers,
            "threads": args.threads,
            "seconds": round(elapsed, 2),
            "requests": len(every),
            "requests_per_s": round(len(every) / elapsed, 1),
            "p50_ms": _pct(every, 50),
            "p99_ms": _pct(every, 99),
            "by_kind": {k: {"requests": len(v), "p50_ms": _pct(v, 50), "p99_ms": _pct(v, 99)} for k, v in lat.items()},
            "connections": sum(c.connects for c in clients),
            "errors": len(errors),
            "error_samples": errors[:5],
            "pyramid": {
                "width": site["pyramid"]["width"],
                "height": site["pyramid"]["height"],
                "tiles": len(site["tiles"]),
            },
            "setup_s": round(setup_s, 1),
            "cpu_count": os.cpu_count(),
        }
    )
    return 0 if not errors else 1
