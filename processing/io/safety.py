"""Process-wide decoder hardening and per-job resource limits.

`harden()` is called once per process (the CLI, each RQ worker) before any
untrusted file is opened: it bounds Pillow and OpenCV by pixel count, blocks
every libvips loader except the four formats Terapan reads (JPEG, PNG, TIFF,
WebP: no ImageMagick, SVG, MATLAB, CSV, ...), and refuses a LibRaw with known
decoder CVEs. `limit_resources()` caps one job's address space and CPU time so
a decoder that runs away fails that job alone (call it in RQ's forked work
horse, never in a long-lived process you want to keep).
"""

from __future__ import annotations

import math
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any

from .errors import InputError

#: libvips loader classes re-allowed after blocking the whole VipsForeignLoad tree.
DEFAULT_VIPS_LOADERS: tuple[str, ...] = (
    "VipsForeignLoadJpeg",
    "VipsForeignLoadPng",
    "VipsForeignLoadTiff",
    "VipsForeignLoadWebp",
)
#: `vips-loader` names those classes report on an opened image.
VIPS_LOADER_NICKNAMES = {f"{n}load{s}" for n in ("jpeg", "png", "tiff", "webp") for s in ("", "_buffer", "_source")}
#: OpenCV's own decoder limit (it reads the variable once, at cv2 import).
OPENCV_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"

_state: dict[str, Any] = {}


class ResourceLimitExceeded(RuntimeError):
    """A job ran past the CPU time given by limit_resources()."""


def _default_max_pixels() -> int:
    from .imageio import DEFAULT_MAX_PIXELS

    return DEFAULT_MAX_PIXELS


def harden(
    max_pixels: int | None = None,
    vips_loaders: tuple[str, ...] = DEFAULT_VIPS_LOADERS,
    require_libraw: bool = True,
) -> dict[str, Any]:
    """Harden every decoder of this process; idempotent. Returns what was set.

    Raises RuntimeError when cv2 was imported before its pixel limit was set
    (too late to bound it) or when LibRaw is too old.
    """
    from PIL import Image, ImageFile

    cv2_too_early = "cv2" in sys.modules and OPENCV_ENV not in os.environ
    from . import imageio

    cv2_too_early = cv2_too_early or imageio.CV2_IMPORTED_UNBOUNDED
    max_pixels = int(max_pixels or imageio.DEFAULT_MAX_PIXELS)
    # Pillow: refuse (not just warn) above max_pixels; never decode truncated data.
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False

    # OpenCV reads its limit only at import: it must be in the environment first.
    if cv2_too_early:
        raise RuntimeError(f"cv2 was imported before {OPENCV_ENV} was set; import processing.io.imageio first")
    os.environ.setdefault(OPENCV_ENV, str(max_pixels))

    # libvips: child processes inherit the untrusted block through the environment.
    os.environ["VIPS_BLOCK_UNTRUSTED"] = "1"
    vips = _harden_vips(vips_loaders)

    libraw = None
    if require_libraw:
        from .imageio import check_libraw, libraw_version

        check_libraw()
        libraw = ".".join(str(x) for x in libraw_version())

    _state.update(
        max_pixels=max_pixels,
        opencv_max_pixels=int(os.environ[OPENCV_ENV]),
        vips=vips,
        libraw=libraw,
    )
    return dict(_state)


def _harden_vips(loaders: tuple[str, ...]) -> dict[str, Any]:
    try:
        import pyvips
    except (ImportError, OSError):  # libvips absent: nothing to block
        return {"available": False}
    if not pyvips.at_least_libvips(8, 13):
        raise RuntimeError("libvips older than 8.13 cannot block loaders; upgrade it")
    pyvips.block_untrusted_set(True)
    pyvips.operation_block_set("VipsForeignLoad", True)
    for name in loaders:
        pyvips.operation_block_set(name, False)
    return {
        "available": True,
        "version": f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}",
        "loaders": list(loaders),
    }


def hardened() -> bool:
    """True once harden() has run in this process."""
    return bool(_state)


def check_vips_image(img: Any, path: str | Path, max_pixels: int | None = None) -> Any:
    """Header checks on an image opened with pyvips (nothing decoded yet).

    Refuses images from loaders other than ours, zero or excessive area and
    odd band counts, with an InputError naming PATH. Returns IMG.
    """
    max_pixels = int(max_pixels or _default_max_pixels())
    loader = img.get("vips-loader") if img.get_typeof("vips-loader") else None
    if loader is not None and loader not in VIPS_LOADER_NICKNAMES:
        raise InputError(path, f"unsupported image type (libvips loader {loader})")
    w, h, bands = int(img.width), int(img.height), int(img.bands)
    if w < 1 or h < 1:
        raise InputError(path, f"image has no pixels ({w} x {h})")
    if w * h > max_pixels:
        raise InputError(
            path,
            f"image declares {w} x {h} = {w * h / 1e6:.1f} MP, above the limit of "
            f"{max_pixels / 1e6:.1f} MP (refused before decoding)",
        )
    if bands > 4:
        raise InputError(path, f"image has {bands} bands; at most 4 are supported")
    return img


def _on_xcpu(signum: int, frame: Any) -> None:
    raise ResourceLimitExceeded("CPU time limit of this job exceeded")


def limit_resources(
    max_rss_bytes: int | None = None, max_seconds: float | None = None, grace_seconds: int = 5
) -> dict[str, tuple[int, int]]:
    """Cap this process's address space and CPU time (seconds from now).

    Meant for the start of each job in RQ's forked work horse: the limits die
    with it. Memory: RLIMIT_AS, so an allocation past the cap raises
    MemoryError (NumPy, Pillow) or fails the C decoder, instead of the OOM
    killer taking the machine's other jobs. Note that CUDA and TensorFlow
    reserve large virtual ranges: give GPU jobs a generous cap or None. CPU:
    the soft RLIMIT_CPU raises ResourceLimitExceeded (SIGXCPU) in Python code;
    the hard limit GRACE_SECONDS later kills a decoder stuck in C.
    Returns the previous limits.
    """
    previous = {
        "as": resource.getrlimit(resource.RLIMIT_AS),
        "cpu": resource.getrlimit(resource.RLIMIT_CPU),
    }
    if max_rss_bytes is not None:
        if max_rss_bytes <= 0:
            raise ValueError("max_rss_bytes must be positive")
        _soft, hard = previous["as"]
        cap = int(max_rss_bytes) if hard == resource.RLIM_INFINITY else min(int(max_rss_bytes), hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    if max_seconds is not None:
        if max_seconds <= 0:
            raise ValueError("max_seconds must be positive")
        used = resource.getrusage(resource.RUSAGE_SELF)
        now = math.ceil(used.ru_utime + used.ru_stime)
        _soft, hard = previous["cpu"]
        soft = now + max(1, math.ceil(max_seconds))
        new_hard = soft + max(1, grace_seconds)
        if hard != resource.RLIM_INFINITY:
            new_hard = min(new_hard, hard)
            soft = min(soft, new_hard)
        signal.signal(signal.SIGXCPU, _on_xcpu)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, new_hard))
    return previous
