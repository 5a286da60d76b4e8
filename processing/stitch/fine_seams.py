"""Seams refined at full resolution along the proxy seams (computed once, at layout time).

The proxy labels (seams.py, ~2 MP) pick each pixel's owner in steps of the
proxy's scale (~6 output px on a 72 MP panorama): where overlapping views
disagree (parallax on a thin downpipe), the ghost guard shows the owner
alone and the owner changes in blocks. Here, for every pair of labels that
touch, the band of proxy pixels along their common boundary (dilated by
BAND proxy px) is mapped to the full-resolution canvas, both images are
sampled there as the renderer shows them (blend._sample: gains, response,
vignetting) and the cut is searched again by dynamic programming on their
difference, with a per-row step wide enough to follow the proxy seam. Pixels
outside the bands keep the proxy labels, so the refined seams join them.
The result is a list of patches (seam_patches.py) stored with the layout:
every block applies the same ones, so block renders equal the whole render.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import cv2
import numpy as np

from .blend import Layer, SourceCache, _sample
from .exposure import CLIPPED
from .project import Canvas, block_map
from .seam_patches import FineSeams, SeamPatch, labels_at, proxy_index
from .seams import _ownership_cost

#: proxy pixels the band extends on each side of a proxy seam
BAND = 2
#: no refinement when the proxy is (nearly) the output: nothing to gain
MIN_SCALE = 1.5
#: nor when a proxy pixel is more than this many output px (gigapixel canvases: the
#: DP's per-row window, 2 x scale + 1 columns, and the decoding of every source
#: would cost minutes of layout time; there the proxy seams stay)
MAX_SCALE = 12.0
#: a band whose full-resolution bounding window exceeds this many MP keeps
#: the proxy seam (terapixel canvases: a proxy pixel is hundreds of output px)
MAX_WINDOW_MP = 16.0
#: at most this many MP sampled in all (two images per band pixel); the pairs beyond keep the proxy seams
MAX_TOTAL_MP = 100.0
#: cost of a move of d columns between rows: STEP_COST d^2, against a summed RGB difference
#: in [0, 3]; keeps the cut straight where the images agree, and (convex) makes a slanted
#: cut move a little every row instead of in proxy-sized stairs
STEP_COST = 0.005
#: weight of the pixels a move between rows passes (the cut's horizontal part): 0 lets a wide
#: step jump across a thin bar for free (slivers), 1 makes slanted cuts through disagreeing
#: content stairs; 0.3 looked best on durlach's downpipe and eaves
CROSS = 0.3


def dp_cut_wide(cost: np.ndarray, allowed: np.ndarray, step: int, step_cost: float = STEP_COST) -> np.ndarray:
    """seams._dp_cut with a wide step, vectorised per row (a window of
    2 step + 1 previous columns), a cost growing with the move (STEP_COST), and the cost of
    the pixels a move passes (the seam's horizontal part: a wide step must
    not jump across a thin bar for free). Each row is computed over the
    span of its allowed columns only. Rows with nothing allowed get -1; a
    gap restarts the path."""
    h, w = cost.shape
    big = np.float64(1e9)
    c = np.where(allowed, cost, big).astype(np.float64)
    # per row, the summed cost of the columns left of x: a move from x' to x costs |P[x] - P[x']|
    P = np.cumsum(np.where(allowed, cost, 0.0), axis=1, dtype=np.float64) - np.where(allowed, cost, 0.0)
    K = 2 * step + 1
    pen = step_cost * np.arange(-step, step + 1, dtype=np.float64) ** 2
    cols = np.arange(w)
    idx = cols[:, None] + np.arange(K)[None, :]  # [x, k]: previous column x + k - step, padded by step
    Pz = np.pad(P, ((0, 0), (step, step)), mode="edge")
    buf = np.full(w + 2 * step, big)
    row_any = allowed.any(1)
    # each row only over its allowed span (a slanted band's window is mostly outside it)
    span = [(int(np.argmax(a)), w - int(np.argmax(a[::-1]))) if row_any[r] else (0, 0) for r, a in enumerate(allowed)]
    acc = np.full((h, w), big)
    arg = np.zeros((h, w), np.int32)
    acc[0] = c[0]
    for r in range(1, h):
        a, b = span[r]
        if b <= a:
            continue
        if not row_any[r - 1]:  # a gap: restart the path
            acc[r, a:b] = c[r, a:b]
            arg[r, a:b] = cols[a:b]
            continue
        buf[step : step + w] = acc[r - 1]
        ix = idx[a:b]
        win = buf[ix] + (CROSS * np.abs(P[r, a:b, None] - Pz[r][ix]) + pen)
        k = np.argmin(win, axis=1)
        m = win[np.arange(b - a), k]
        if m.min() >= big:
            m = np.zeros(b - a)
        acc[r, a:b] = c[r, a:b] + m
        arg[r, a:b] = cols[a:b] + (k - step)
    cut = np.full(h, -1, np.int32)
    x = int(np.argmin(acc[-1]))
    for r in range(h - 1, -1, -1):
        cut[r] = x if row_any[r] else -1
        if r > 0:
            x = int(np.clip(arg[r, x], 0, w - 1)) if row_any[r] and row_any[r - 1] else int(np.argmin(acc[r - 1]))
    return cut


def _pair_edges(lab: np.ndarray, wrap: bool) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """Proxy pixels (rows, cols) on the common boundary of each pair (i < j)
    of touching labels, both sides of it, found in one pass over the map."""
    H, W = lab.shape
    n = int(lab.max()) + 2
    ys, xs, codes = [], [], []
    pairs = [
        ((slice(None), slice(0, W - 1)), (slice(None), slice(1, W)), 0, 1),
        ((slice(0, H - 1),), (slice(1, H),), 1, 0),
    ]
    for sa, sb, dy, dx in pairs:
        a, b = lab[sa], lab[sb]
        m = (a != b) & (a >= 0) & (b >= 0)
        yy, xx = np.nonzero(m)
        code = np.minimum(a[m], b[m]).astype(np.int64) * n + np.maximum(a[m], b[m])
        ys += [yy, yy + dy]
        xs += [xx, xx + dx]
        codes += [code, code]
    if wrap:
        a, b = lab[:, -1], lab[:, 0]
        m = (a != b) & (a >= 0) & (b >= 0)
        yy = np.flatnonzero(m)
        code = np.minimum(a[m], b[m]).astype(np.int64) * n + np.maximum(a[m], b[m])
        ys += [yy, yy]
        xs += [np.full(yy.size, W - 1), np.zeros(yy.size, np.int64)]
        codes += [code, code]
    Y, X, C = np.concatenate(ys), np.concatenate(xs), np.concatenate(codes)
    if C.size == 0:  # no two labels touch
        return {}
    order = np.argsort(C, kind="stable")
    Y, X, C = Y[order], X[order], C[order]
    u, start = np.unique(C, return_index=True)
    bounds = [*start[1:].tolist(), C.size]
    return {(int(c // n), int(c % n)): (Y[s:e], X[s:e]) for c, s, e in zip(u, start, bounds, strict=True)}


def _bands(ys: np.ndarray, xs: np.ndarray, Wp: int, wrap: bool) -> list[tuple[int, int, np.ndarray]]:
    """The dilated band around boundary pixels, split into connected parts:
    (proxy x0, y0, mask) each; with wrap, x may run past the canvas width."""
    if wrap and xs.size and xs.max() - xs.min() > Wp // 2:
        xs = np.where(xs < Wp // 2, xs + Wp, xs)  # one piece across the 360 seam
    d = BAND
    x0, y0 = int(xs.min()) - d, int(ys.min()) - d
    m = np.zeros((int(ys.max()) + d + 1 - y0, int(xs.max()) + d + 1 - x0), np.uint8)
    m[ys - y0, xs - x0] = 1
    m = cv2.dilate(m, np.ones((2 * d + 1, 2 * d + 1), np.uint8))
    n, comp, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    out = []
    for k in range(1, n):
        cx, cy, cw, ch = (int(v) for v in stats[k, :4])
        out.append((x0 + cx, y0 + cy, comp[cy : cy + ch, cx : cx + cw] == k))
    return out


def _sample_at(L: Layer, cache: SourceCache, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    """blend._sample at scattered pixels (1-D maps), in rows of 4096."""
    n = mx.size
    cols = 4096
    rows = -(-n // cols)
    pad = rows * cols - n
    gx = np.concatenate([mx, np.full(pad, mx[0] if n else 0, np.float32)]).reshape(rows, cols)
    gy = np.concatenate([my, np.full(pad, my[0] if n else 0, np.float32)]).reshape(rows, cols)
    return _sample(L, cache, gx, gy).reshape(-1, 3)[:n]


def _clipped_at(L: Layer, cache: SourceCache, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    """Whether the input clipped (any channel) the nearest source pixel, as exposure.proxy_warp marks it."""
    src = cache.get(L.path)
    top = 255 if src.dtype == np.uint8 else 65535
    yy = np.clip(np.rint(my).astype(np.int64), 0, src.shape[0] - 1)
    xx = np.clip(np.rint(mx).astype(np.int64), 0, src.shape[1] - 1)
    return src[yy, xx].max(-1) >= CLIPPED * top


def _refine_window(
    layers: Sequence[Layer],
    canvas: Canvas,
    cache: SourceCache,
    i: int,
    j: int,
    rect: tuple[int, int, int, int],
    lab: np.ndarray,
    band: np.ndarray,
    step: int,
) -> SeamPatch | None:
    """The DP cut between i and j over the band pixels of RECT (full-res
    canvas coordinates, x possibly past the width with wrap) where both are
    valid and the label is i or j."""
    X0, Y0, X1, Y1 = rect
    w, h = X1 - X0, Y1 - Y0
    mxi, myi, vi = block_map(layers[i].cam, canvas, X0, Y0, w, h)
    mxj, myj, vj = block_map(layers[j].cam, canvas, X0, Y0, w, h)
    ok = band & vi & vj & ((lab == i) | (lab == j))
    if ok.sum() < 4:
        return None
    ys, xs = np.nonzero(ok)
    sy, sx = slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)
    ok, ll = ok[sy, sx], lab[sy, sx]
    cost = np.zeros(ok.shape, np.float32)
    a = _sample_at(layers[i], cache, mxi[sy, sx][ok], myi[sy, sx][ok])
    b = _sample_at(layers[j], cache, mxj[sy, sx][ok], myj[sy, sx][ok])
    cost[ok] = np.abs(a - b).sum(1)
    # blown-out content goes to the image that saw it unclipped (as on the proxy)
    ki, kj = np.zeros(ok.shape, bool), np.zeros(ok.shape, bool)
    ki[ok] = _clipped_at(layers[i], cache, mxi[sy, sx][ok], myi[sy, sx][ok])
    kj[ok] = _clipped_at(layers[j], cache, mxj[sy, sx][ok], myj[sy, sx][ok])
    vertical = ok.shape[0] >= ok.shape[1]
    if not vertical:
        ok, ll, cost, ki, kj = ok.T, ll.T, cost.T, ki.T, kj.T
    # which image lies on the low side of the cut (as in seams.refine_seams)
    ci, cj = np.nonzero(ll == i)[1], np.nonzero(ll == j)[1]
    if ci.size == 0 or cj.size == 0:
        return None
    low, high = (i, j) if ci.mean() <= cj.mean() else (j, i)
    kl, kh = (ki, kj) if low == i else (kj, ki)
    # a cut before column x joins pixels x - 1 and x: both differences count,
    # else the cut hugs a disagreeing structure and shows its edge
    pair = cost.copy()
    pair[:, 1:] += cost[:, :-1]
    cut = dp_cut_wide(pair + _ownership_cost(kl, kh), ok, step)
    xx = np.arange(ok.shape[1])[None, :]
    upd = ok & (cut[:, None] >= 0)
    is_i = upd & ((xx < cut[:, None]) == (low == i))
    if not vertical:
        upd, is_i = upd.T, is_i.T
    x0 = X0 + sx.start
    y0 = Y0 + sy.start
    shift = (x0 // canvas.width) * canvas.width if canvas.wrap else 0  # patches start inside the canvas
    r = (x0 - shift, y0, x0 - shift + upd.shape[1], y0 + upd.shape[0])
    return SeamPatch(r, i, j, np.ascontiguousarray(upd), np.ascontiguousarray(is_i))


def fine_seams(
    layers: Sequence[Layer],
    canvas: Canvas,
    labels: np.ndarray,
    cache: SourceCache,
    max_window_mp: float = MAX_WINDOW_MP,
    max_total_mp: float = MAX_TOTAL_MP,
) -> FineSeams | None:
    """Full-resolution overrides of the proxy ``labels`` along every seam;
    None when the proxy is at (near) full resolution or far below it
    (MIN_SCALE, MAX_SCALE)."""
    t0 = time.perf_counter()
    Hp, Wp = labels.shape
    W, H = canvas.width, canvas.height
    scale = max(W / Wp, H / Hp)
    if scale < MIN_SCALE or scale > MAX_SCALE:
        return None
    step = 2 * math.ceil(scale) + 1  # one proxy step of 2 px, at full resolution
    out = FineSeams()
    total = 0.0
    for (i, j), (ys, xs) in sorted(_pair_edges(labels, canvas.wrap).items()):
        for qx0, qy0, bm in _bands(ys, xs, Wp, canvas.wrap):
            # full-res pixels whose proxy pixel (as blend._seam_masks maps it) lies in the band
            X0, X1 = math.floor(qx0 * W / Wp), math.ceil((qx0 + bm.shape[1]) * W / Wp)
            Y0, Y1 = max(0, math.floor(qy0 * H / Hp)), min(H, math.ceil((qy0 + bm.shape[0]) * H / Hp))
            if not canvas.wrap:
                X0, X1 = max(0, X0), min(W, X1)
            if X1 <= X0 or Y1 <= Y0:
                continue
            if max_window_mp * 1e6 < (X1 - X0) * (Y1 - Y0) or total > max_total_mp * 1e6:
                out.skipped += 1
                continue
            px = proxy_index(X0, X1, W, Wp)  # may pass Wp with wrap
            py = np.clip(proxy_index(Y0, Y1, H, Hp), 0, Hp - 1)
            lab = labels_at(labels, W, H, canvas.wrap, (X0, Y0, X1, Y1))
            out.apply(lab, X0, Y0, W, canvas.wrap)  # earlier pairs first, as the renderer does
            bx, by = px - qx0, py - qy0
            inb = ((bx >= 0) & (bx < bm.shape[1]))[None, :] & ((by >= 0) & (by < bm.shape[0]))[:, None]
            band = inb & bm[np.clip(by, 0, bm.shape[0] - 1)][:, np.clip(bx, 0, bm.shape[1] - 1)]
            p = _refine_window(layers, canvas, cache, i, j, (X0, Y0, X1, Y1), lab, band, step)
            total += 2.0 * band.sum()
            if p is not None:
                out.patches.append(p)
    out.seconds = time.perf_counter() - t0
    return out
