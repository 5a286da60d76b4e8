"""Seams and multi-band blending, block by block.

Every output block is rendered alone from the layout: for each image whose
footprint meets the block (plus a margin as wide as the pyramid's support),
one inverse map (projection + rotation + focal + lens) resamples the original
pixels once; seams are Voronoi cells of the 'distance to the source image
border' criterion (a per-pixel function of the ray, so neighbouring blocks
agree without any global state); Burt & Adelson Laplacian pyramids are
blended with per-level weights = Gaussian(seam mask) x Gaussian(validity),
renormalised, so no dark halos appear at image borders. Pyramid grids are
aligned to absolute canvas coordinates, so a block rendered alone equals the
same pixels rendered as part of a whole panorama (up to the margin's effect).
Peak memory is bounded by the block size, never the panorama's area.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .imageio import load_image
from .project import Camera, Canvas, block_map, center_weight


class SourceCache:
    """LRU cache of decoded source images (uint16 RGB) within a byte budget."""

    def __init__(self, budget_bytes: int = 1 << 30) -> None:
        self.budget = int(budget_bytes)
        self.items: OrderedDict[str, np.ndarray] = OrderedDict()
        self.bytes = 0

    def get(self, path: str) -> np.ndarray:
        if path in self.items:
            self.items.move_to_end(path)
            return self.items[path]
        img, _ = load_image(path)
        arr = (np.clip(img, 0, 1) * 65535.0 + 0.5).astype(np.uint16)
        del img
        self.items[path] = arr
        self.bytes += arr.nbytes
        while self.bytes > self.budget and len(self.items) > 1:
            _, old = self.items.popitem(last=False)
            self.bytes -= old.nbytes
        return arr


@dataclass(frozen=True)
class Layer:
    """What the renderer needs per image."""

    path: str
    cam: Camera
    footprint: tuple[int, int, int, int]
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    vignetting: tuple[float, float] = (0.0, 0.0)


def vignetting_gain(mx: np.ndarray, my: np.ndarray, cam: Camera, coeffs: tuple[float, float]) -> np.ndarray:
    """1 / V(r) with V = 1 + a r^2 + b r^4, r normalised by the half diagonal."""
    cx, cy = cam.center
    r2 = ((mx - cx) ** 2 + (my - cy) ** 2) / ((cam.width / 2.0) ** 2 + (cam.height / 2.0) ** 2)
    v = 1.0 + r2 * (coeffs[0] + coeffs[1] * r2)
    return (1.0 / np.maximum(v, 0.05)).astype(np.float32)


def _instances(
    fp: tuple[int, int, int, int], rect: tuple[int, int, int, int], canvas: Canvas, margin: int, align: int
) -> list[tuple[int, int, int, int]]:
    """Sub-rectangles of ``rect`` (absolute coordinates, aligned to ``align``)
    where an image with footprint ``fp`` may contribute; several with wrap."""
    fx0, fy0, fx1, fy1 = fp
    rx0, ry0, rx1, ry1 = rect
    out = []
    if canvas.wrap and fx1 - fx0 + 2 * margin >= canvas.width:
        spans = [(rx0, rx1)]
    else:
        shifts = (-canvas.width, 0, canvas.width) if canvas.wrap else (0,)
        spans = [(fx0 + s - margin, fx1 + s + margin) for s in shifts]
    y0 = max(ry0, (fy0 - margin) // align * align)
    y1 = min(ry1, -(-(fy1 + margin) // align) * align)
    if y1 <= y0:
        return out
    for a, b in spans:
        x0 = max(rx0, a // align * align)
        x1 = min(rx1, -(-b // align) * align)
        if x1 > x0:
            out.append((x0, y0, x1, y1))
    return out


def _gauss_pyr(a: np.ndarray, levels: int) -> list[np.ndarray]:
    out = [a]
    for _ in range(levels):
        out.append(cv2.pyrDown(out[-1]))
    return out


def _lap_pyr(img: np.ndarray, levels: int) -> list[np.ndarray]:
    g = _gauss_pyr(img, levels)
    out = []
    for k in range(levels):
        up = cv2.pyrUp(g[k + 1], dstsize=(g[k].shape[1], g[k].shape[0]))
        out.append(g[k] - up)
    out.append(g[levels])
    return out


def margin_for(bands: int) -> int:
    return 3 * (1 << bands) if bands > 0 else 2


def render_rect(
    layers: Sequence[Layer],
    canvas: Canvas,
    rect: tuple[int, int, int, int],
    cache: SourceCache,
    bands: int = 5,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render output pixels ``rect`` = (x0, y0, x1, y1) of the panorama.

    ``labels``: optional seam label map on a proxy of the canvas (layer index
    per proxy pixel, see stitch_seams.py); without it, Voronoi seams.

    Returns (rgb float32 HxWx3 in [0, 1] (0 where uncovered), alpha float32 HxW).
    x may run outside [0, width) with wrap (periodic canvas).
    """
    x0, y0, x1, y1 = rect
    A = 1 << bands
    m = margin_for(bands)
    ex0 = (x0 - m) // A * A
    ex1 = -(-(x1 + m) // A) * A
    if not canvas.wrap:
        ex0 = max(ex0, -A * ((m + A - 1) // A))
    ey0 = max(0, (y0 - m) // A * A)
    ey1 = -(-min(canvas.height, y1 + m) // A) * A
    ey1 = max(ey1, ey0 + A)
    ex_rect = (ex0, ey0, ex1, ey1)
    EW, EH = ex1 - ex0, ey1 - ey0

    # pass 1: maps, validity and the Voronoi criterion for every instance
    inst = []
    best = np.zeros((EH, EW), np.float32)
    for li, L in enumerate(layers):
        for sx0, sy0, sx1, sy1 in _instances(L.footprint, ex_rect, canvas, m, A):
            mx, my, valid = block_map(L.cam, canvas, sx0, sy0, sx1 - sx0, sy1 - sy0)
            if not valid.any():
                continue
            w = center_weight(L.cam, mx, my, valid)
            sl = (slice(sy0 - ey0, sy1 - ey0), slice(sx0 - ex0, sx1 - ex0))
            np.maximum(best[sl], w, out=best[sl])
            inst.append((li, (sx0, sy0, sx1, sy1), sl, mx, my, valid, w))

    cov = best > 0
    out_sl = (slice(y0 - ey0, y1 - ey0), slice(x0 - ex0, x1 - ex0))
    if not inst:
        return np.zeros((y1 - y0, x1 - x0, 3), np.float32), np.zeros((y1 - y0, x1 - x0), np.float32)

    # seam masks: the proxy label map where its image is valid here, else Voronoi
    masks = []
    if labels is not None:
        Hp, Wp = labels.shape
        px = np.floor((np.arange(ex0, ex1) + 0.5) * Wp / canvas.width).astype(np.int64)
        px = np.mod(px, Wp) if canvas.wrap else np.clip(px, 0, Wp - 1)
        py = np.clip(np.floor((np.arange(ey0, ey1) + 0.5) * Hp / canvas.height).astype(np.int64), 0, Hp - 1)
        lab = labels[py][:, px]
        claimed = np.zeros((EH, EW), bool)
        for li, _r, sl, _mx, _my, valid, _w in inst:
            m_ = (lab[sl] == li) & valid
            claimed[sl] |= m_
            masks.append(m_)
        for k, (_li, _r, sl, _mx, _my, valid, w) in enumerate(inst):
            masks[k] = masks[k] | ((w >= best[sl]) & valid & ~claimed[sl])
    else:
        masks = [(w >= best[sl]) & valid for _li, _r, sl, _mx, _my, valid, w in inst]

    if bands <= 0:  # hard seams (no pyramid)
        acc = np.zeros((EH, EW, 3), np.float32)
        for (li, _r, sl, mx, my, _valid, _w), sel in zip(inst, masks, strict=True):
            img = _sample(layers[li], cache, mx, my)
            acc[sl][sel] = img[sel]
        return acc[out_sl], cov[out_sl].astype(np.float32)

    acc = [None] * (bands + 1)
    wsum = [None] * (bands + 1)
    for k in range(bands + 1):
        hk, wk = EH >> k, EW >> k
        acc[k] = np.zeros((hk, wk, 3), np.float32)
        wsum[k] = np.zeros((hk, wk), np.float32)
    for (li, (sx0, sy0, _sx1, _sy1), _sl, mx, my, valid, _w), sel in zip(inst, masks, strict=True):
        img = _sample(layers[li], cache, mx, my)
        mask = sel.astype(np.float32)
        lap = _lap_pyr(img, bands)
        gm = _gauss_pyr(mask, bands)
        gv = _gauss_pyr(valid.astype(np.float32), bands)
        for k in range(bands + 1):
            ys, xs = (sy0 - ey0) >> k, (sx0 - ex0) >> k
            hk, wk = gm[k].shape
            wk_ = gm[k] * gv[k] + 1e-8 * gv[k]
            acc[k][ys : ys + hk, xs : xs + wk] += lap[k] * wk_[:, :, None]
            wsum[k][ys : ys + hk, xs : xs + wk] += wk_
        del lap, gm, gv, img
    res = acc[bands] / np.maximum(wsum[bands], 1e-12)[:, :, None]
    for k in range(bands - 1, -1, -1):
        lev = acc[k] / np.maximum(wsum[k], 1e-12)[:, :, None]
        res = cv2.pyrUp(res, dstsize=(lev.shape[1], lev.shape[0])) + lev
    out = np.clip(res[out_sl], 0.0, 1.0)
    alpha = cov[out_sl].astype(np.float32)
    out *= alpha[:, :, None]
    return out, alpha


def _sample(L: Layer, cache: SourceCache, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    """The one resampling: original pixels -> output pixels, with exposure
    (per-channel gain, vignetting) applied as a per-pixel factor."""
    src = cache.get(L.path)
    # remap from the source region this block needs: keeps cv2.remap's
    # 32767 px source limit out of the way for huge (super-resolved) stacks
    sx0, sy0 = int(mx.min()), int(my.min())
    sx1 = min(src.shape[1], int(mx.max()) + 2)
    sy1 = min(src.shape[0], int(my.max()) + 2)
    img = cv2.remap(
        src[sy0:sy1, sx0:sx1],
        mx - np.float32(sx0),
        my - np.float32(sy0),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    img = img.astype(np.float32) * np.float32(1.0 / 65535.0)
    img *= np.asarray(L.gain, np.float32)[None, None, :]
    if L.vignetting[0] or L.vignetting[1]:
        img *= vignetting_gain(mx, my, L.cam, L.vignetting)[:, :, None]
    return img


def default_bands(canvas: Canvas, cams: Sequence[Camera], max_bands: int = 6) -> int:
    """Enough bands for a transition ~5 % of an image's size."""
    s = float(np.median([min(c.width, c.height) * canvas.su / c.focal for c in cams])) if cams else 256.0
    return int(np.clip(math.floor(math.log2(max(s * 0.05, 2.0))) + 1, 1, max_bands))
