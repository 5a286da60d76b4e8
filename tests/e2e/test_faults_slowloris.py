"""Issue 15, fault injection: slow clients against the production gunicorn settings.

gunicorn runs with gunicorn.conf.py (what compose and the Dockerfile run) on
127.0.0.1 only. SLOW sockets each send a request head one header line at a
time, far slower than any browser, for DURATION seconds (bounded in count and
time); meanwhile the site must keep answering GET / within a few seconds. With
the old settings (4 sync workers) four such sockets made every GET / time out.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
SLOW = 24  # six times what took the old settings down; below WORKERS x THREADS (64)
DURATION = 15.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float) -> tuple[int, float]:
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return r.status, time.monotonic() - t0
    except Exception:
        return 0, time.monotonic() - t0


def test_slow_clients_do_not_stop_the_site(settings, tmp_path: Path) -> None:  # noqa: ANN001
    from webapp.panoramas.workers import database_url

    port = _free_port()
    env = dict(os.environ)
    env.update(
        GUNICORN_BIND=f"127.0.0.1:{port}",
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        MEDIA_ROOT=str(tmp_path / "media"),
        DJANGO_SETTINGS_MODULE="webapp.settings",
    )
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [gunicorn, "webapp.wsgi", "-c", str(ROOT / "gunicorn.conf.py")],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    socks: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 90
        while _get(url, 5)[0] != 200:
            assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "gunicorn did not answer"
            time.sleep(0.5)
        for _ in range(SLOW):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            socks.append(s)
        answers: list[tuple[int, float]] = []
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                answers.append(_get(url, 10))
                stop.wait(0.5)

        prober = threading.Thread(target=probe)
        prober.start()
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < DURATION:
            for s in socks:  # one more header line per socket per second: never a full head
                with contextlib.suppress(OSError):
                    s.sendall(f"X-Slow-{i}: 1\r\n".encode())
            i += 1
            time.sleep(1.0)
        stop.set()
        prober.join()
        still_open = sum(1 for s in socks if s.fileno() != -1)
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()
    codes = [c for c, _ in answers]
    worst = max(t for _, t in answers)
    assert len(answers) >= 5 and all(c == 200 for c in codes), answers
    assert worst < 5.0, answers
    assert still_open == SLOW
    print(f"\n{SLOW} slow sockets for {DURATION:.0f} s: {len(answers)} GET / all 200, slowest {worst:.2f} s")
