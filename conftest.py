"""Loaded before Django's settings: each test session gets its own embedded
Redis and media folder, so parallel runs (and a running demo) never share queues."""

import os
import shutil
from pathlib import Path

_root = Path(__file__).resolve().parent
_var = _root / "var" / f"test-{os.getpid()}"
os.environ.setdefault("TERAPAN_VAR_DIR", str(_var))
os.environ.setdefault("MEDIA_ROOT", str(_var / "media"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ANN001
    var = Path(os.environ["TERAPAN_VAR_DIR"])
    if var == _var and var.exists():
        from webapp.embedded_redis import stop_server

        stop_server(var)
        if os.environ.get("TERAPAN_KEEP_TEST_VAR") != "1":
            shutil.rmtree(var, ignore_errors=True)
