"""Builders of bad inputs (hand-made bombs, truncations, impostors) and the
small good frames they are mixed with. Shared by test_bad_input and
test_fuzz_decode; nothing here is copied from ../shared/data.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("TERAPAN_SHARED_DATA", ROOT.parent / "shared" / "data"))
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else "python"


def texture(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth, feature-rich uint8 RGB test picture (blobs and edges)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for _ in range(40):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(3, 14)
        col = rng.uniform(0.1, 1.0, 3)
        m = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
        img[m] = col
    img += 0.1 * np.sin(xx / 3.0)[:, :, None] * np.cos(yy / 5.0)[:, :, None]
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """PNG bytes whatever PATH's extension says (impostor tests rely on that)."""
    import cv2

    ok, buf = cv2.imencode(".png", rgb[:, :, ::-1] if rgb.ndim == 3 else rgb)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def write_jpeg(path: Path, rgb: np.ndarray, quality: int = 92) -> Path:
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def write_tiff(path: Path, arr: np.ndarray, **kw: object) -> Path:
    import tifffile

    tifffile.imwrite(path, arr, photometric="rgb" if arr.ndim == 3 else "minisblack", **kw)
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(path: Path, w: int = 100_000, h: int = 100_000) -> Path:
    """A ~1 kB PNG whose IHDR declares W x H RGB; IDAT inflates to 4 zero rows."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * ((1 + 3 * w) * 4), 9)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )
    return path


def _patch_tiff_tag(path: Path, tag_name: str, value: int) -> None:
    import tifffile

    with tifffile.TiffFile(path) as tf:
        tag = tf.pages[0].tags[tag_name]
        offset, dtype, byteorder = tag.valueoffset, tag.dtype, tf.byteorder
    fmt = {3: "H", 4: "I"}[int(dtype)]
    value = min(value, 0xFFFF) if fmt == "H" else value
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(byteorder + fmt, value))


def tiff_bomb(path: Path) -> Path:
    """A 16 x 16 TIFF (one tiny strip) whose IFD is patched to declare a huge size."""
    write_tiff(path, np.zeros((16, 16, 3), np.uint8))
    _patch_tiff_tag(path, "ImageWidth", 100_000)
    _patch_tiff_tag(path, "ImageLength", 100_000)
    return path


def tiff_many_samples(path: Path) -> Path:
    """A TIFF patched to declare 4096 samples per pixel (memory x 1365)."""
    write_tiff(path, np.zeros((16, 16, 3), np.uint8))
    _patch_tiff_tag(path, "SamplesPerPixel", 4096)
    return path


def jpeg_bomb(path: Path) -> Path:
    """A small JPEG whose SOF header is patched to declare 65500 x 65500."""
    write_jpeg(path, texture(32, 32))
    data = bytearray(path.read_bytes())
    i = 2
    while i < len(data) - 9:
        if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2):
            data[i + 5 : i + 9] = struct.pack(">HH", 65500, 65500)
            break
        i += 2 + struct.unpack(">H", bytes(data[i + 2 : i + 4]))[0]
    else:
        raise AssertionError("no SOF marker")
    path.write_bytes(bytes(data))
    return path


def truncate(src: Path, dst: Path, frac: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: max(1, int(len(data) * frac))])
    return dst


# ------------------------------------------------------------ fuzz worker
def fuzz_worker_main() -> None:
    """Decode files named on stdin, one JSON line each way (run in a subprocess).

    A crash in C code kills only this process; faulthandler prints where.
    Input: {"path": ..., "entry": "image" | "raw"}; output: {"result": ...}
    with "ok", "InputError" or "<ExceptionType>: message".
    """
    import faulthandler
    import json
    import sys

    faulthandler.enable()
    from processing.io import imageio
    from processing.io.errors import InputError
    from processing.io.safety import harden, limit_resources
    from processing.stack import develop

    harden()
    limit_resources(max_rss_bytes=int(os.environ.get("FUZZ_MAX_BYTES", 4 * 2**30)))
    for line in sys.stdin:
        task = json.loads(line)
        path = task["path"]
        try:
            imageio.probe(path)
            if task["entry"] == "raw":
                img = develop.develop_raw(path)
            else:
                img, _ = imageio.load_image(path)
            if not (img.ndim == 3 and img.shape[2] == 3 and np.isfinite(img).all()):
                raise AssertionError(f"bad decoded image {img.shape} {img.dtype}")
            result = "ok"
        except InputError as e:
            result = (
                "InputError" if e.path and Path(e.path).name == Path(path).name else f"InputError without the file: {e}"
            )
        except Exception as e:  # noqa: BLE001 - reported to the test
            result = f"{type(e).__name__}: {e}"[:500]
        sys.stdout.write(json.dumps({"result": result}) + "\n")
        sys.stdout.flush()
