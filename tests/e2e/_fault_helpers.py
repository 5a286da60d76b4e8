"""Shared pieces of the fault-injection tests: real workers, a real Redis, real files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest


@pytest.fixture
def fault_env(settings, tmp_path: Path):  # noqa: ANN001, ANN201
    """Media under tmp_path, quick retries (1 s) for the worker subprocesses too."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.TERAPAN_RETRY_INTERVALS = [1]
    os.environ["MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
    os.environ["TERAPAN_RETRY_INTERVALS"] = "1"
    yield tmp_path
    os.environ.pop("TERAPAN_RETRY_INTERVALS", None)


def wait_done(job_pks: list[int], timeout: float) -> float:
    """Seconds until every job in JOB_PKS is done; fails the test on timeout."""
    from webapp.panoramas.models import Job, Status

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        rows = list(Job.objects.filter(pk__in=job_pks))
        if all(j.status == Status.DONE for j in rows):
            return time.monotonic() - t0
        time.sleep(0.25)
    rows = Job.objects.filter(pk__in=job_pks).values_list("pk", "kind", "status", "attempts", "message", "error")
    pytest.fail(f"jobs not done after {timeout:.0f} s: {list(rows)}")


def wait_for(predicate, timeout: float, what: str, every: float = 0.02):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}")


def horse_of(job_pk: int) -> int | None:
    """The pid of the process running Job row JOB_PK now (from its log), if alive."""
    import re

    from webapp.panoramas.models import Job

    found = re.findall(r"pid (\d+)", Job.objects.get(pk=job_pk).log)
    if not found:
        return None
    pid = int(found[-1])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if ".tmp" in p.name or ".staging." in p.name]
