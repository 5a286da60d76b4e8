"""Exposure compensation before seam finding.

Gain compensation per channel per image: least squares on the mean colours
of every pairwise overlap (OpenCV's GainCompensator equations, solved per
channel), measured on small proxy warps of each image. Optional vignetting
correction: a radial polynomial V(r) = 1 + a r^2 + b r^4 shared by all images,
fitted jointly with log gains on pixel pairs of the overlaps (log-linear
least squares).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .project import Camera, Canvas, block_map, center_weight, footprint


@dataclass
class ProxyWarp:
    rect: tuple[int, int, int, int]  # on the proxy canvas (x may exceed width with wrap)
    img: np.ndarray  # float32 h x w x 3
    valid: np.ndarray  # bool h x w
    r2: np.ndarray  # normalised squared radius in the source (for vignetting)
    w: np.ndarray | None = None  # Voronoi criterion (distance to the source border)


def proxy_warp(thumb: np.ndarray, cam: Camera, pc: Canvas) -> ProxyWarp | None:
    """Warp a thumbnail (any size, same aspect as the original) onto the proxy canvas."""
    th, tw = thumb.shape[:2]
    s = tw / cam.width
    tcam = Camera(tw, th, cam.focal * s, cam.R, cam.k1, cam.k2)
    x0, y0, x1, y1 = footprint(cam, pc)
    if x1 <= x0 or y1 <= y0:
        return None
    mx, my, valid = block_map(tcam, pc, x0, y0, x1 - x0, y1 - y0)
    if not valid.any():
        return None
    img = cv2.remap(thumb, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    if thumb.dtype == np.uint8:
        img /= 255.0
    cx, cy = tcam.center
    r2 = ((mx - cx) ** 2 + (my - cy) ** 2) / ((tw / 2.0) ** 2 + (th / 2.0) ** 2)
    w = center_weight(tcam, mx, my, valid)
    return ProxyWarp((x0, y0, x1, y1), img, valid, r2.astype(np.float32), w)


def _overlap(a: ProxyWarp, b: ProxyWarp, canvas: Canvas):
    """Yield the overlapping views (a_slice, b_slice) of two proxy warps."""
    shifts = (-canvas.width, 0, canvas.width) if canvas.wrap else (0,)
    ax0, ay0, ax1, ay1 = a.rect
    for s in shifts:
        bx0, by0, bx1, by1 = b.rect
        bx0, bx1 = bx0 + s, bx1 + s
        x0, x1 = max(ax0, bx0), min(ax1, bx1)
        y0, y1 = max(ay0, by0), min(ay1, by1)
        if x1 <= x0 or y1 <= y0:
            continue
        sa = (slice(y0 - ay0, y1 - ay0), slice(x0 - ax0, x1 - ax0))
        sb = (slice(y0 - by0, y1 - by0), slice(x0 - bx0, x1 - bx0))
        yield sa, sb


def overlap_pairs(rects: Sequence[tuple[int, int, int, int] | None], canvas: Canvas) -> list[tuple[int, int]]:
    """Pairs (i < j) of rectangles (x may exceed the width with wrap) that
    intersect, found through a grid hash: O(n) for many similar tiles instead
    of testing all n^2 pairs."""
    ok = [k for k, r in enumerate(rects) if r is not None and r[2] > r[0] and r[3] > r[1]]
    if len(ok) < 2:
        return []
    W = canvas.width
    cw = max(8, int(np.median([rects[k][2] - rects[k][0] for k in ok])))  # type: ignore[index]
    ch = max(8, int(np.median([rects[k][3] - rects[k][1] for k in ok])))  # type: ignore[index]
    nx = max(1, -(-W // cw))
    cells: dict[tuple[int, int], list[int]] = {}
    for k in ok:
        x0, y0, x1, y1 = rects[k]  # type: ignore[misc]
        cx0, cx1 = x0 // cw, (x1 - 1) // cw
        if canvas.wrap:
            cols = range(nx) if cx1 - cx0 + 1 >= nx else sorted({c % nx for c in range(cx0, cx1 + 1)})
        else:
            cols = range(cx0, cx1 + 1)
        for cy in range(y0 // ch, (y1 - 1) // ch + 1):
            for cx in cols:
                cells.setdefault((cx, cy), []).append(k)
    cand: set[tuple[int, int]] = set()
    for members in cells.values():
        for p in range(len(members)):
            for q in range(p + 1, len(members)):
                a, b = members[p], members[q]
                cand.add((a, b) if a < b else (b, a))
    shifts = (-W, 0, W) if canvas.wrap else (0,)
    out = []
    for i, j in sorted(cand):
        ax0, ay0, ax1, ay1 = rects[i]  # type: ignore[misc]
        bx0, by0, bx1, by1 = rects[j]  # type: ignore[misc]
        if min(ay1, by1) > max(ay0, by0) and any(min(ax1, bx1 + s) > max(ax0, bx0 + s) for s in shifts):
            out.append((i, j))
    return out


def warp_pairs(warps: Sequence[ProxyWarp | None], canvas: Canvas) -> list[tuple[int, int]]:
    return overlap_pairs([w.rect if w is not None else None for w in warps], canvas)


def overlap_stats(warps: Sequence[ProxyWarp | None], canvas: Canvas) -> tuple[Any, list[Any]]:
    """Overlap pixel counts N[i, j] and, per channel c, Im[c][i, j] = mean of
    image i over its overlap with j, as sparse n x n matrices (only
    neighbouring images overlap, so memory is O(n))."""
    from scipy.sparse import csr_matrix

    n = len(warps)
    rows, cols, cnt, means = [], [], [], []
    for i, j in warp_pairs(warps, canvas):
        a, b = warps[i], warps[j]
        assert a is not None and b is not None
        c_tot = 0
        si = np.zeros(3)
        sj = np.zeros(3)
        for sa, sb in _overlap(a, b, canvas):
            both = a.valid[sa] & b.valid[sb]
            c = int(both.sum())
            if c == 0:
                continue
            c_tot += c
            si += a.img[sa][both].sum(0)
            sj += b.img[sb][both].sum(0)
        if c_tot == 0:
            continue
        rows += [i, j]
        cols += [j, i]
        cnt += [c_tot, c_tot]
        means += [si / c_tot, sj / c_tot]
    N = csr_matrix((np.asarray(cnt, np.float64), (rows, cols)), shape=(n, n))
    M = np.asarray(means, np.float64).reshape(-1, 3)
    Im = [csr_matrix((M[:, c], (rows, cols)), shape=(n, n)) for c in range(3)]
    return N, Im


def solve_gains(N: Any, Im: Any, sigma_n: float = 10.0 / 255, sigma_g: float = 1.0) -> np.ndarray:
    """Per-channel gains (n x 3) minimising
    sum N_ij [(g_i I_ij - g_j I_ji)^2 / sigma_n^2 + (1 - g_i)^2 / sigma_g^2].

    ``N`` (n x n) and ``Im`` (n x n x 3, or three n x n matrices, one per
    channel) may be dense or scipy sparse (see overlap_stats); the normal
    equations are sparse, so thousands of images solve in milliseconds.
    OpenCV uses sigma_g = 0.1, which leaves a third of a 30 % difference
    uncompensated; here the prior is weak and the result is rescaled to a
    geometric mean of 1 per channel (the inputs' average exposure)."""
    from scipy.sparse import coo_matrix, csr_matrix
    from scipy.sparse.linalg import spsolve

    Nc = coo_matrix(N)
    n = Nc.shape[0]
    keep = (Nc.row != Nc.col) & (Nc.data > 0)
    r, c_, nij = Nc.row[keep], Nc.col[keep], Nc.data[keep]
    chans = [csr_matrix(Im[c]) for c in range(3)] if not isinstance(Im, np.ndarray) else None
    gains = np.ones((n, 3))
    alpha, beta = 1.0 / sigma_n**2, 1.0 / sigma_g**2
    for c in range(3):
        if chans is None:
            Iij, Iji = Im[r, c_, c], Im[c_, r, c]
        else:
            Iij = np.asarray(chans[c][r, c_]).ravel()
            Iji = np.asarray(chans[c][c_, r]).ravel()
        b = np.bincount(r, beta * nij, minlength=n)
        diag = np.bincount(r, beta * nij + 2 * alpha * Iij**2 * nij, minlength=n)
        lonely = diag == 0
        diag[lonely] = 1.0
        b[lonely] = 1.0
        A = coo_matrix(
            (
                np.concatenate([diag, -2 * alpha * Iij * Iji * nij]),
                (np.concatenate([np.arange(n), r]), np.concatenate([np.arange(n), c_])),
            ),
            shape=(n, n),
        ).tocsc()
        gains[:, c] = spsolve(A, b)
    gains = np.clip(gains, 0.05, 20.0)
    # the data term alone prefers all gains -> 0; with the weak prior keep the
    # inputs' average level: geometric mean 1 per channel over connected images
    used = np.bincount(r, nij, minlength=n) > 0
    if used.any():
        gains[used] /= np.exp(np.log(gains[used]).mean(0, keepdims=True))
    return gains


def estimate_vignetting(
    warps: Sequence[ProxyWarp | None], canvas: Canvas, max_samples: int = 200_000, seed: int = 0
) -> tuple[float, float]:
    """Shared radial falloff (a, b) from overlap pixel pairs:
    log I_i - log V(r_i) + log g_i = log I_j - log V(r_j) + log g_j, with
    log V(r) ~ a r^2 + b r^4 (small-coefficient linearisation, refined once)."""
    n = len(warps)
    rows_i, rows_j, r2i, r2j, li, lj = [], [], [], [], [], []
    for i, j in warp_pairs(warps, canvas):
        a, b = warps[i], warps[j]
        if a is None or b is None:
            continue
        for sa, sb in _overlap(a, b, canvas):
            both = a.valid[sa] & b.valid[sb]
            ya = a.img[sa][both].mean(1)
            yb = b.img[sb][both].mean(1)
            ok = (ya > 0.02) & (yb > 0.02) & (ya < 0.98) & (yb < 0.98)
            if ok.sum() < 20:
                continue
            rows_i.append(np.full(ok.sum(), i))
            rows_j.append(np.full(ok.sum(), j))
            r2i.append(a.r2[sa][both][ok])
            r2j.append(b.r2[sb][both][ok])
            li.append(np.log(ya[ok]))
            lj.append(np.log(yb[ok]))
    if not rows_i:
        return 0.0, 0.0
    ri, rj = np.concatenate(rows_i), np.concatenate(rows_j)
    qi, qj = np.concatenate(r2i), np.concatenate(r2j)
    d = np.concatenate(li) - np.concatenate(lj)
    if len(d) > max_samples:
        sel = np.random.default_rng(seed).choice(len(d), max_samples, replace=False)
        ri, rj, qi, qj, d = ri[sel], rj[sel], qi[sel], qj[sel], d[sel]
    from scipy.sparse import coo_matrix, vstack
    from scipy.sparse.linalg import lsqr

    m = len(d)
    # unknowns: log g (n), a, b ; equation: lg_i - lg_j - a(qi - qj) - b(qi^2 - qj^2) = -(d)
    r = np.arange(m)
    data = np.concatenate([np.ones(m), -np.ones(m), -(qi - qj), -(qi**2 - qj**2)])
    rr = np.concatenate([r, r, r, r])
    cc = np.concatenate([ri, rj, np.full(m, n), np.full(m, n + 1)])
    A = coo_matrix((data, (rr, cc)), shape=(m, n + 2))
    reg = coo_matrix((np.full(n, 1.0), (np.zeros(n), np.arange(n))), shape=(1, n + 2))
    A = vstack([A, reg * 10]).tocsr()
    rhs = np.concatenate([-d, [0.0]])
    sol = lsqr(A, rhs, atol=1e-10, btol=1e-10, iter_lim=2000)[0]
    a_, b_ = float(sol[n]), float(sol[n + 1])
    # log V = a r2 + b r4  ->  V = exp(.) ~ 1 + a r2 + (b + a^2/2) r4
    return a_, b_ + a_ * a_ / 2


def apply_vignetting_to_warps(warps: Sequence[ProxyWarp | None], coeffs: tuple[float, float]) -> None:
    for w in warps:
        if w is None:
            continue
        v = 1.0 + w.r2 * (coeffs[0] + coeffs[1] * w.r2)
        w.img /= np.maximum(v, 0.05)[:, :, None]


def thumbnail(img: np.ndarray, max_pixels: float) -> np.ndarray:
    """uint8 thumbnail of a float image for the exposure proxies."""
    h, w = img.shape[:2]
    f = min(1.0, (max_pixels / (w * h)) ** 0.5)
    if f < 1.0:
        img = cv2.resize(img, (max(2, round(w * f)), max(2, round(h * f))), interpolation=cv2.INTER_AREA)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
