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


def synchronize(xp: ModuleType) -> None:
    """Wait for queued device work (so stage timings are honest); no-op on NumPy."""
    if xp is not np:
        xp.cuda.Device().synchronize()


def release_pool(xp: ModuleType) -> None:
    """Give CuPy's cached free blocks back to the driver (so another framework,
    e.g. the model's JAX or TensorFlow, can allocate them); no-op on NumPy."""
    if xp is not np:
        xp.get_default_memory_pool().free_all_blocks()


def host_threads(default: int) -> int:
    """Threads for the CPU stages: TERAPAN_THREADS where set ("auto": every
    core), else DEFAULT.

    A property of the machine, not of the recipe (results are collected in
    order, so they do not depend on it): a 16-core GPU worker sets it to its
    core count, while the recipe's default suits a small shared machine.
    """
    raw = os.environ.get("TERAPAN_THREADS", "").strip()
    if not raw:
        return max(1, default)
    if raw.lower() == "auto":
        return os.cpu_count() or 1
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"TERAPAN_THREADS must be a positive integer, not {raw!r}") from None
    if n < 1:
        raise ValueError(f"TERAPAN_THREADS must be a positive integer, not {raw!r}")
    return n
