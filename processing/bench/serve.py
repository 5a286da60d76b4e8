"""python -m processing bench serve: loopback load test of tile serving.

Builds a pyramid from a synthetic image, sets up a throw-away database and
MEDIA_ROOT (through manage.py in child processes: processing/ never imports
Django), starts gunicorn on 127.0.0.1 on a free port, then N client threads
with keep-alive connections request random tiles for a bounded time. Prints
one JSON object: requests/s, p50/p99 latency (ms), errors.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .common import emit

ROOT = Path(__file__).resolve().parents[2]

SETUP = r"""
from webapp.panoramas.models import Panorama, Pyramid
import json, sys
info = json.loads(sys.argv[-1])
p = Panorama.objects.create(slug="bench", title="Bench", is_public=True)
pyr = Pyramid.objects.create(panorama=p, version=1, path="pyr", width=info["width"], height=info["height"],
    tile_size=info["tile_size"], overlap=info["overlap"], format=info["format"], state="ready")
p.published_pyramid = pyr
p.save()
print(pyr.pk)
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="8000x4000", help="WxH of the synthetic panorama")
    p.add_argument("--clients", type=int, default=16, help="concurrent keep-alive clients")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    p.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker (gthread)")
    p.add_argument("--etag", action="store_true", help="send If-None-Match (measures 304s)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return sorted_vals[k]


def run(args: argparse.Namespace) -> int:
    # long: a benchmark script read top to bottom: a pyramid, gunicorn on it,
    # client threads loading it, one JSON line, and the cleanup in `finally`.
    from processing.tiles.pyramid import PyramidParams, build_pyramid, level_grid, num_levels

    width, height = (int(v) for v in args.size.lower().split("x"))
    work = Path(tempfile.mkdtemp(prefix="terapan-bench-serve-"))
    server = None
    try:
        import pyvips

        src = work / "src.tif"
        noise = pyvips.Image.gaussnoise(width, height, sigma=30, mean=128).cast("uchar")
        noise.bandjoin([noise, noise]).copy(interpretation="srgb").tiffsave(str(src), tile=True, compression="jpeg")
        media = work / "media"
        media.mkdir()
        info = build_pyramid(src, media / "pyr", PyramidParams())
        env = {
            **os.environ,
            "DEBUG": "0",
            "SECRET_KEY": "bench-only-" + os.urandom(16).hex(),
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "0",
            "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
            "MEDIA_ROOT": str(media),
            "TERAPAN_VAR_DIR": str(work / "var"),
            "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6399/0"),  # never contacted
            "LOG_LEVEL": "ERROR",
        }
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        import json

        out = subprocess.run(
            [*manage, "shell", "-c", SETUP.replace("sys.argv[-1]", repr(json.dumps(info)))],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        pyr_id = int(out.stdout.strip().splitlines()[-1])
        port = _free_port()
        gunicorn = [
            sys.executable,
            "-m",
            "gunicorn",
            "webapp.wsgi:application",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            str(args.workers),
            "-k",
            "gthread",
            "--threads",
            str(args.threads),
            "--keep-alive",
            "30",
            "--log-level",
            "warning",
        ]
        server = subprocess.Popen(gunicorn, cwd=ROOT, env=env, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", f"/tiles/{pyr_id}/v1/image.dzi")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                print("error: gunicorn did not start", file=sys.stderr)
                return 1
            time.sleep(0.2)

        tiles = []
        for level in range(num_levels(width, height)):
            nc, nr = level_grid(width, height, info["tile_size"], level)
            tiles += [f"/tiles/{pyr_id}/v1/image_files/{level}/{c}_{r}.jpg" for c in range(nc) for r in range(nr)]
        lat: list[list[float]] = [[] for _ in range(args.clients)]
        errors = [0] * args.clients
        nbytes = [0] * args.clients
        stop = time.monotonic() + args.duration
        etags: dict[str, str] = {}

        def client(i: int) -> None:
            rnd = random.Random(i)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            while time.monotonic() < stop:
                url = rnd.choice(tiles)
                headers = {"If-None-Match": etags[url]} if args.etag and url in etags else {}
                t0 = time.perf_counter()
                try:
                    conn.request("GET", url, headers=headers)
                    resp = conn.getresponse()
                    body = resp.read()
                    ok = resp.status in (200, 304)
                    if resp.status == 200:
                        etags[url] = resp.getheader("ETag", "")
                except (OSError, http.client.HTTPException):
                    ok, body = False, b""
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                lat[i].append((time.perf_counter() - t0) * 1000)
                nbytes[i] += len(body)
                errors[i] += 0 if ok else 1
            conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        all_lat = sorted(v for lst in lat for v in lst)
        emit(
            {
                "bench": "serve",
                "server": f"gunicorn gthread {args.workers}x{args.threads}, DEBUG=0, FileResponse",
                "clients": args.clients,
                "duration_s": round(elapsed, 2),
                "tiles_in_pyramid": len(tiles),
                "requests": len(all_lat),
                "requests_per_s": round(len(all_lat) / elapsed, 1),
                "mb_per_s": round(sum(nbytes) / elapsed / 1e6, 2),
                "p50_ms": round(_percentile(all_lat, 0.50), 2),
                "p99_ms": round(_percentile(all_lat, 0.99), 2),
                "errors": sum(errors),
                "if_none_match": bool(args.etag),
                "cpu_count": os.cpu_count(),
            }
        )
        return 0
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)
