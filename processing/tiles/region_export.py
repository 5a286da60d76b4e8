"""Images cut from a Deep Zoom pyramid: exports, thumbnails and IIIF tiles.

Pure functions on a pyramid folder (no Django). A region of the panorama is
read from the coarsest level that still holds at least the requested
resolution, block by block, so memory follows the output size and never the
panorama's area. When the requested size equals the level's pixels (a IIIF
tile on the pyramid's grid, a thumbnail at a level size) the tiles' pixels are
copied unchanged; otherwise each output pixel centre is mapped onto the level
and interpolated once (bilinear; the level is at most 2x finer than the output,
so this is a mild reduction).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyvips

from processing.io.atomic import atomic_path
from processing.io.errors import InputError

from .pyramid import level_size, num_levels, tile_path

Rect = tuple[int, int, int, int]  # x, y, w, h in full-resolution pixels

#: Formats an export may be written as, with their file suffix.
EXPORT_FORMATS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "tif": ".tif", "tiff": ".tif"}
BLOCK = 1024  # output pixels per block side


class ExportError(ValueError):
    """A request that cannot be served as asked (one line, says why)."""


@dataclass(frozen=True)
class PyramidGeometry:
    width: int
    height: int
    tile_size: int
    overlap: int
    fmt: str = "jpg"

    @property
    def levels(self) -> int:
        return num_levels(self.width, self.height)

    def divisor(self, level: int) -> int:
        """Full-resolution pixels per level pixel (a power of two)."""
        return 1 << (self.levels - 1 - level)


def _level_span(geo: PyramidGeometry, level: int, start: int, length: int, full: int, level_full: int) -> float:
    """Level pixels covered by START..START+LENGTH; a span reaching the image's edge
    ends at the level's edge (level sizes round up)."""
    d = geo.divisor(level)
    end = level_full if start + length >= full else (start + length) / d
    return end - start / d


def choose_level(geo: PyramidGeometry, rect: Rect, out_w: int, out_h: int) -> int:
    """Coarsest level on which RECT spans at least OUT_W x OUT_H pixels.

    A request at a level's own size (a IIIF size listed in info.json, an edge
    tile) lands exactly on that level.
    """
    x, y, w, h = rect
    for level in range(geo.levels):
        lw, lh = level_size(geo.width, geo.height, level)
        if (
            _level_span(geo, level, x, w, geo.width, lw) >= out_w - 1e-9
            and _level_span(geo, level, y, h, geo.height, lh) >= out_h - 1e-9
        ):
            return level
    return geo.levels - 1


def clip_rect(geo: PyramidGeometry, rect: Rect) -> Rect:
    """RECT clipped to the image; ExportError when nothing is left."""
    x, y, w, h = (int(v) for v in rect)
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(geo.width, x + w), min(geo.height, y + h)
    if w <= 0 or h <= 0 or x1 <= x0 or y1 <= y0:
        raise ExportError(f"region {x},{y},{w},{h} is outside the {geo.width}x{geo.height} image")
    return x0, y0, x1 - x0, y1 - y0


def output_size(rect: Rect, width: int | None, height: int | None, max_pixels: int, max_side: int) -> tuple[int, int]:
    """Output size for RECT at the requested WIDTH and/or HEIGHT (aspect kept when one is given).

    Never larger than the region itself (a pyramid holds no finer detail).
    """
    _, _, w, h = rect
    if width is None and height is None:
        ow, oh = w, h
    elif height is None:
        ow, oh = int(width), max(1, round(h * int(width) / w))
    elif width is None:
        ow, oh = max(1, round(w * int(height) / h)), int(height)
    else:
        ow, oh = int(width), int(height)
    if ow < 1 or oh < 1:
        raise ExportError(f"output size {ow}x{oh} must be at least 1x1")
    if ow > w or oh > h:
        raise ExportError(f"output {ow}x{oh} is larger than the region ({w}x{h}); the pyramid has no finer detail")
    if ow > max_side or oh > max_side:
        raise ExportError(f"output {ow}x{oh} exceeds the limit of {max_side} pixels a side")
    if ow * oh > max_pixels:
        raise ExportError(f"output {ow}x{oh} ({ow * oh / 1e6:.1f} MP) exceeds the limit of {max_pixels / 1e6:.1f} MP")
    return ow, oh


class _TileReader:
    """Level pixels from tile files, overlap removed; keeps the tiles of recent rows."""

    def __init__(self, pyr_dir: Path, geo: PyramidGeometry, level: int) -> None:
        self.dir, self.geo, self.level = pyr_dir, geo, level
        self.lw, self.lh = level_size(geo.width, geo.height, level)
        self.cache: dict[tuple[int, int], np.ndarray] = {}

    def _tile(self, col: int, row: int) -> np.ndarray:
        key = (col, row)
        if key not in self.cache:
            path = tile_path(self.dir, self.level, col, row, self.geo.fmt)
            if not path.is_file():
                raise InputError(path, "tile missing from the pyramid")
            try:
                arr = pyvips.Image.new_from_file(str(path), access="sequential").numpy()
            except pyvips.Error as e:
                raise InputError(path, f"cannot read tile: {str(e).splitlines()[0]}") from e
            if arr.ndim == 2:
                arr = np.repeat(arr[:, :, None], 3, axis=2)
            self.cache[key] = arr[:, :, :3] if arr.shape[2] >= 3 else np.repeat(arr[:, :, :1], 3, axis=2)
        return self.cache[key]

    def forget_rows_above(self, row: int) -> None:
        for key in [k for k in self.cache if k[1] < row]:
            del self.cache[key]

    def window(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Level pixels [y0:y1, x0:x1] (inside the level) as uint8 HxWx3."""
        ts, ov = self.geo.tile_size, self.geo.overlap
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        for row in range(y0 // ts, (y1 - 1) // ts + 1):
            for col in range(x0 // ts, (x1 - 1) // ts + 1):
                tile = self._tile(col, row)
                # Level pixel X lies at tile-local X - col*ts + left overlap.
                left = ov if col > 0 else 0
                top = ov if row > 0 else 0
                ax0, ax1 = max(x0, col * ts), min(x1, (col + 1) * ts, self.lw)
                ay0, ay1 = max(y0, row * ts), min(y1, (row + 1) * ts, self.lh)
                tx, ty = ax0 - col * ts + left, ay0 - row * ts + top
                out[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = tile[ty : ty + ay1 - ay0, tx : tx + ax1 - ax0]
        return out


def iter_region_blocks(
    pyr_dir: str | Path, geo: PyramidGeometry, rect: Rect, out_w: int, out_h: int, block: int = BLOCK
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield (x, y, pixels) blocks of the output image: RECT resampled to OUT_W x OUT_H."""
    x, y, w, h = rect
    level = choose_level(geo, rect, out_w, out_h)
    d = geo.divisor(level)
    reader = _TileReader(Path(pyr_dir), geo, level)
    lw, lh = reader.lw, reader.lh
    sx, sy = x / d, y / d
    sw = _level_span(geo, level, x, w, geo.width, lw)
    sh = _level_span(geo, level, y, h, geo.height, lh)
    # On the level's grid at the level's own size (a IIIF tile, a level-sized
    # thumbnail): copy the pixels.
    exact = sx.is_integer() and sy.is_integer() and abs(sw - out_w) < 1e-9 and abs(sh - out_h) < 1e-9
    fx, fy = sw / out_w, sh / out_h
    for by in range(0, out_h, block):
        bh = min(block, out_h - by)
        for bx in range(0, out_w, block):
            bw = min(block, out_w - bx)
            if exact:
                px0, py0 = int(sx) + bx, int(sy) + by
                yield bx, by, reader.window(px0, py0, px0 + bw, py0 + bh)
                continue
            # Output pixel centre (i + 0.5) maps to level coordinate s + (i + 0.5) * f - 0.5.
            u0 = sx + (bx + 0.5) * fx - 0.5
            v0 = sy + (by + 0.5) * fy - 0.5
            u1 = sx + (bx + bw - 0.5) * fx - 0.5
            v1 = sy + (by + bh - 0.5) * fy - 0.5
            cx0, cy0 = max(0, math.floor(u0) - 1), max(0, math.floor(v0) - 1)
            cx1, cy1 = min(lw, math.ceil(u1) + 2), min(lh, math.ceil(v1) + 2)
            src = reader.window(cx0, cy0, cx1, cy1)
            m = np.array([[fx, 0.0, u0 - cx0], [0.0, fy, v0 - cy0]], np.float64)
            out = cv2.warpAffine(
                src, m, (bw, bh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
            )
            yield bx, by, out
        reader.forget_rows_above(int(sy + by * fy) // geo.tile_size)


def render_region(pyr_dir: str | Path, geo: PyramidGeometry, rect: Rect, out_w: int, out_h: int) -> np.ndarray:
    """RECT of the panorama as an OUT_H x OUT_W x 3 uint8 array."""
    out = np.empty((out_h, out_w, 3), np.uint8)
    for bx, by, pixels in iter_region_blocks(pyr_dir, geo, rect, out_w, out_h):
        out[by : by + pixels.shape[0], bx : bx + pixels.shape[1]] = pixels
    return out


def write_image(pixels: np.ndarray, path: str | Path, fmt: str, quality: int = 90) -> Path:
    """Encode PIXELS as PNG, JPEG or TIFF (deflate) at PATH, written atomically."""
    fmt = fmt.lower()
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"format {fmt!r} is not one of png, jpg, tif")
    im = pyvips.Image.new_from_array(np.ascontiguousarray(pixels)).copy(interpretation="srgb")
    path = Path(path)
    with atomic_path(path, suffix=EXPORT_FORMATS[fmt]) as tmp:
        if fmt == "png":
            im.pngsave(str(tmp), compression=6, keep="none")
        elif fmt in ("jpg", "jpeg"):
            im.jpegsave(str(tmp), Q=int(quality), keep="none")
        else:
            im.tiffsave(str(tmp), compression="deflate", tile=True, keep="none")
    return path


def encode_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    """PIXELS as JPEG bytes (small outputs: IIIF tiles)."""
    im = pyvips.Image.new_from_array(np.ascontiguousarray(pixels)).copy(interpretation="srgb")
    return bytes(im.jpegsave_buffer(Q=int(quality), keep="none"))


def thumbnail_size(geo: PyramidGeometry, max_width: int, max_height: int) -> tuple[int, int]:
    """Largest size of the whole image fitting MAX_WIDTH x MAX_HEIGHT (never upscaled)."""
    f = min(1.0, max_width / geo.width, max_height / geo.height)
    return max(1, round(geo.width * f)), max(1, round(geo.height * f))


def write_thumbnail(
    pyr_dir: str | Path, geo: PyramidGeometry, out_path: str | Path, max_width: int = 960, max_height: int = 320
) -> tuple[int, int]:
    """A JPEG thumbnail of the whole panorama from the pyramid; returns its size."""
    ow, oh = thumbnail_size(geo, max_width, max_height)
    pixels = render_region(pyr_dir, geo, (0, 0, geo.width, geo.height), ow, oh)
    write_image(pixels, out_path, "jpg", quality=82)
    return ow, oh
