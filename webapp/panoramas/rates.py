"""Rates measured on this installation (bench farm runs and completed jobs), for planning.

One small JSON file, VAR_DIR/farm-rates.json (TERAPAN_FARM_RATES overrides the
path): ``python -m processing bench farm --rates-file ...`` writes it, and each
completed block job folds its own rate in (an exponential mean), so estimates
follow the machines that actually run the jobs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from processing.io.atomic import atomic_path


def rates_path() -> Path:
    return Path(os.environ.get("TERAPAN_FARM_RATES") or Path(settings.VAR_DIR) / "farm-rates.json")


def load_rates() -> dict[str, Any]:
    try:
        data = json.loads(rates_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_rate(name: str, value: float, source: str = "job", weight: float = 0.2) -> None:
    """Fold VALUE into rate NAME (exponential mean; the first value is taken as is)."""
    data = load_rates()
    rates = data.setdefault("rates", {})
    old = rates.get(name)
    rates[name] = (
        float(value) if not isinstance(old, int | float) else (1 - weight) * float(old) + weight * float(value)
    )
    data.setdefault("sources", {})[name] = {"from": source, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path = rates_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1))
