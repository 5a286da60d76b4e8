"""Deep Zoom pyramids: build one with libvips, or update one region of it.

`build_pyramid` streams the input through `dzsave` (sequential access), so
memory does not grow with the panorama's area; the pyramid is written into a
staging folder beside OUT_DIR and renamed into place, so a version appears
whole or not at all.

`update_pyramid` makes a new version from a previous one after a region of
the image changed: only the tiles whose pixels can differ (the rectangle at
every level, overlap and ancestors included) are re-encoded; every other tile
is hard-linked from the previous version. Levels are reduced exactly as
dzsave does (2x2 mean, rounded, edge pixel repeated for odd sizes), so a PNG
pyramid updated this way is identical to one rebuilt from scratch.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import shutil
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyvips

from ..io.atomic import atomic_dir
from ..io.errors import InputError, ProcessingError
from ..io.params import StageParams

# Refuse loaders libvips marks untrusted (ImageMagick, MATLAB, FITS, ...).
pyvips.block_untrusted_set(True)

#: libvips loaders accepted for pyramid inputs (pyramids are built from our own
#: composites: TIFF or .v, but plain web formats are fine too).
ALLOWED_LOADERS = {"tiffload", "vipsload", "pngload", "jpegload", "webpload", "ppmload"}
FORMATS = ("jpg", "png", "webp")
#: Area limit for one pyramid input (pixels); a terapixel is the design target.
DEFAULT_MAX_PIXELS = int(os.environ.get("TERAPAN_MAX_PYRAMID_PIXELS", 2 * 10**12))
BASENAME = "image"

Progress = Callable[[float], None]
Rect = tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class PyramidParams(StageParams):
    VERSION: ClassVar[int] = 1
    STAGE: ClassVar[str] = "pyramid"

    tile_size: int = 254
    overlap: int = 1
    format: str = "jpg"
    quality: int = 85

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"pyramid: format must be one of {FORMATS}, not {self.format!r}")
        if not 16 <= self.tile_size <= 8192:
            raise ValueError("pyramid: tile_size must be 16..8192")
        if not 0 <= self.overlap <= self.tile_size // 2:
            raise ValueError("pyramid: overlap must be 0..tile_size/2")
        if not 1 <= self.quality <= 100:
            raise ValueError("pyramid: quality must be 1..100")

    @property
    def suffix(self) -> str:
        """dzsave's tile suffix with the saver's options."""
        if self.format == "png":
            return ".png"
        return f".{self.format}[Q={self.quality}]"


# --- geometry ---------------------------------------------------------------


def num_levels(width: int, height: int) -> int:
    """Number of Deep Zoom levels (level 0 is 1x1, the last is full size)."""
    return math.ceil(math.log2(max(width, height, 1))) + 1


def level_size(width: int, height: int, level: int) -> tuple[int, int]:
    """Size of LEVEL: each level halves the next one, rounding up."""
    k = num_levels(width, height) - 1 - level
    d = 1 << k
    return (width + d - 1) // d, (height + d - 1) // d


def level_grid(width: int, height: int, tile_size: int, level: int) -> tuple[int, int]:
    lw, lh = level_size(width, height, level)
    return (lw + tile_size - 1) // tile_size, (lh + tile_size - 1) // tile_size


def tile_bounds(lw: int, lh: int, tile_size: int, overlap: int, col: int, row: int) -> Rect:
    """(x0, y0, x1, y1) of tile (col, row) in level pixels, overlap included."""
    x0 = col * tile_size - (overlap if col > 0 else 0)
    y0 = row * tile_size - (overlap if row > 0 else 0)
    x1 = min(lw, (col + 1) * tile_size + overlap)
    y1 = min(lh, (row + 1) * tile_size + overlap)
    return x0, y0, x1, y1


def count_tiles(width: int, height: int, tile_size: int) -> int:
    total = 0
    for level in range(num_levels(width, height)):
        nc, nr = level_grid(width, height, tile_size, level)
        total += nc * nr
    return total


def tile_path(pyr_dir: str | Path, level: int, col: int, row: int, fmt: str) -> Path:
    """Path of one tile inside a pyramid folder (DZ layout)."""
    return Path(pyr_dir) / f"{BASENAME}_files" / str(int(level)) / f"{int(col)}_{int(row)}.{fmt}"


def _changed_ranges(width: int, height: int, rect: Rect) -> dict[int, Rect] | None:
    """Changed pixel range (x0, y0, x1, y1) per level for a full-resolution rect."""
    x, y, w, h = (int(v) for v in rect)
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    if x0 >= x1 or y0 >= y1:
        return None
    out: dict[int, Rect] = {}
    for level in range(num_levels(width, height) - 1, -1, -1):
        out[level] = (x0, y0, x1, y1)
        # A 2x2 mean: level pixel i reads pixels 2i and 2i+1 of the level above.
        x0, y0, x1, y1 = x0 // 2, y0 // 2, (x1 + 1) // 2, (y1 + 1) // 2
    return out


def _tile_span(lo: int, hi: int, n: int, tile_size: int, overlap: int) -> range:
    """Tiles whose extent (overlap included) meets level pixels [lo, hi)."""
    first = max(0, (lo - overlap) // tile_size)
    last = min(n - 1, (hi - 1 + overlap) // tile_size)
    return range(first, last + 1)


def tiles_for_rect(width: int, height: int, tile_size: int, overlap: int, rect: Rect) -> set[tuple[int, int, int]]:
    """Tiles (level, col, row) whose pixels a full-resolution RECT (x, y, w, h) touches.

    Every level is covered; a tile whose overlap border reaches into the
    rectangle counts, and so does every ancestor of a touched tile.
    """
    ranges = _changed_ranges(width, height, rect)
    if ranges is None:
        return set()
    out: set[tuple[int, int, int]] = set()
    for level, (x0, y0, x1, y1) in ranges.items():
        nc, nr = level_grid(width, height, tile_size, level)
        for c in _tile_span(x0, x1, nc, tile_size, overlap):
            for r in _tile_span(y0, y1, nr, tile_size, overlap):
                out.add((level, c, r))
    # Parents explicitly too (already implied by the reduction, kept as a guarantee).
    for level, c, r in list(out):
        while level > 0:
            level, c, r = level - 1, c // 2, r // 2
            out.add((level, c, r))
    return out


# --- input ------------------------------------------------------------------


def open_input(path: str | Path, access: str = "sequential", max_pixels: int = DEFAULT_MAX_PIXELS) -> pyvips.Image:
    """Open an image for tiling: header checks first, then 8-bit RGB(A) or grey."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    try:
        im = pyvips.Image.new_from_file(str(path), access=access)
    except pyvips.Error as e:
        raise InputError(path, f"cannot read image: {str(e).splitlines()[0]}") from e
    loader = im.get("vips-loader") if im.get_typeof("vips-loader") else "?"
    if loader not in ALLOWED_LOADERS:
        raise InputError(path, f"unsupported image type (loader {loader})")
    if im.width < 1 or im.height < 1:
        raise InputError(path, "image has no pixels")
    if im.width * im.height > max_pixels:
        raise InputError(path, f"{im.width}x{im.height} exceeds the limit of {max_pixels} pixels")
    return to_8bit(im)


def to_8bit(im: pyvips.Image) -> pyvips.Image:
    """8-bit tiles: 16-bit and float inputs are scaled, extra bands dropped."""
    if im.bands > 4:
        im = im.extract_band(0, n=3)
    if im.format in ("ushort", "short"):
        im = (im >> 8).cast("uchar")
    elif im.format in ("float", "double"):
        im = (im * 255.0 + 0.5).cast("uchar")  # cast clips to 0..255
    elif im.format != "uchar":
        im = im.cast("uchar")
    interp = "srgb" if im.bands >= 3 else "b-w"
    return im.copy(interpretation=interp)


def _prepare_for_format(im: pyvips.Image, fmt: str) -> pyvips.Image:
    # JPEG has no alpha: flatten onto black, the viewer's background.
    if fmt == "jpg" and im.bands in (2, 4):
        im = im.flatten(background=[0] * (im.bands - 1)).cast("uchar")
        im = im.copy(interpretation="srgb" if im.bands >= 3 else "b-w")
    return im


# --- build ------------------------------------------------------------------


def build_pyramid(
    in_path: str | Path,
    out_dir: str | Path,
    params: PyramidParams | None = None,
    progress: Progress | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> dict[str, Any]:
    """Write OUT_DIR/image.dzi and OUT_DIR/image_files/ from IN_PATH (streaming).

    OUT_DIR must not exist; it appears atomically when the pyramid is complete.
    """
    params = params or PyramidParams()
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise InputError(out_dir, "output folder already exists (pyramid versions are immutable)")
    t0 = time.perf_counter()
    im = _prepare_for_format(open_input(in_path, "sequential", max_pixels), params.format)
    if progress is not None:
        caller = threading.get_ident()

        def on_eval(_im: pyvips.Image, p: Any) -> None:
            # Forward only on the calling thread (callers may touch thread-bound state).
            if threading.get_ident() == caller:
                progress(min(1.0, p.percent / 100.0))

        im.set_progress(True)
        im.signal_connect("eval", on_eval)
    with atomic_dir(out_dir) as staging:
        try:
            im.dzsave(
                str(staging / BASENAME),
                layout="dz",
                suffix=params.suffix,
                tile_size=params.tile_size,
                overlap=params.overlap,
                depth="onepixel",
                keep="none",
            )
        except pyvips.Error as e:
            raise ProcessingError(f"dzsave failed: {str(e).splitlines()[0]}") from e
        # Metadata dump of the input: not part of the pyramid, may leak paths.
        (staging / f"{BASENAME}_files" / "vips-properties.xml").unlink(missing_ok=True)
        os.chmod(staging, 0o755)
    if progress is not None:
        progress(1.0)
    return {
        "width": im.width,
        "height": im.height,
        "levels": num_levels(im.width, im.height),
        "tile_size": params.tile_size,
        "overlap": params.overlap,
        "format": params.format,
        "tiles": count_tiles(im.width, im.height, params.tile_size),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def read_dzi(pyr_dir: str | Path) -> dict[str, Any]:
    """Width, height, tile size, overlap and format from PYR_DIR/image.dzi."""
    dzi = Path(pyr_dir) / f"{BASENAME}.dzi"
    try:
        root = ET.parse(dzi).getroot()
    except (OSError, ET.ParseError) as e:
        raise InputError(dzi, f"cannot read Deep Zoom descriptor: {e}") from e
    size = next((el for el in root if el.tag.endswith("Size")), None)
    if size is None:
        raise InputError(dzi, "no <Size> element")
    try:
        return {
            "width": int(size.get("Width", "")),
            "height": int(size.get("Height", "")),
            "tile_size": int(root.get("TileSize", "")),
            "overlap": int(root.get("Overlap", "")),
            "format": str(root.get("Format", "")),
        }
    except ValueError as e:
        raise InputError(dzi, f"bad Deep Zoom descriptor: {e}") from e


# --- partial update -----------------------------------------------------------


def _reduce(a: np.ndarray) -> np.ndarray:
    """dzsave's 2x2 reduction: mean with rounding, edge repeated for odd sizes."""
    h, w = a.shape[:2]
    pad = ((0, h % 2), (0, w % 2)) + ((0, 0),) * (a.ndim - 2)
    b = np.pad(a.astype(np.uint16), pad, mode="edge")
    s = b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)


def _read_tile(path: Path, bands: int) -> np.ndarray:
    if not path.is_file():
        raise InputError(path, "tile missing from the previous version")
    try:
        arr = pyvips.Image.new_from_file(str(path), access="sequential").numpy()
    except pyvips.Error as e:
        raise InputError(path, f"cannot read tile of the previous version: {str(e).splitlines()[0]}") from e
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] != bands:
        raise ProcessingError(f"{path}: tile has {arr.shape[2]} bands, expected {bands}")
    return arr


def _write_tile(arr: np.ndarray, path: Path, params: PyramidParams) -> None:
    im = pyvips.Image.new_from_array(np.ascontiguousarray(arr))
    im = im.copy(interpretation="srgb" if im.bands >= 3 else "b-w")
    if params.format == "png":
        im.write_to_file(str(path), keep="none")
    else:
        im.write_to_file(str(path), Q=params.quality, keep="none")


class _Level:
    """Pixels of one level inside a window: recomputed ones, plus previous tiles."""

    def __init__(self, window: Rect, pixels: np.ndarray) -> None:
        self.window = window
        self.pixels = pixels


def update_pyramid(
    prev_dir: str | Path,
    new_image_path: str | Path,
    rect: Rect,
    out_dir: str | Path,
    params: PyramidParams | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Build OUT_DIR from PREV_DIR where only RECT (x, y, w, h) of the image changed.

    Tiles under RECT (with overlap and ancestors) are re-encoded from
    NEW_IMAGE_PATH (read with random access, so a tiled TIFF or .v is best);
    all other tiles are hard links to PREV_DIR's (copies across filesystems).
    """
    # long: one pass from the top level down, each level's recomputed window
    # feeding the next (`above`); split, every helper would take the grid
    # (W, H, T, ov, fmt), the staging folder and the counters.
    t0 = time.perf_counter()
    prev_dir, out_dir = Path(prev_dir), Path(out_dir)
    info = read_dzi(prev_dir)
    params = params or PyramidParams(tile_size=info["tile_size"], overlap=info["overlap"], format=info["format"])
    if (params.tile_size, params.overlap, params.format) != (info["tile_size"], info["overlap"], info["format"]):
        raise InputError(prev_dir, "tile size, overlap or format differ from the previous version; rebuild it")
    if out_dir.exists():
        raise InputError(out_dir, "output folder already exists (pyramid versions are immutable)")
    W, H, T, ov, fmt = info["width"], info["height"], params.tile_size, params.overlap, params.format
    src = _prepare_for_format(open_input(new_image_path, "random"), fmt)
    if (src.width, src.height) != (W, H):
        raise InputError(new_image_path, f"size {src.width}x{src.height} differs from the pyramid's {W}x{H}")
    bands = src.bands

    changed = tiles_for_rect(W, H, T, ov, rect)
    top = num_levels(W, H) - 1
    total = count_tiles(W, H, T)
    done = rewritten = linked = copied = 0

    def prev_region(level: int, win: Rect) -> np.ndarray:
        """Level pixels in WIN assembled from the previous version's tiles."""
        lw, lh = level_size(W, H, level)
        x0, y0, x1, y1 = win
        out = np.zeros((y1 - y0, x1 - x0, bands), np.uint8)
        for c in range(max(0, x0 // T), min((lw - 1) // T, (x1 - 1) // T) + 1):
            for r in range(max(0, y0 // T), min((lh - 1) // T, (y1 - 1) // T) + 1):
                tx0, ty0, tx1, ty1 = tile_bounds(lw, lh, T, ov, c, r)
                tile = _read_tile(tile_path(prev_dir, level, c, r, fmt), bands)
                # Only the tile's own core: neighbours' overlap copies agree anyway.
                cx0, cy0 = c * T, r * T
                cx1, cy1 = min(lw, cx0 + T), min(lh, cy0 + T)
                ix0, iy0, ix1, iy1 = max(cx0, x0), max(cy0, y0), min(cx1, x1), min(cy1, y1)
                if ix0 >= ix1 or iy0 >= iy1:
                    continue
                out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = tile[iy0 - ty0 : iy1 - ty0, ix0 - tx0 : ix1 - tx0]
        return out

    with atomic_dir(out_dir) as staging:
        shutil.copyfile(prev_dir / f"{BASENAME}.dzi", staging / f"{BASENAME}.dzi")
        above: _Level | None = None
        for level in range(top, -1, -1):
            lw, lh = level_size(W, H, level)
            nc, nr = level_grid(W, H, T, level)
            ldir = staging / f"{BASENAME}_files" / str(level)
            ldir.mkdir(parents=True)
            todo = sorted((c, r) for (lv, c, r) in changed if lv == level)
            current: _Level | None = None
            if todo:
                cs = [c for c, _ in todo]
                rs = [r for _, r in todo]
                win = (
                    max(0, min(cs) * T - ov),
                    max(0, min(rs) * T - ov),
                    min(lw, (max(cs) + 1) * T + ov),
                    min(lh, (max(rs) + 1) * T + ov),
                )
                x0, y0, x1, y1 = win
                if level == top:
                    pix = src.crop(x0, y0, x1 - x0, y1 - y0).numpy()
                    pix = pix[:, :, None] if pix.ndim == 2 else pix
                else:
                    # The window at the level above, from recomputed pixels
                    # where we have them and from the previous tiles elsewhere.
                    aw, ah = level_size(W, H, level + 1)
                    up = (2 * x0, 2 * y0, min(aw, 2 * x1), min(ah, 2 * y1))
                    buf = prev_region(level + 1, up)
                    if above is not None:
                        ax0, ay0, ax1, ay1 = above.window
                        ix0, iy0 = max(ax0, up[0]), max(ay0, up[1])
                        ix1, iy1 = min(ax1, up[2]), min(ay1, up[3])
                        if ix0 < ix1 and iy0 < iy1:
                            buf[iy0 - up[1] : iy1 - up[1], ix0 - up[0] : ix1 - up[0]] = above.pixels[
                                iy0 - ay0 : iy1 - ay0, ix0 - ax0 : ix1 - ax0
                            ]
                    pix = _reduce(buf)[: y1 - y0, : x1 - x0]
                current = _Level(win, pix)
            todo_set = set(todo)
            for c in range(nc):
                for r in range(nr):
                    dst = ldir / f"{c}_{r}.{fmt}"
                    if (c, r) in todo_set:
                        tx0, ty0, tx1, ty1 = tile_bounds(lw, lh, T, ov, c, r)
                        assert current is not None
                        wx0, wy0 = current.window[:2]
                        _write_tile(current.pixels[ty0 - wy0 : ty1 - wy0, tx0 - wx0 : tx1 - wx0], dst, params)
                        rewritten += 1
                    else:
                        srcf = tile_path(prev_dir, level, c, r, fmt)
                        try:
                            os.link(srcf, dst)
                            linked += 1
                        except FileNotFoundError as e:
                            raise InputError(srcf, "tile missing from the previous version") from e
                        except OSError as e:
                            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                                raise
                            shutil.copy2(srcf, dst)
                            copied += 1
                    done += 1
                if progress is not None:
                    progress(done / total)
            above = current
        os.chmod(staging, 0o755)
    return {
        "width": W,
        "height": H,
        "levels": top + 1,
        "tile_size": T,
        "overlap": ov,
        "format": fmt,
        "tiles_total": total,
        "tiles_rewritten": rewritten,
        "tiles_linked": linked,
        "tiles_copied": copied,
        "seconds": round(time.perf_counter() - t0, 3),
    }
