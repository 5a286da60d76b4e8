"""A procedural 360-degree landscape with detail at every scale, for the demo.

The scene is a function of cylinder coordinates (X along the circumference,
periodic with period W; Y down the cylinder), so any view of it is continuous
with its neighbours and across the 360-degree wrap: sky with clouds, a ridge
of mountains with rock and snow, forested slopes, a lake, and a town of houses
with windows and roofs a few pixels wide at full resolution. Only the slab of
the strip a view needs is generated: memory follows the view, not the
panorama. Noise is value noise on lattices whose periods divide W, upsampled
with bicubic interpolation from lattice points hashed from their absolute
indices, so a slab's pixels do not depend on where the slab starts.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

Slab = tuple[int, int, int, int]  # x0, y0, x1, y1 in strip pixels (x may exceed W: periodic)


def _hash(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random values in [0, 1) per integer lattice point."""
    h = (ix.astype(np.uint64) * np.uint64(0x9E3779B1) + iy.astype(np.uint64) * np.uint64(0x85EBCA77)) ^ np.uint64(
        (seed * 0xC2B2AE3D) & 0xFFFFFFFF
    )
    h ^= h >> np.uint64(15)
    h *= np.uint64(0x2C1B3C6D)
    h ^= h >> np.uint64(12)
    h *= np.uint64(0x297A2D39)
    h ^= h >> np.uint64(15)
    return ((h & np.uint64(0xFFFFFF)).astype(np.float32)) / np.float32(0x1000000)


def value_noise(slab: Slab, cell: int, period: int, seed: int) -> np.ndarray:
    """Noise with lattice spacing CELL px over SLAB; PERIOD lattice points round the cylinder."""
    x0, y0, x1, y1 = slab
    i0, j0 = x0 // cell - 2, y0 // cell - 2
    i1, j1 = -(-x1 // cell) + 2, -(-y1 // cell) + 2
    ii, jj = np.meshgrid(np.arange(i0, i1 + 1), np.arange(j0, j1 + 1))
    lat = _hash(np.mod(ii, period), jj, seed)
    # lattice point i sits at pixel X = i * cell: bicubic over the slab's pixels only
    m = np.float64([[1.0 / cell, 0.0, x0 / cell - i0], [0.0, 1.0 / cell, y0 / cell - j0]])
    return cv2.warpAffine(lat, m, (x1 - x0, y1 - y0), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


def fbm(slab: Slab, width: int, cells: list[int], seed: int, gain: float = 0.55) -> np.ndarray:
    """Sum of octaves (coarse to fine), normalised to about [0, 1]."""
    out = np.zeros((slab[3] - slab[1], slab[2] - slab[0]), np.float32)
    amp, total = 1.0, 0.0
    for k, c in enumerate(cells):
        out += amp * value_noise(slab, c, max(1, width // c), seed * 131 + k)
        total += amp
        amp *= gain
    return out / total


def _cells(largest: int, smallest: int) -> list[int]:
    out, c = [], largest
    while c >= smallest:
        out.append(c)
        c //= 2
    return out


BAND_ROWS = 256


def render_slab(slab: Slab, width: int, height: int, seed: int = 1) -> np.ndarray:
    """Float32 sRGB [0, 1] pixels of the landscape strip (WIDTH x HEIGHT) over SLAB."""
    if width % 1024:
        raise ValueError("scene: the strip width must be a multiple of 1024 (noise periods)")
    x0, y0, x1, y1 = slab
    out = np.empty((y1 - y0, x1 - x0, 3), np.float32)
    # Pixels depend on absolute coordinates only, so bands of rows give the same slab with
    # temporaries that fit in cache (about a third less CPU on the demo's views).
    for b in range(y0, y1, BAND_ROWS):
        out[b - y0 : min(y1, b + BAND_ROWS) - y0] = _render_band(
            (x0, b, x1, min(y1, b + BAND_ROWS)), width, height, seed
        )
    return out


def _render_band(slab: Slab, width: int, height: int, seed: int) -> np.ndarray:
    x0, y0, x1, y1 = slab
    H = float(height)
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    big = min(1024, width // 8)
    # horizon: a ridge of mountains (1-D fractal in X), and the valley floor below
    row = (x0, 0, x1, 1)
    ridge = fbm(row, width, _cells(big, 8), seed + 1, gain=0.5)[0][None, :]
    ridge_y = H * (0.18 + 0.32 * (1.0 - ridge) ** 1.5)
    valley_y = H * 0.62
    lake_y = H * 0.78
    fine = value_noise(slab, 2, width // 2, seed + 3)
    cloud = fbm(slab, width, _cells(big, 16), seed + 4, gain=0.6)
    img = np.empty((y1 - y0, x1 - x0, 3), np.float32)

    # sky: gradient and soft clouds
    t = np.clip(ys / H / 0.5, 0, 1)
    sky = np.stack([0.35 + 0.45 * t, 0.55 + 0.35 * t, 0.85 + 0.1 * t], -1) * np.ones_like(cloud)[:, :, None]
    c = np.clip((cloud - 0.52) * 4.0, 0, 1)[:, :, None]
    sky = sky * (1 - c) + c * (0.92 + 0.06 * fine[:, :, None])
    img[:] = sky

    # Each layer's noise is made only for bands that show the layer (a band of sky or lake
    # needs none of the mountains' and fields' octaves); the pixels are the same.
    mount = (ys >= ridge_y) & (ys < valley_y)
    if mount.any():
        # mountains: rock with strata, snow above a noisy line
        rock = fbm(slab, width, _cells(256, 4), seed + 2)
        trees = fbm(slab, width, _cells(64, 4), seed + 5, gain=0.7)
        depth = (ys - ridge_y) / np.maximum(valley_y - ridge_y, 1.0)
        strata = 0.5 + 0.5 * np.sin(ys * 0.9 + rock * 25.0)
        shade = 0.35 + 0.35 * rock + 0.1 * strata + 0.08 * fine
        rock_rgb = np.stack([shade * 0.95, shade * 0.9, shade * 0.88], -1)
        snow = (depth < 0.12 + 0.3 * (rock - 0.5) * 2) & mount
        np.copyto(img, rock_rgb, where=mount[:, :, None])
        np.copyto(img, 0.9 + 0.08 * fine[:, :, None] * np.ones(3, np.float32), where=snow[:, :, None])
        # forest on the lower slopes: dark greens with tree crowns in the fine octaves
        forest = mount & (depth > 0.55 + 0.3 * (trees - 0.5))
        g = 0.12 + 0.35 * trees + 0.12 * fine
        np.copyto(img, np.stack([g * 0.45, g * 0.8, g * 0.35], -1), where=forest[:, :, None])

    # valley floor: fields and the town
    floor = np.broadcast_to((ys >= valley_y) & (ys < lake_y), img.shape[:2])
    if floor.any():
        field = 0.45 + 0.3 * fbm(slab, width, _cells(128, 4), seed + 6)
        np.copyto(img, np.stack([field * 0.55, field * 0.75, field * 0.3], -1), where=floor[:, :, None])
        _town(img, slab, width, valley_y, lake_y, seed + 7)

    # lake: the town and mountains' colours darkened, ripples at full resolution
    lake = np.broadcast_to(ys >= lake_y, img.shape[:2])
    if lake.any():
        ripple = 0.5 + 0.5 * np.sin(ys * 1.7 + fine * 6.0)
        water = (
            np.stack([0.12 + 0.05 * ripple, 0.25 + 0.06 * ripple, 0.38 + 0.08 * ripple], -1)
            * np.ones_like(fine)[:, :, None]
        )
        np.copyto(img, water * (0.9 + 0.2 * cloud[:, :, None]), where=lake[:, :, None])
    return np.clip(img, 0, 1)


def _town(img: np.ndarray, slab: Slab, width: int, top: float, bottom: float, seed: int) -> None:
    """Houses on a cell grid: walls, a roof, windows of 2 px; some cells left as gardens."""
    x0, y0, x1, y1 = slab
    r0, r1_ = max(y0, int(top) + 4), min(y1, int(bottom) - 4)
    if r0 >= r1_:
        return
    cw, ch = 32, 24  # cw divides the strip width: the town wraps round too
    band = img[r0 - y0 : r1_ - y0]
    ys = np.arange(r0, r1_)[:, None]
    xs = np.arange(x0, x1)[None, :]
    # per-cell random values, looked up per pixel
    c0, c1 = x0 // cw, (x1 - 1) // cw + 1
    d0, d1 = r0 // ch, (r1_ - 1) // ch + 1
    ci, cj = np.meshgrid(np.mod(np.arange(c0, c1), width // cw), np.arange(d0, d1))
    r1, r2, r3 = (_hash(ci, cj, seed + k) for k in range(3))
    dens = value_noise((c0 * cw, d0 * ch, c1 * cw, d1 * ch), 512, width // 512, seed + 3)[::ch, ::cw]
    present = r1 < 0.25 + 0.6 * dens[: r1.shape[0], : r1.shape[1]]
    hw = np.clip(14 + (r2 * 14).astype(np.int64), 8, cw - 2)
    hh = np.clip(9 + (r3 * 10).astype(np.int64), 6, ch - 7)
    iy, ix = ys // ch - d0, xs // cw - c0
    lx, ly = xs - (xs // cw) * cw, ys - (ys // ch) * ch
    P, HW, HH = present[iy, ix], hw[iy, ix], hh[iy, ix]
    bx0 = (cw - HW) // 2
    body = P & (lx >= bx0) & (lx < bx0 + HW) & (ly >= ch - HH)
    ry = ly - (ch - HH - 5)
    roof = P & (ry >= 0) & (ry < 5) & (np.abs(lx - cw / 2) < (HW / 2) * (ry + 1) / 5)
    R1, R2, R3 = r1[iy, ix], r2[iy, ix], r3[iy, ix]
    wall = np.stack([0.75 + 0.2 * R2, 0.7 + 0.15 * R3, 0.6 + 0.2 * R1], -1)
    np.copyto(band, wall, where=body[:, :, None])
    roof_rgb = np.stack([0.45 + 0.3 * R3, 0.15 + 0.1 * R2, 0.1 + 0.05 * R1], -1)
    np.copyto(band, roof_rgb, where=roof[:, :, None])
    win = body & (np.mod(lx - bx0, 4) >= 2) & (np.mod(ly, 4) == 1) & (lx - bx0 < HW - 1) & (ly < ch - 2)
    lit = _hash(np.mod(xs, width) // 4, ys // 4, seed + 4) > 0.6
    glass = np.where(lit[:, :, None], np.float32([1.0, 0.85, 0.45]), np.float32([0.15, 0.18, 0.25]))
    np.copyto(band, glass, where=win[:, :, None])


def strip_size(gigapixels: float, aspect: float) -> tuple[int, int]:
    """Strip WIDTH (multiple of 1024) x HEIGHT for a panorama of about GIGAPIXELS."""
    h = math.sqrt(gigapixels * 1e9 / aspect)
    w = max(8192, round(h * aspect / 1024) * 1024)
    return w, int(gigapixels * 1e9 / w)
