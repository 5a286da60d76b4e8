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
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..io.imageio import load_image_int
from .project import Camera, Canvas, block_map, center_weight
from .response import DEFAULT_GAMMA, encode, encoded_lut, is_power_law, linear_lut
from .seam_patches import FineSeams, labels_at


class SourceCache:
    """LRU cache of decoded source images within a byte budget, shared by
    render threads. 8-bit sources (JPEG) are kept as uint8, others as uint16:
    the cache holds twice as many tiles and remap reads half the bytes."""

    def __init__(self, budget_bytes: int = 1 << 30) -> None:
        self.budget = int(budget_bytes)
        self.items: OrderedDict[str, np.ndarray] = OrderedDict()
        self.bytes = 0
        self.lock = threading.Lock()

    def get(self, path: str) -> np.ndarray:
        with self.lock:
            if path in self.items:
                self.items.move_to_end(path)
                return self.items[path]
        # decode outside the lock (two threads may decode the same file once)
        arr, _info = load_image_int(path)
        with self.lock:
            if path not in self.items:
                self.items[path] = arr
                self.bytes += arr.nbytes
            self.items.move_to_end(path)
            while self.bytes > self.budget and len(self.items) > 1:
                _, old = self.items.popitem(last=False)
                self.bytes -= old.nbytes
            return self.items.get(path, arr)


@dataclass(frozen=True)
class Layer:
    """What the renderer needs per image."""

    path: str
    cam: Camera
    footprint: tuple[int, int, int, int]
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    vignetting: tuple[float, float] = (0.0, 0.0)
    # > 0: source pixels the input clipped (every channel at its maximum) render
    # at least this bright: a blown-out sky stays white instead of turning
    # grey under a gain < 1 (the brightest well-exposed level, see tone.py)
    white: float = 0.0
    # the lens's camera response (response.Response.to_list()): gain and
    # vignetting act in linear light and the output is re-encoded with the
    # inverse of ``output`` (the images' mean response); empty: the gain
    # scales the encoded values as they are (layouts before the response model)
    response: tuple[float, ...] = ()
    output: tuple[float, ...] = ()


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


def _up_region(g1: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Rows y0:y1, columns x0:x1 of cv2.pyrUp(g1) (at twice g1's size),
    computed from the part of g1 they depend on (+2 px against border effects)."""
    a0, a1 = max(0, y0 // 2 - 2), min(g1.shape[0], (y1 + 1) // 2 + 2)
    b0, b1 = max(0, x0 // 2 - 2), min(g1.shape[1], (x1 + 1) // 2 + 2)
    up = cv2.pyrUp(g1[a0:a1, b0:b1], dstsize=(2 * (b1 - b0), 2 * (a1 - a0)))
    return up[y0 - 2 * a0 : y1 - 2 * a0, x0 - 2 * b0 : x1 - 2 * b0]


def margin_for(bands: int) -> int:
    return 3 * (1 << bands) if bands > 0 else 2


def _mask_crop(mask: np.ndarray, r: tuple[int, int, int, int], m: int, A: int) -> tuple[int, int, int, int] | None:
    """Absolute rectangle of instance ``r`` (x0, y0, x1, y1) within ``m`` px
    of its seam mask, aligned to the pyramid grid A: beyond it the image's
    blending weight is negligible at every level."""
    rows = np.flatnonzero(mask.any(1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(0))
    sx0, sy0, sx1, sy1 = r
    cx0 = max(sx0, (sx0 + int(cols[0]) - m) // A * A)
    cy0 = max(sy0, (sy0 + int(rows[0]) - m) // A * A)
    cx1 = min(sx1, -(-(sx0 + int(cols[-1]) + 1 + m) // A) * A)
    cy1 = min(sy1, -(-(sy0 + int(rows[-1]) + 1 + m) // A) * A)
    return cx0, cy0, cx1, cy1


#: One image instance meeting a block: [layer index, its rectangle (x0, y0,
#: x1, y1) on the canvas, its slice of the extended block, map x, map y,
#: validity].
_Instance = list


def _block_extent(rect: tuple[int, int, int, int], canvas: Canvas, bands: int) -> tuple[int, int, int, int]:
    """RECT grown by the pyramid's margin and aligned to its coarsest grid
    (absolute canvas coordinates), so a block rendered alone equals the same
    pixels of the whole panorama."""
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
    return ex0, ey0, ex1, ey1


def _block_instances(
    layers: Sequence[Layer],
    canvas: Canvas,
    ex_rect: tuple[int, int, int, int],
    only: Sequence[int] | None,
    bands: int,
) -> tuple[list[_Instance], np.ndarray]:
    """Pass 1: maps and validity for every instance that meets the extended
    block, and the block's coverage."""
    ex0, ey0, ex1, ey1 = ex_rect
    inst = []
    cov = np.zeros((ey1 - ey0, ex1 - ex0), bool)
    for li in range(len(layers)) if only is None else only:
        L = layers[li]
        for sx0, sy0, sx1, sy1 in _instances(L.footprint, ex_rect, canvas, margin_for(bands), 1 << bands):
            mx, my, valid = block_map(L.cam, canvas, sx0, sy0, sx1 - sx0, sy1 - sy0)
            if not valid.any():
                continue
            sl = (slice(sy0 - ey0, sy1 - ey0), slice(sx0 - ex0, sx1 - ex0))
            cov[sl] |= valid
            inst.append([li, (sx0, sy0, sx1, sy1), sl, mx, my, valid])
    return inst, cov


def _seam_masks(
    layers: Sequence[Layer],
    canvas: Canvas,
    ex_rect: tuple[int, int, int, int],
    inst: list[_Instance],
    cov: np.ndarray,
    labels: np.ndarray | None,
    fine: FineSeams | None = None,
) -> list[np.ndarray]:
    """Each instance's seam mask: the proxy label map (with its full-resolution
    overrides ``fine``) where its image is valid here, else Voronoi of the
    distance to the source border (computed only if needed)."""
    ex0, ey0, ex1, ey1 = ex_rect
    EW, EH = ex1 - ex0, ey1 - ey0
    masks: list[np.ndarray] = []
    need_voronoi = labels is None
    if labels is not None:
        lab = labels_at(labels, canvas.width, canvas.height, canvas.wrap, ex_rect)
        if fine is not None:
            fine.apply(lab, ex0, ey0, canvas.width, canvas.wrap)
        claimed = np.zeros((EH, EW), bool)
        for li, _r, sl, _mx, _my, valid in inst:
            m_ = (lab[sl] == li) & valid
            claimed[sl] |= m_
            masks.append(m_)
        need_voronoi = bool((cov & ~claimed).any())
    if labels is None:
        best = np.zeros((EH, EW), np.float32)
        ws = []
        for li, _r, sl, mx, my, valid in inst:
            w = center_weight(layers[li].cam, mx, my, valid)
            np.maximum(best[sl], w, out=best[sl])
            ws.append(w)
        masks = [(w >= best[it[2]]) & it[5] for it, w in zip(inst, ws, strict=True)]
        del best, ws
    elif need_voronoi:
        # covered pixels the proxy labels leave to no valid image (slivers at
        # label and coverage borders): Voronoi among the images valid there,
        # evaluated at those pixels only
        ys, xs = np.nonzero(cov & ~claimed)
        wk = np.zeros((len(inst), len(ys)), np.float32)
        for k, (li, (sx0, sy0, sx1, sy1), _sl, mx, my, valid) in enumerate(inst):
            ly, lx = ys - (sy0 - ey0), xs - (sx0 - ex0)
            ins = (ly >= 0) & (ly < sy1 - sy0) & (lx >= 0) & (lx < sx1 - sx0)
            ly, lx = ly[ins], lx[ins]
            wk[k, ins] = center_weight(layers[li].cam, mx[ly, lx], my[ly, lx], valid[ly, lx])
        best = wk.max(0)
        for k, (_li, (sx0, sy0, _sx1, _sy1), _sl, _mx, _my, _valid) in enumerate(inst):
            win = (wk[k] >= best) & (wk[k] > 0)
            masks[k][ys[win] - (sy0 - ey0), xs[win] - (sx0 - ex0)] = True
        del wk, best
    return masks


def render_rect(
    layers: Sequence[Layer],
    canvas: Canvas,
    rect: tuple[int, int, int, int],
    cache: SourceCache,
    bands: int = 5,
    labels: np.ndarray | None = None,
    only: Sequence[int] | None = None,
    tone: Callable[[np.ndarray], np.ndarray] | None = None,
    fine: FineSeams | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render output pixels ``rect`` = (x0, y0, x1, y1) of the panorama.

    ``labels``: optional seam label map on a proxy of the canvas (layer index
    per proxy pixel, see seams.py); without it, Voronoi seams.
    ``only``: indices of the layers that may meet the rectangle (a spatial
    pre-selection by the caller); default all.
    ``tone``: the output tone curve (tone.Tone.apply, in place), applied to
    the blended values before they are clipped to [0, 1]: exposure gains
    push bright content past 1, and the highlight shoulder brings it back.
    ``fine``: full-resolution seam overrides of ``labels`` (fine_seams.py).

    Returns (rgb float32 HxWx3 in [0, 1] (0 where uncovered), alpha float32 HxW).
    x may run outside [0, width) with wrap (periodic canvas).
    """
    x0, y0, x1, y1 = rect
    ex_rect = _block_extent(rect, canvas, bands)
    ex0, ey0, ex1, ey1 = ex_rect
    out_sl = (slice(y0 - ey0, y1 - ey0), slice(x0 - ex0, x1 - ex0))
    inst, cov = _block_instances(layers, canvas, ex_rect, only, bands)
    if not inst:
        return np.zeros((y1 - y0, x1 - x0, 3), np.float32), np.zeros((y1 - y0, x1 - x0), np.float32)
    masks = _seam_masks(layers, canvas, ex_rect, inst, cov, labels, fine)
    # only images owning part of the block (+ margin) contribute: with many
    # overlapping views (near a cylinder's poles) most instances drop here
    keep = [k for k, mk in enumerate(masks) if mk.any()]
    inst = [inst[k] for k in keep]
    masks = [masks[k] for k in keep]
    if bands <= 0 or len(inst) == 1:
        # hard seams, or one image: its pixels as they are (a one-image
        # pyramid reconstructs the image itself)
        acc = np.zeros((ey1 - ey0, ex1 - ex0, 3), np.float32)
        for (li, _r, sl, mx, my, _valid), sel in zip(inst, masks, strict=True):
            img = _sample(layers[li], cache, mx, my)
            np.copyto(acc[sl], img, where=sel[:, :, None])
        out = acc[out_sl]
    else:
        out = _blend_bands(layers, cache, inst, masks, rect, ex_rect, bands)
    if tone is not None:
        out = tone(out)
    out = np.clip(out, 0.0, 1.0)
    alpha = cov[out_sl].astype(np.float32)
    out *= alpha[:, :, None]
    return out, alpha


def _blend_bands(
    layers: Sequence[Layer],
    cache: SourceCache,
    inst: list[_Instance],
    masks: list[np.ndarray],
    rect: tuple[int, int, int, int],
    ex_rect: tuple[int, int, int, int],
    bands: int,
) -> np.ndarray:
    """Multi-band blend of the instances over RECT (unclipped): each image's
    pyramid cropped to its seam mask + the margin, per-level weights
    Gaussian(seam) x Gaussian(validity), renormalised."""
    x0, y0, x1, y1 = rect
    ex0, ey0, ex1, ey1 = ex_rect
    EW, EH = ex1 - ex0, ey1 - ey0
    A = 1 << bands
    m = margin_for(bands)
    # level 0: the seam masks are binary and partition the covered pixels, so
    # the blended finest band is each pixel's owner's band (no weights)
    # (only the output rectangle is needed at level 0; the margin feeds the
    # coarser levels)
    oy0, ox0, OH, OW = y0 - ey0, x0 - ex0, y1 - y0, x1 - x0
    acc0 = np.zeros((OH, OW, 3), np.float32)
    acc = [acc0] + [np.zeros((EH >> k, EW >> k, 3), np.float32) for k in range(1, bands + 1)]
    wsum = [np.zeros((EH >> k, EW >> k), np.float32) for k in range(bands + 1)]
    # pass 1: each image's pyramids (and its finest band, pasted where it owns
    # pixels); near the output rectangle (GUARD px around it) the owner's
    # pixels and the range of all images' values, for the ghost guard
    q = GUARD
    gy0, gx0 = max(0, oy0 - q), max(0, ox0 - q)
    gy1, gx1 = min(EH, oy0 + OH + q), min(EW, ox0 + OW + q)
    own = np.zeros((gy1 - gy0, gx1 - gx0, 3), np.float32)
    lo = np.full(own.shape, np.inf, np.float32)
    hi = np.full(own.shape, -np.inf, np.float32)
    pyrs = []
    for (li, r, _sl, mx, my, valid), sel in zip(inst, masks, strict=True):
        c = _mask_crop(sel, r, m, A)
        assert c is not None
        cx0, cy0, cx1, cy1 = c
        lsl = (slice(cy0 - r[1], cy1 - r[1]), slice(cx0 - r[0], cx1 - r[0]))
        img = _sample(layers[li], cache, mx[lsl], my[lsl])
        sel_c = sel[lsl]
        g = _gauss_pyr(img, bands)
        gm = _gauss_pyr(sel_c.astype(np.float32), bands)
        v_c = valid[lsl]
        # an image valid over its whole crop (the usual case) has validity
        # weight 1 at every level: skip that pyramid
        gv = None if v_c.all() else _gauss_pyr(v_c.astype(np.float32), bands)
        oy, ox = cy0 - ey0, cx0 - ex0
        # level 0 only where this image owns output pixels (its mask's
        # bounding box within the output rectangle)
        r0, r1 = max(oy0 - oy, 0), min(oy0 + OH - oy, sel_c.shape[0])
        c0, c1 = max(ox0 - ox, 0), min(ox0 + OW - ox, sel_c.shape[1])
        part = sel_c[r0:r1, c0:c1] if r1 > r0 and c1 > c0 else sel_c[:0]
        if part.any():
            rows, cols = np.flatnonzero(part.any(1)), np.flatnonzero(part.any(0))
            r0, r1, c0, c1 = r0 + int(rows[0]), r0 + int(rows[-1]) + 1, c0 + int(cols[0]), c0 + int(cols[-1]) + 1
            lap0 = img[r0:r1, c0:c1] - _up_region(g[1], r0, r1, c0, c1)
            dst = acc0[oy + r0 - oy0 : oy + r1 - oy0, ox + c0 - ox0 : ox + c1 - ox0]
            np.copyto(dst, lap0, where=sel_c[r0:r1, c0:c1, None])
            del lap0
        # guard window: this crop's part of it
        a0, a1 = max(gy0, oy), min(gy1, oy + sel_c.shape[0])
        b0, b1 = max(gx0, ox), min(gx1, ox + sel_c.shape[1])
        if a1 > a0 and b1 > b0:
            src = img[a0 - oy : a1 - oy, b0 - ox : b1 - ox]
            vv = v_c[a0 - oy : a1 - oy, b0 - ox : b1 - ox, None]
            gs = (slice(a0 - gy0, a1 - gy0), slice(b0 - gx0, b1 - gx0))
            np.copyto(own[gs], src, where=sel_c[a0 - oy : a1 - oy, b0 - ox : b1 - ox, None])
            np.minimum(lo[gs], np.where(vv, src, np.inf), out=lo[gs])
            np.maximum(hi[gs], np.where(vv, src, -np.inf), out=hi[gs])
        del img
        pyrs.append((g, gm, gv, oy, ox))
    for g, gm, gv, oy, ox in pyrs:
        for k in range(1, bands + 1):
            if k < bands:
                lap = g[k] - cv2.pyrUp(g[k + 1], dstsize=(g[k].shape[1], g[k].shape[0]))
            else:
                lap = g[k]
            ys, xs = oy >> k, ox >> k
            hk, wk = gm[k].shape
            if gv is None:
                wk_ = gm[k] + np.float32(1e-8)
            else:
                wk_ = gm[k] * gv[k]
                wk_ += 1e-8 * gv[k]
            acc[k][ys : ys + hk, xs : xs + wk] += lap * wk_[:, :, None]
            wsum[k][ys : ys + hk, xs : xs + wk] += wk_
    n_images = len(pyrs)
    del pyrs
    res = acc[bands] / np.maximum(wsum[bands], 1e-12)[:, :, None]
    for k in range(bands - 1, 0, -1):
        lev = acc[k] / np.maximum(wsum[k], 1e-12)[:, :, None]
        res = cv2.pyrUp(res, dstsize=(lev.shape[1], lev.shape[0])) + lev
    res = _up_region(res, oy0, oy0 + OH, ox0, ox0 + OW)
    res += acc0
    if n_images > 1:
        # ghost guard: where the overlapping images disagree (a moving person,
        # parallax, a residual misalignment), blending their bands would show
        # both; there the pixel's owner (the seam's choice) wins alone,
        # feathered over a few pixels
        spread = np.nan_to_num(hi - lo, nan=0.0, posinf=0.0, neginf=0.0).max(2)
        dis = cv2.dilate((spread > DISAGREE).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(np.float32)
        alpha = cv2.GaussianBlur(dis, (0, 0), 1.5)
        sl = (slice(oy0 - gy0, oy0 - gy0 + OH), slice(ox0 - gx0, ox0 - gx0 + OW))
        a_ = alpha[sl][:, :, None]
        res = res * (1 - a_) + own[sl] * a_
    return res


#: difference (max over channels, values in [0, 1]) above which overlapping
#: images count as disagreeing (a gain-compensated overlap differs by a few %)
DISAGREE = 0.08


#: pixels around the output rectangle that the ghost guard looks at (its dilation and feathering)
GUARD = 8


def _sample(L: Layer, cache: SourceCache, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    """The one resampling: original pixels -> output pixels, with exposure
    (per-channel gain, vignetting) applied as a per-pixel factor."""
    src = cache.get(L.path)
    if max(src.shape[:2]) < 32767:
        img = cv2.remap(src, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    else:
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
    vig = bool(L.vignetting[0] or L.vignetting[1])
    if L.response and is_power_law(L.response) and is_power_law(L.output):
        # the default curve in and out: a linear gain G is G^(1 / 2.2) on the
        # encoded values, 1 / V is 1 / V^(1 / 2.2) (as without a response, scaled)
        f = (1.0 / (255.0 if src.dtype == np.uint8 else 65535.0)) * np.power(L.gain, 1.0 / DEFAULT_GAMMA)
        img = cv2.multiply(img, (float(f[0]), float(f[1]), float(f[2]), 0.0), dtype=cv2.CV_32F)
        if vig:
            vg = vignetting_gain(mx, my, L.cam, L.vignetting)
            img *= np.power(vg, np.float32(1.0 / DEFAULT_GAMMA))[:, :, None]
    elif L.response:
        # code value -> linear (the lens's response) x gain -> output
        # encoding: tables per channel, applied to the encoded values
        # interpolated as without a response, so a source with the output
        # curve at gain 1 renders as it is
        top = 255 if src.dtype == np.uint8 else 65535
        power = is_power_law(L.output)
        # 1 / V(r) acts in linear light, per pixel: through a power-law
        # output curve it is a factor on the encoded values, else it is
        # applied before encoding
        per_pixel = vig and not power
        lut = linear_lut(L.response, L.gain, top) if per_pixel else encoded_lut(L.response, L.gain, top, L.output)
        if src.dtype == np.uint8:
            img = cv2.LUT(img, lut[:, None, :])
        else:
            img = np.stack([lut[:, c][img[:, :, c]] for c in range(3)], 2)
        if per_pixel:
            img *= vignetting_gain(mx, my, L.cam, L.vignetting)[:, :, None]
            img = encode(img, L.output).astype(np.float32)
        elif vig:
            vg = vignetting_gain(mx, my, L.cam, L.vignetting)
            img *= np.power(vg, np.float32(1.0 / DEFAULT_GAMMA))[:, :, None]
    else:
        # to float with gain and scale in one pass (cv2: ~3x numpy's mixed-type multiply)
        f = (1.0 / (255.0 if src.dtype == np.uint8 else 65535.0)) * np.asarray(L.gain, np.float64)
        img = cv2.multiply(img, (float(f[0]), float(f[1]), float(f[2]), 0.0), dtype=cv2.CV_32F)
        if vig:
            img *= vignetting_gain(mx, my, L.cam, L.vignetting)[:, :, None]
    if L.white > 0:
        # a clipped channel's true value is at least the clipping level: a
        # gain < 1 must not turn a blown-out sky grey. The pixel is scaled as
        # a whole (hue kept) until its clipped channels reach ``white``.
        top = 255 if src.dtype == np.uint8 else 65535
        near = cv2.remap(src, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        clipped = near >= top - 1
        if clipped.any():
            lvl = np.where(clipped, img, np.float32(np.inf)).min(2)
            f = np.where(np.isfinite(lvl), np.float32(L.white) / np.maximum(lvl, np.float32(1e-3)), 1.0)
            img *= np.maximum(f, 1.0).astype(np.float32)[:, :, None]
    return img


def default_bands(canvas: Canvas, cams: Sequence[Camera], max_bands: int = 6) -> int:
    """Enough bands for a transition ~5 % of an image's size."""
    s = float(np.median([min(c.width, c.height) * canvas.su / c.focal for c in cams])) if cams else 256.0
    return int(np.clip(math.floor(math.log2(max(s * 0.05, 2.0))) + 1, 1, max_bands))
