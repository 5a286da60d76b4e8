"""Seam finding on a proxy canvas: Voronoi labels refined by dynamic programming.

Start from the Voronoi cells of the 'distance to the source border'
criterion, then for every pair of images whose cells touch, move their
common seam inside their overlap to the path of least colour difference
(dynamic programming, one cut per row or column, steps of at most two
pixels). The label map is small (the exposure proxy, ~2 MP) and is saved
with the layout; the full-resolution renderer looks labels up per pixel, so
every block agrees, and multi-band blending hides the proxy's coarse steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .exposure import ProxyWarp
from .project import Canvas


def _paste_cols(x0: int, x1: int, width: int, wrap: bool) -> np.ndarray:
    cols = np.arange(x0, x1)
    return np.mod(cols, width) if wrap else cols


def voronoi_labels(warps: Sequence[ProxyWarp | None], pc: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """Label (image index, -1 none) and best weight per proxy pixel."""
    H, W = pc.height, pc.width
    lab = np.full((H, W), -1, np.int16)
    best = np.zeros((H, W), np.float32)
    for k, wp in enumerate(warps):
        if wp is None or wp.w is None:
            continue
        x0, y0, x1, y1 = wp.rect
        cols = _paste_cols(x0, x1, W, pc.wrap)
        keep = (cols >= 0) & (cols < W)
        cols = cols[keep]
        rows = slice(max(0, y0), min(H, y1))
        sub_w = wp.w[max(0, y0) - y0 : min(H, y1) - y0][:, keep]
        cur = best[rows][:, cols]
        better = sub_w > cur
        cur_l = lab[rows][:, cols]
        best_rows = best[rows]  # a view: fancy assignment below writes through
        lab_rows = lab[rows]
        best_rows[:, cols] = np.where(better, sub_w, cur)
        lab_rows[:, cols] = np.where(better, k, cur_l)
    return lab, best


def _dp_cut(cost: np.ndarray, allowed: np.ndarray, step: int = 2) -> np.ndarray:
    """Per row, the column of the cut minimising the summed cost (|dx| <= step
    between rows). Rows with nothing allowed get -1."""
    h, w = cost.shape
    big = 1e9
    c = np.where(allowed, cost, big)
    acc = np.empty_like(c)
    arg = np.zeros((h, w), np.int32)
    acc[0] = c[0]
    for r in range(1, h):
        prev = acc[r - 1]
        cand = np.full((2 * step + 1, w), big)
        for d in range(-step, step + 1):
            lo, hi = max(0, d), min(w, w + d)
            cand[d + step, lo - d : hi - d] = prev[lo:hi] + 0.0 * abs(d)
        k = np.argmin(cand, axis=0)
        m = cand[k, np.arange(w)]
        if m.min() >= big:  # a gap: restart the path
            m = np.zeros(w)
        acc[r] = c[r] + m
        arg[r] = np.arange(w) + (k - step)
    cut = np.full(h, -1, np.int32)
    x = int(np.argmin(acc[-1]))
    for r in range(h - 1, -1, -1):
        cut[r] = x if allowed[r].any() else -1
        x = int(np.clip(arg[r, x], 0, w - 1))
        if r > 0 and not allowed[r - 1].any():
            x = int(np.argmin(acc[r - 1]))
    return cut


def _touching_pairs(lab: np.ndarray, wrap: bool) -> list[tuple[int, int]]:
    """Pairs (i < j) of labels that touch horizontally or vertically."""
    n = int(lab.max()) + 2
    codes = []
    edges = [(lab[:, :-1], lab[:, 1:]), (lab[:-1], lab[1:])]
    if wrap:
        edges.append((lab[:, -1], lab[:, 0]))
    for a, b in edges:
        m = (a != b) & (a >= 0) & (b >= 0)
        lo = np.minimum(a[m], b[m]).astype(np.int64)
        hi = np.maximum(a[m], b[m]).astype(np.int64)
        codes.append(lo * n + hi)
    u = np.unique(np.concatenate(codes)) if codes else np.zeros(0, np.int64)
    return [(int(c // n), int(c % n)) for c in u]


def _pair_windows(a: ProxyWarp, b: ProxyWarp, pc: Canvas) -> list[tuple[int, int, int, int, int]]:
    """Overlap rectangles of two warps in a's frame: (x0, y0, x1, y1, shift of b)."""
    H, W = pc.height, pc.width
    out = []
    ax0, ay0, ax1, ay1 = a.rect
    for s in (-W, 0, W) if pc.wrap else (0,):
        bx0, by0, bx1, by1 = b.rect
        x0, x1 = max(ax0, bx0 + s), min(ax1, bx1 + s)
        y0, y1 = max(ay0, by0, 0), min(ay1, by1, H)
        if not pc.wrap:
            x0, x1 = max(x0, 0), min(x1, W)
        if x1 > x0 and y1 > y0:
            out.append((x0, y0, x1, y1, s))
    return out


#: cost of each pixel an image that clipped it keeps (against a few tenths for a colour difference)
CLIP_OWNERSHIP = 0.2


def _clip_mask(wp: ProxyWarp, ys: slice, xs: slice, sub: tuple[slice, slice], ok: np.ndarray) -> np.ndarray:
    if wp.clipped is None:
        return np.zeros(ok.shape, bool)
    return wp.clipped[ys, xs][sub] & ok


def _ownership_cost(clip_low: np.ndarray, clip_high: np.ndarray) -> np.ndarray:
    """Cost of cutting a row before column x: the low image keeps columns < x,
    the high one the rest; every clipped pixel a side keeps costs
    CLIP_OWNERSHIP, so the cut hands blown-out content to the image that saw
    it unclipped."""
    low = np.cumsum(clip_low, axis=1) - clip_low  # clipped pixels of the low image left of x
    high = np.cumsum(clip_high[:, ::-1], axis=1)[:, ::-1]  # those of the high image from x on
    return CLIP_OWNERSHIP * (low + high).astype(np.float32)


def refine_seams(
    warps: Sequence[ProxyWarp | None], pc: Canvas, gains: np.ndarray | None = None, max_pairs: int = 100_000
) -> np.ndarray:
    """Voronoi labels refined pairwise by DP on colour differences (proxy canvas).

    Each pair works on the window where the two warps overlap (in the first
    warp's frame, so an overlap across the 360 seam is one window), never on
    the whole canvas: thousands of tiles refine in seconds."""
    lab, _ = voronoi_labels(warps, pc)
    W = lab.shape[1]
    g = np.ones((len(warps), 3), np.float32) if gains is None else np.asarray(gains, np.float32)
    for i, j in _touching_pairs(lab, pc.wrap)[:max_pairs]:
        a, b = warps[i], warps[j]
        if a is None or b is None:
            continue
        for x0, y0, x1, y1, s in _pair_windows(a, b, pc):
            cols = _paste_cols(x0, x1, W, pc.wrap)
            ax0, ay0 = a.rect[0], a.rect[1]
            bx0, by0 = b.rect[0] + s, b.rect[1]
            ya, xa = slice(y0 - ay0, y1 - ay0), slice(x0 - ax0, x1 - ax0)
            yb, xb = slice(y0 - by0, y1 - by0), slice(x0 - bx0, x1 - bx0)
            vi, vj = a.valid[ya, xa], b.valid[yb, xb]
            ll = lab[y0:y1][:, cols]
            ok = vi & vj & ((ll == i) | (ll == j))
            if ok.sum() < 4:
                continue
            ys, xs = np.nonzero(ok)
            sub = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
            dd = np.abs(a.img[ya, xa][sub] * g[i] - b.img[yb, xb][sub] * g[j]).sum(2)
            ok, ll_s, vi, vj = ok[sub], ll[sub], vi[sub], vj[sub]
            ki = _clip_mask(a, ya, xa, sub, ok)
            kj = _clip_mask(b, yb, xb, sub, ok)
            vertical = ok.shape[0] >= ok.shape[1]
            oi, oj = vi & ~vj, vj & ~vi
            if not vertical:
                ok, dd, ll_s, oi, oj, ki, kj = ok.T, dd.T, ll_s.T, oi.T, oj.T, ki.T, kj.T
            # which image lies on the low side of the cut
            ci = np.nonzero(oi)[1].mean() if oi.any() else np.nonzero(ll_s == i)[1].mean()
            cj = np.nonzero(oj)[1].mean() if oj.any() else np.nonzero(ll_s == j)[1].mean()
            low, high = (i, j) if ci <= cj else (j, i)
            kl, kh = (ki, kj) if low == i else (kj, ki)
            cut = _dp_cut(dd + _ownership_cost(kl, kh), ok)
            xx = np.arange(ok.shape[1])[None, :]
            newl = np.where(xx < cut[:, None], low, high)
            upd = ok & (cut[:, None] >= 0)
            ll_s = np.where(upd, newl, ll_s).astype(np.int16)
            if not vertical:
                ll_s = ll_s.T
            ll[sub] = ll_s
            lab[y0:y1, cols] = ll
    return lab
