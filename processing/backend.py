"""Array backend: NumPy everywhere, CuPy where a CUDA device exists.

Chosen once at start-up; TERAPAN_DEVICE=cpu|gpu forces a choice (gpu fails
loudly when no device is usable).
"""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import Any

import numpy as np


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    try:
        import cupy  # type: ignore[import-not-found]

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def device() -> str:
    forced = os.environ.get("TERAPAN_DEVICE", "").strip().lower()
    if forced == "cpu":
        return "cpu"
    if forced == "gpu":
        if not gpu_available():
            raise RuntimeError("TERAPAN_DEVICE=gpu but no CUDA device is usable through CuPy")
        return "gpu"
    if forced not in ("", "auto"):
        raise ValueError(f"TERAPAN_DEVICE must be cpu, gpu or auto, not {forced!r}")
    return "gpu" if gpu_available() else "cpu"


def xp_for(dev: str | None = None) -> ModuleType:
    """The array module for DEV (default: the start-up choice)."""
    if (dev or device()) == "gpu":
        import cupy  # type: ignore[import-not-found]

        return cupy
    return np


def to_device(a: Any, dev: str | None = None) -> Any:
    return xp_for(dev).asarray(a)


def to_host(a: Any) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    get = getattr(a, "get", None)
    return get() if get is not None else np.asarray(a)
