"""python -m processing bench develop: what one frame's develop stage costs.

A JPEG of --megapixels MP is made from the photo (enlarged, noise added,
quality 95), then, in this one process and with OpenCV on --cv-threads
threads, each step is timed --repeat times (best taken): decoding with
Pillow and with OpenCV (the stack pipeline's path when the pixels are
identical; checked here), the 8-bit to linear 16-bit lookup, the proxies made
from the full frame twice (registration and colour, as before) and once (the
colour proxy from the registration proxy, as now), and the pipeline's whole
per-frame step (`stackpipe._develop_one`). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .common import emit
from .sr import DEFAULT_GT


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gt", type=Path, default=DEFAULT_GT, help="photo to enlarge into the test frame")
    p.add_argument("--megapixels", type=float, default=45.0, help="frame size (45: the seed's camera)")
    p.add_argument("--repeat", type=int, default=3, help="timings per step (the best is reported)")
    p.add_argument("--cv-threads", type=int, default=1, help="OpenCV threads (1: as in the frame-parallel stages)")


def _best(fn: Callable[[], Any], n: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(max(1, n)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return round(best, 4), out


def run(args: argparse.Namespace) -> int:
    from PIL import Image, ImageOps

    from ..io.imageio import _jpeg_opencv, load_image
    from ..stack import pipeline as stackpipe
    from ..stack.develop import _U8_TO_LINEAR_U16
    from ..stack.warp import proxy

    cv2.setNumThreads(args.cv_threads)
    photo, _ = load_image(args.gt)
    f = np.sqrt(args.megapixels * 1e6 / (photo.shape[0] * photo.shape[1]))
    big = cv2.resize(photo, (int(photo.shape[1] * f), int(photo.shape[0] * f)), interpolation=cv2.INTER_CUBIC)
    frame = (np.clip(big, 0, 1) * 255 + 0.5).astype(np.uint8)
    noise = np.empty(frame.shape, np.int16)
    cv2.randn(noise, 0, 3)
    frame = cv2.add(frame.astype(np.int16), noise).clip(0, 255).astype(np.uint8)
    del big, noise
    p = stackpipe.StackParams()
    reg_px = max(p.align.feature_max_pixels, p.align.ecc_max_pixels, p.flow.max_pixels)
    with tempfile.TemporaryDirectory() as td:
        path = Path(td) / "frame.jpg"
        cv2.imwrite(str(path), frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])

        def pillow() -> np.ndarray:
            with Image.open(path) as im:
                ImageOps.exif_transpose(im, in_place=True)
                im.load()
                return np.asarray(im)

        s: dict[str, float] = {}
        s["decode_pillow"], a = _best(pillow, args.repeat)
        s["decode_opencv"], b = _best(lambda: _jpeg_opencv(path), args.repeat)
        identical = bool(b is not None and np.array_equal(a, b))
        s["lut_8bit_to_linear16"], img16 = _best(lambda: cv2.LUT(b, _U8_TO_LINEAR_U16), args.repeat)
        col_px = p.color.match_max_pixels
        s["proxies_two_passes"], _ = _best(lambda: (proxy(img16, reg_px), proxy(img16, col_px)), args.repeat)
        s["proxies_one_pass"], _ = _best(lambda: proxy(proxy(img16, reg_px)[0], col_px), args.repeat)
        s["develop_one_frame"], _ = _best(lambda: stackpipe._develop_one(path, p, reg_px, False), args.repeat)
        size = path.stat().st_size
    emit(
        {
            "bench": "develop",
            "frame": [int(frame.shape[1]), int(frame.shape[0])],
            "megapixels": round(frame.shape[0] * frame.shape[1] / 1e6, 2),
            "jpeg_bytes": size,
            "cv_threads": args.cv_threads,
            "repeat": args.repeat,
            "opencv_equals_pillow": identical,
            "seconds": s,
            "opencv_over_pillow": round(s["decode_opencv"] / s["decode_pillow"], 3),
            "one_over_two_proxy_passes": round(s["proxies_one_pass"] / s["proxies_two_passes"], 3),
        }
    )
    return 0
