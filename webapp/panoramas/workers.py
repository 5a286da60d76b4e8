"""RQ workers as subprocesses (the embedded default: one machine, no set-up)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from django.conf import settings


def database_url() -> str:
    """The URL of the database this process uses now (the test database in tests)."""
    from urllib.parse import quote

    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    if "postgresql" in db["ENGINE"]:
        auth = quote(db.get("USER") or "")
        if db.get("PASSWORD"):
            auth += ":" + quote(db["PASSWORD"])
        host = db.get("HOST") or "localhost"
        port = db.get("PORT") or 5432
        return f"postgres://{auth}@{host}:{port}/{db['NAME']}"
    raise RuntimeError(f"cannot pass database {db['ENGINE']} to a worker")


def start_workers(
    n: int, queues: tuple[str, ...] = ("gpu", "default"), log_dir: Path | None = None
) -> list[subprocess.Popen]:
    """Start N `manage.py rqworker` processes sharing this process's settings."""
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    env["REDIS_URL"] = settings.REDIS_URL
    env["DATABASE_URL"] = database_url()
    env["MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
    log_dir = log_dir or Path(settings.VAR_DIR) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(n):
        log = open(log_dir / f"worker-{i}.log", "ab")  # noqa: SIM115 - owned by the child
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(Path(settings.BASE_DIR) / "manage.py"),
                    "rqworker",
                    *queues,
                    "--with-scheduler",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs


def stop_workers(procs: list[subprocess.Popen], timeout: float = 15.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
