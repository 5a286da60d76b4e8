"""Generic fixtures shared by every test layer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("TERAPAN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _fresh_queues(request: pytest.FixtureRequest):  # noqa: ANN202
    """Tests with real workers start from an empty Redis: jobs left queued by
    earlier tests (whose database rows were rolled back) must not run."""
    if request.node.get_closest_marker("e2e") is None:
        yield
        return
    import django_rq

    conn = django_rq.get_connection("default")
    conn.flushdb()
    yield
    conn.flushdb()
