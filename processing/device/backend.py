"""Array backend: NumPy everywhere, CuPy where a CUDA device exists.

Chosen once at start-up; TERAPAN_DEVICE=cpu|gpu forces a choice (gpu fails
loudly when no device is usable).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
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


def xp_of(a: Any) -> ModuleType:
    """The array module of A (cupy for CuPy arrays, else numpy)."""
    mod = type(a).__module__.split(".")[0]
    if mod == "cupy":
        import cupy  # type: ignore[import-not-found]

        return cupy
    return np


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


#: Device-to-host copies above this many bytes go through pinned staging buffers.
D2H_CHUNK = 64 << 20


def to_host(a: Any) -> np.ndarray:
    """A host (NumPy) copy of A; NumPy arrays pass through.

    Large CuPy arrays (a 720 MP float32 result is 8.6 GB) are copied in
    chunks through two pinned buffers, the GPU filling one while the host
    empties the other: a plain `.get()` of pageable memory ran at 2.9 GB/s on
    an H100 host. TERAPAN_D2H=plain forces the plain copy.
    """
    if isinstance(a, np.ndarray):
        return a
    get = getattr(a, "get", None)
    if get is None:
        return np.asarray(a)
    if a.nbytes <= 4 * D2H_CHUNK or os.environ.get("TERAPAN_D2H", "pinned") == "plain":
        return get()
    return _to_host_pinned(a)


def _to_host_pinned(a: Any) -> np.ndarray:
    import cupy  # type: ignore[import-not-found]

    a = cupy.ascontiguousarray(a)
    cupy.cuda.get_current_stream().synchronize()  # the side streams below do not wait for it
    out = np.empty(a.shape, a.dtype)
    src = a.reshape(-1).view(cupy.uint8)
    dst = out.reshape(-1).view(np.uint8)
    bufs = [np.frombuffer(cupy.cuda.alloc_pinned_memory(D2H_CHUNK), np.uint8, D2H_CHUNK) for _ in range(2)]
    streams = [cupy.cuda.Stream(non_blocking=True) for _ in range(2)]
    pending: tuple[int, int, int] | None = None
    for k, i in enumerate(range(0, src.size, D2H_CHUNK)):
        j, b = min(src.size, i + D2H_CHUNK), k % 2
        streams[b].synchronize()  # buffer b was emptied two chunks ago
        src[i:j].get(stream=streams[b], out=bufs[b][: j - i], blocking=False)
        if pending is not None:
            pi, pj, pb = pending
            streams[pb].synchronize()
            dst[pi:pj] = bufs[pb][: pj - pi]
        pending = (i, j, b)
    if pending is not None:
        pi, pj, pb = pending
        streams[pb].synchronize()
        dst[pi:pj] = bufs[pb][: pj - pi]
    return out


def synchronize(xp: ModuleType) -> None:
    """Wait for queued device work (so stage timings are honest); no-op on NumPy."""
    if xp is not np:
        xp.cuda.Device().synchronize()


def release_pool(xp: ModuleType) -> None:
    """Give CuPy's cached free blocks back to the driver (so another framework,
    e.g. the model's JAX or TensorFlow, can allocate them); no-op on NumPy."""
    if xp is not np:
        xp.get_default_memory_pool().free_all_blocks()
        xp.get_default_pinned_memory_pool().free_all_blocks()


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


def library_threads() -> str:
    """TERAPAN_LIB_THREADS: "one" (the default: OpenCV and BLAS single-threaded
    in the frame-parallel stages) or "native" (their own pools, as before; for
    comparison runs of `bench sr --lib-threads one,native`)."""
    raw = os.environ.get("TERAPAN_LIB_THREADS", "one").strip().lower() or "one"
    if raw not in ("one", "native"):
        raise ValueError(f"TERAPAN_LIB_THREADS must be one or native, not {raw!r}")
    return raw


@contextlib.contextmanager
def frame_parallel_libraries() -> Iterator[None]:
    """One thread each for OpenCV and BLAS inside, restored after.

    The stack's CPU stages already run one Python thread per frame or strip;
    OpenCV's and OpenBLAS's own pools on top of that oversubscribe the cores
    and spin between calls (measured with `bench sr --lib-threads
    one,native`, docs/gpu.md). Big single calls (deblur, sharpen, the model)
    run outside, with the libraries' own threads.
    """
    import cv2
    from threadpoolctl import threadpool_limits

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        cv2.setNumThreads(before)
