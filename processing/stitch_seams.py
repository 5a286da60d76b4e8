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


def _stack(warps: Sequence[ProxyWarp | None], k: int, pc: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """Image k and its validity on the full proxy canvas (wrapped)."""
    H, W = pc.height, pc.width
    img = np.zeros((H, W, 3), np.float32)
    val = np.zeros((H, W), bool)
    wp = warps[k]
    if wp is None:
        return img, val
    x0, y0, x1, y1 = wp.rect
    cols = _paste_cols(x0, x1, W, pc.wrap)
    keep = (cols >= 0) & (cols < W)
    r0, r1 = max(0, y0), min(H, y1)
    img[r0:r1, cols[keep]] = wp.img[r0 - y0 : r1 - y0][:, keep]
    val[r0:r1, cols[keep]] = wp.valid[r0 - y0 : r1 - y0][:, keep]
    return img, val


def _roll(a: np.ndarray, shift: int) -> np.ndarray:
    return np.roll(a, shift, axis=1) if shift else a


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


def refine_seams(
    warps: Sequence[ProxyWarp | None], pc: Canvas, gains: np.ndarray | None = None, max_pairs: int = 5000
) -> np.ndarray:
    """Voronoi labels refined pairwise by DP on colour differences (proxy canvas)."""
    lab, _ = voronoi_labels(warps, pc)
    H, W = lab.shape
    pairs = set()
    for a, b in ((lab[:, :-1], lab[:, 1:]), (lab[:-1], lab[1:])):
        m = (a != b) & (a >= 0) & (b >= 0)
        for i, j in zip(a[m].tolist(), b[m].tolist(), strict=True):
            pairs.add((min(i, j), max(i, j)))
    if pc.wrap:
        a, b = lab[:, -1], lab[:, 0]
        m = (a != b) & (a >= 0) & (b >= 0)
        for i, j in zip(a[m].tolist(), b[m].tolist(), strict=True):
            pairs.add((min(i, j), max(i, j)))
    g = np.ones((len(warps), 3), np.float32) if gains is None else np.asarray(gains, np.float32)
    for i, j in sorted(pairs)[:max_pairs]:
        Ii, Vi = _stack(warps, i, pc)
        Ij, Vj = _stack(warps, j, pc)
        both = Vi & Vj & ((lab == i) | (lab == j))
        if both.sum() < 4:
            continue
        cols = np.nonzero(both.any(0))[0]
        shift = 0
        if pc.wrap and cols.size and cols[0] == 0 and cols[-1] == W - 1:
            shift = W // 2  # the overlap straddles the 360 seam: work on a rolled copy
        bth, li, vi, vj = _roll(both, shift), _roll(lab, shift), _roll(Vi, shift), _roll(Vj, shift)
        diff = np.abs(_roll(Ii, shift) * g[i] - _roll(Ij, shift) * g[j]).sum(2)
        ys, xs = np.nonzero(bth)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        sub = (slice(y0, y1), slice(x0, x1))
        vertical = (y1 - y0) >= (x1 - x0)
        ok, dd, ll = bth[sub], diff[sub], li[sub]
        oi, oj = vi[sub] & ~vj[sub], vj[sub] & ~vi[sub]
        if not vertical:
            ok, dd, ll, oi, oj = ok.T, dd.T, ll.T, oi.T, oj.T
        # which image lies on the low side of the cut
        ci = np.nonzero(oi)[1].mean() if oi.any() else np.nonzero(ll == i)[1].mean()
        cj = np.nonzero(oj)[1].mean() if oj.any() else np.nonzero(ll == j)[1].mean()
        low, high = (i, j) if ci <= cj else (j, i)
        cut = _dp_cut(dd, ok)
        xx = np.arange(ok.shape[1])[None, :]
        newl = np.where(xx < cut[:, None], low, high)
        upd = ok & (cut[:, None] >= 0)
        ll = np.where(upd, newl, ll).astype(np.int16)
        if not vertical:
            ll = ll.T
        li = li.copy()
        li[sub] = ll
        lab = np.roll(li, -shift, axis=1) if shift else li
    return lab
