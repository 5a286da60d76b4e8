"""Exposure compensation before seam finding.

Gain compensation per channel per image: least squares on the mean colours
of every pairwise overlap (OpenCV's GainCompensator equations, solved per
channel), measured on small proxy warps of each image. Optional vignetting
correction: a radial polynomial V(r) = 1 + a r^2 + b r^4 shared by all images,
fitted jointly with log gains on pixel pairs of the overlaps (log-linear
least squares). The joint model (solve_exposure) can also fit a camera
response per lens (response.py), so that gains act in linear light.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .project import Camera, Canvas, block_map, center_weight, footprint
from .response import DEFAULT_GAMMA, MIN_SLOPE, TERMS, Response, basis, encode


@dataclass
class ProxyWarp:
    rect: tuple[int, int, int, int]  # on the proxy canvas (x may exceed width with wrap)
    img: np.ndarray  # float32 h x w x 3
    valid: np.ndarray  # bool h x w
    r2: np.ndarray  # normalised squared radius in the source (for vignetting)
    w: np.ndarray | None = None  # Voronoi criterion (distance to the source border)
    clipped: np.ndarray | None = None  # bool h x w: the input was clipped there (any channel)


def proxy_warp(thumb: np.ndarray, cam: Camera, pc: Canvas) -> ProxyWarp | None:
    """Warp a thumbnail (any size, same aspect as the original) onto the proxy canvas."""
    th, tw = thumb.shape[:2]
    tcam = cam.resized(tw, th)
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
    clipped = valid & (img.max(2) >= CLIPPED)
    # a source that clipped a pixel loses it to one that did not (seams.py)
    w = np.where(clipped, w * 0.01, w).astype(np.float32)
    return ProxyWarp((x0, y0, x1, y1), img, valid, r2.astype(np.float32), w, clipped)


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


# ----------------------------------------------------- joint photometric model

#: thumbnail values at or above this (any channel) count as clipped in the input
CLIPPED = 0.97
#: and below this as too dark (noise, JPEG quantisation) for exposure ratios
DARK = 0.03
#: white balance basis: log gains per channel = ev + u * WB_U + v * WB_V (sum zero)
WB_U = np.array([1.0, 0.0, -1.0]) / math.sqrt(2)
WB_V = np.array([1.0, -2.0, 1.0]) / math.sqrt(6)


@dataclass
class Exposure:
    """Per image: exposure (natural log of the gain), white balance (u, v);
    per lens: vignetting (a, b) with V = 1 + a r^2 + b r^4 and, with the
    response model, the camera response (response.Response parameters; the
    gains then act in linear light)."""

    ev: np.ndarray  # n
    wb: np.ndarray  # n x 2
    vignetting: np.ndarray  # lenses x 2
    lens: np.ndarray  # n, index into vignetting
    samples: int = 0
    response: np.ndarray | None = None  # lenses x (1 + TERMS); None: gains on the encoded values
    # which response was kept ("fitted", "default: <why>") and the robust
    # residual (median |log difference|) of the default and the fitted curve
    response_note: str = ""
    residuals: tuple[float, float] = (0.0, 0.0)
    spread: float = 0.0  # RMS log exposure ratio of the pairs (linear light with a response)

    def gains(self) -> np.ndarray:
        return np.exp(self.ev[:, None] + self.wb[:, :1] * WB_U[None] + self.wb[:, 1:] * WB_V[None])

    def responses(self) -> list[Response] | None:
        """One Response per image (None without the response model)."""
        if self.response is None:
            return None
        return [Response.from_list(self.response[k]) for k in self.lens]


def _pair_samples(
    a: ProxyWarp, b: ProxyWarp, canvas: Canvas, cap: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """log RGB and r^2 of up to ``cap`` overlap pixels that neither image clipped."""
    li, lj, ri, rj = [], [], [], []
    for sa, sb in _overlap(a, b, canvas):
        both = a.valid[sa] & b.valid[sb]
        ia, ib = a.img[sa][both], b.img[sb][both]
        ok = (ia.max(1) < CLIPPED) & (ib.max(1) < CLIPPED) & (ia.min(1) > DARK) & (ib.min(1) > DARK)
        if ok.sum() == 0:
            continue
        li.append(np.log(ia[ok]))
        lj.append(np.log(ib[ok]))
        ri.append(a.r2[sa][both][ok])
        rj.append(b.r2[sb][both][ok])
    if not li:
        return None
    Li, Lj, Ri, Rj = (np.concatenate(x) for x in (li, lj, ri, rj))
    if len(Li) < 20:
        return None
    if len(Li) > cap:
        sel = rng.choice(len(Li), cap, replace=False)
        Li, Lj, Ri, Rj = Li[sel], Lj[sel], Ri[sel], Rj[sel]
    return Li, Lj, Ri, Rj


@dataclass
class _Samples:
    ii: np.ndarray  # m: first image of each pair
    jj: np.ndarray  # m: second image
    li: np.ndarray  # m x 3: log of the first image's encoded values
    lj: np.ndarray
    qi: np.ndarray  # m: normalised r^2 in the first image
    qj: np.ndarray


def _collect(warps: Sequence[ProxyWarp | None], canvas: Canvas, max_samples: int, seed: int) -> _Samples | None:
    pairs = warp_pairs(warps, canvas)
    rng = np.random.default_rng(seed)
    cap = max(200, max_samples // max(1, len(pairs)))
    out: list[list[np.ndarray]] = [[] for _ in range(6)]
    for i, j in pairs:
        a, b = warps[i], warps[j]
        if a is None or b is None:
            continue
        s = _pair_samples(a, b, canvas, cap, rng)
        if s is None:
            continue
        for lst, x in zip(out, (np.full(len(s[0]), i), np.full(len(s[0]), j), *s), strict=True):
            lst.append(x)
    if not out[0]:
        return None
    return _Samples(*(np.concatenate(x) for x in out))


#: pixel pairs below which the response stays at the default curve
MIN_RESPONSE_SAMPLES = 3000
#: the fitted response is kept only if it lowers the robust residual by this share
MIN_RESPONSE_GAIN = 0.03
#: pixel pairs the response fit uses at most (a random subset)
RESPONSE_SAMPLES = 80_000
#: nor when the pairs' exposure ratios (with vignetting; RMS of the natural
#: log in linear light) spread less than this: equal exposures fit any curve
MIN_EXPOSURE_SPREAD = 0.1
#: where the response's local slope is pulled towards the default's, and how
#: strongly (times sqrt of the equations over the grid's points)
SLOPE_GRID = np.linspace(0.0, 1.0, 13)
SLOPE_PRIOR = 0.01
#: residuals are divided by the local slope, at least this share of the default's
SLOPE_FLOOR = 0.25
#: ridge priors (times sqrt of the equations) of the response's deviation from the default
RESPONSE_PRIOR = 0.001


def _solve_linear(
    S: _Samples,
    n: int,
    lens_idx: np.ndarray,
    vignetting: bool,
    wb_prior: float,
    curve: float,
    free_response: bool,
) -> tuple[np.ndarray, float]:
    """One robust (Huber) sparse least-squares solve of

        L(I_i,c) - log V(r_i) + ev_i + wb_i . B_c = L(I_j,c) - log V(r_j) + ev_j + wb_j . B_c

    with L(x) = curve log x: linear, IRLS; with ``free_response`` L(x) +=
    dgamma_L log x + sum_k c_L,k (1 - x)^k, and the residuals are measured
    in log x (_gauss_newton). Returns the unknowns (ev | u | v | vignetting
    (2 per lens) | response deviations (1 + TERMS per lens)) and the median
    |residual| in log x units (divided by ``curve``: comparable between the
    two)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import lsqr

    ii, jj, li, lj, qi, qj = S.ii, S.jj, S.li, S.lj, S.qi, S.qj
    m = len(ii)
    n_lens = int(lens_idx.max()) + 1
    nr = 1 + TERMS
    o_vig = 3 * n
    o_res = o_vig + (2 * n_lens if vignetting else 0)
    nv = o_res + (nr * n_lens if free_response else 0)
    Li_, Lj_ = lens_idx[ii], lens_idx[jj]
    rr, cc, vv, rhs = [], [], [], []
    for c in range(3):
        r = np.arange(m) + c * m
        rr += [r, r, r, r, r, r]
        cc += [ii, jj, n + ii, n + jj, 2 * n + ii, 2 * n + jj]
        vv += [np.ones(m), -np.ones(m), np.full(m, WB_U[c]), np.full(m, -WB_U[c])]
        vv += [np.full(m, WB_V[c]), np.full(m, -WB_V[c])]
        if vignetting:
            rr += [r, r, r, r]
            cc += [o_vig + 2 * Li_, o_vig + 2 * Li_ + 1, o_vig + 2 * Lj_, o_vig + 2 * Lj_ + 1]
            vv += [-qi, -(qi**2), qj, qj**2]
        if free_response:
            fi, fj = basis(np.exp(li[:, c])), basis(np.exp(lj[:, c]))
            rr += [r, r]
            cc += [o_res + nr * Li_, o_res + nr * Lj_]
            vv += [li[:, c], -lj[:, c]]
            for k in range(TERMS):
                rr += [r, r]
                cc += [o_res + nr * Li_ + 1 + k, o_res + nr * Lj_ + 1 + k]
                vv += [fi[:, k], -fj[:, k]]
        rhs.append(curve * (lj[:, c] - li[:, c]))
    # priors: white balance and vignetting towards 0, ev towards 0 (weakly:
    # the gauge), the response towards the default curve
    k = 3 * m
    prior_rows = np.arange(k, k + nv)
    pw = np.concatenate(
        [np.full(n, 1e-2), np.full(2 * n, wb_prior), np.full(o_res - 3 * n, 1.0), np.zeros(nv - o_res)]
    ) * math.sqrt(max(1.0, m / max(1, n)) * 1e-2)
    pw[o_res:] = RESPONSE_PRIOR * math.sqrt(k)
    rr.append(prior_rows)
    cc.append(np.arange(nv))
    vv.append(pw)
    b_extra: list[float] = []
    if free_response:
        # the curve's local slope towards the default's on a grid: a ridge on
        # the (correlated) coefficients alone lets a curve go flat where the
        # data are dense, which shrinks their residuals
        G = _slope_coeffs(SLOPE_GRID) * (SLOPE_PRIOR * math.sqrt(k / len(SLOPE_GRID)))
        r0 = k + nv + 1
        for L in range(n_lens):
            rows = r0 + L * len(SLOPE_GRID) + np.arange(len(SLOPE_GRID))
            rr.append(np.repeat(rows, nr))
            cc.append(np.tile(o_res + nr * L + np.arange(nr), len(SLOPE_GRID)))
            vv.append((G * _thin(np.concatenate([li[Li_ == L].ravel(), lj[Lj_ == L].ravel()]))[:, None]).ravel())
        b_extra = [0.0] * (1 + n_lens * len(SLOPE_GRID))
    slope_rows = None
    if free_response:
        # d log g / d log x - curve, per equation: the mean of its two
        # samples' (dgamma - x sum_k k c_k (1 - x)^(k - 1)), linear in the unknowns
        xs = [(np.exp(li[:, c]), np.exp(lj[:, c])) for c in range(3)]
        slope_rows = [(_slope_coeffs(xi), _slope_coeffs(xj)) for xi, xj in xs]
        # the exponential ambiguity (g^s and s ev fit alike): the mean slope
        # over every sampled value is the default curve's (a flat curve would
        # otherwise shrink every residual), a row as heavy as the data
        row = np.zeros((n_lens, nr))
        for fi, fj in slope_rows:
            np.add.at(row, Li_, fi)
            np.add.at(row, Lj_, fj)
        row /= 6 * m
        wn = math.sqrt(k)
        rr.append(np.full(nr * n_lens, k + nv))
        cc.append(o_res + np.arange(nr * n_lens))
        vv.append(row.ravel() * wn)
    R, C, V = np.concatenate(rr), np.concatenate(cc), np.concatenate(vv)
    b = np.concatenate([*rhs, np.zeros(nv), b_extra])
    A = coo_matrix((V, (R, C)), shape=(len(b), nv)).tocsr()
    if slope_rows is not None:
        # local slope - curve per equation (the mean of its two samples')
        Sr, Sc, Sv = [], [], []
        for c, (fi, fj) in enumerate(slope_rows):
            r = np.arange(m) + c * m
            for q in range(nr):
                Sr += [r, r]
                Sc += [o_res + nr * Li_ + q, o_res + nr * Lj_ + q]
                Sv += [0.5 * fi[:, q], 0.5 * fj[:, q]]
        Smat = coo_matrix((np.concatenate(Sv), (np.concatenate(Sr), np.concatenate(Sc))), shape=(k, nv)).tocsr()
        anneal = np.zeros(len(b) - k, bool)
        anneal[-n_lens * len(SLOPE_GRID) :] = True
        inv = _Inverse(np.exp(lj).T.ravel(), np.tile(Lj_, 3), o_res, n_lens, curve)
        return _gauss_newton(A, b, Smat, k, nv, curve, anneal, inv)
    w = np.ones(len(b))
    sol = np.zeros(nv)
    d = np.zeros(k)
    for _ in range(3):
        Aw = A.multiply(w[:, None]).tocsr()
        sol = lsqr(Aw, b * w, atol=1e-10, btol=1e-10, iter_lim=3000, x0=sol)[0]
        d = (A @ sol - b)[:k]
        w = np.concatenate([_huber(d), np.ones(len(b) - k)])
    return sol, float(np.median(np.abs(d))) / curve


def _huber(d: np.ndarray) -> np.ndarray:
    """IRLS weights (square roots) of the Huber loss, scale from the median."""
    delta = max(1.5 * 1.4826 * float(np.median(np.abs(d))), 0.01)
    return np.where(np.abs(d) <= delta, 1.0, np.sqrt(delta / np.maximum(np.abs(d), 1e-12)))


def _gauss_newton(
    A: Any, b: np.ndarray, Smat: Any, k: int, nv: int, curve: float, anneal: np.ndarray, inv: _Inverse | None = None
) -> tuple[np.ndarray, float]:
    """Robust Gauss-Newton on the equations' residuals in units of the
    encoded values' log (times ``curve``): through the inverse curve
    (_Inverse, RESIDUAL "inverse"), or linearised, (A x - b) curve /
    slope(x) with slope(x) = curve + Smat x the local d log g / d log x.
    Least squares on A x - b alone (log g units) would favour flat curves,
    whose residuals are small whatever the data; the linearised form still
    let a curve go flat over the dark values of weir and exposure_error
    (different values, one linear level, no cost). The prior rows (after k) stay
    linear; those marked ``anneal`` (the slope prior) start ANNEAL[0] times
    stronger and relax stage by stage: the problem is not convex, and from
    the default curve a weak prior lets the first steps fall into a flat,
    non-monotone curve."""
    from scipy.sparse import diags

    Ad, bd, P0, bp0 = A[:k], b[:k], A[k:], b[k:]
    x = np.zeros(nv)
    r = np.zeros(k)
    for f in ANNEAL:
        sc = np.where(anneal, f, 1.0)
        x, r = _gn_stage(Ad, bd, diags(sc) @ P0, bp0 * sc, Smat, x, curve, inv if RESIDUAL == "inverse" else None)
    return x, float(np.median(np.abs(r))) / curve


#: the slope prior's factors, stage by stage (_gauss_newton)
ANNEAL = (30.0, 5.0, 1.0)


#: "inverse": residuals through the inverse curve (_Inverse); "slope": (A x - b) / local slope
RESIDUAL = "inverse"


@dataclass
class _Inverse:
    """Residuals through the inverse curve: the second sample predicted from
    the first, x_j' = g_j^-1(g_i(x_i) e^(ev_i - ev_j ...)), against x_j in
    log x (times ``curve``). A curve flat over some values maps them to one
    linear level at no cost in log g, not here: their predictions jump."""

    xj: np.ndarray  # per equation (3 m): the second sample's encoded value
    lens: np.ndarray  # per equation: its lens
    o_res: int
    n_lens: int
    curve: float

    def _g(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([np.log(np.maximum(x, 1e-6))[:, None], basis(x)], 1)

    def _gmat(self, x: np.ndarray, nv: int) -> Any:
        from scipy.sparse import coo_matrix

        nr = 1 + TERMS
        rows = np.repeat(np.arange(len(x)), nr)
        cols = (self.o_res + nr * self.lens[:, None] + np.arange(nr)[None]).ravel()
        return coo_matrix((self._g(x).ravel(), (rows, cols)), shape=(len(x), nv)).tocsr()

    def __call__(self, Ad: Any, bd: np.ndarray, x: np.ndarray, jac: bool) -> tuple[np.ndarray, Any]:
        from scipy.sparse import diags

        nr = 1 + TERMS
        par = x[self.o_res : self.o_res + nr * self.n_lens].reshape(self.n_lens, nr) + np.array(
            [self.curve] + [0.0] * TERMS
        )
        e = Ad @ x - bd
        u = e + (self._g(self.xj) * par[self.lens]).sum(1)  # log g_j of the prediction
        xh = np.empty_like(u)
        sl = np.empty_like(u)
        grid = np.linspace(0.0, 1.0, 2049)
        for L in range(self.n_lens):
            sel = self.lens == L
            resp = Response.from_list(par[L])
            y = np.maximum.accumulate(resp.linear(grid))
            t = np.exp(u[sel])
            s1 = max(float(resp.slope(np.array([1.0]))[0]), MIN_SLOPE)
            xh[sel] = np.where(t <= 1.0, np.interp(t, y, grid), np.power(np.maximum(t, 1.0), 1.0 / s1))
            xh[sel] = np.maximum(xh[sel], 1e-4)
            sl[sel] = resp.slope(np.minimum(xh[sel], 1.0))
        r = (np.log(xh) - np.log(self.xj)) * self.curve
        if not jac:
            return r, None
        s = np.maximum(sl, SLOPE_FLOOR * self.curve)
        nv = Ad.shape[1]
        J = diags(self.curve / s) @ (Ad + self._gmat(self.xj, nv) - self._gmat(np.minimum(xh, 1.0), nv))
        return r, J


def _gn_stage(
    Ad: Any,
    bd: np.ndarray,
    P: Any,
    bp: np.ndarray,
    Smat: Any,
    x: np.ndarray,
    curve: float,
    inv: _Inverse | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Newton steps (halved until the objective drops) from x."""
    from scipy.sparse import diags, vstack
    from scipy.sparse.linalg import lsqr

    def model(x: np.ndarray, jac: bool = True) -> tuple[np.ndarray, Any]:
        if inv is not None:
            return inv(Ad, bd, x, jac)
        s = np.maximum(curve + Smat @ x, SLOPE_FLOOR * curve)
        e = Ad @ x - bd
        return e * (curve / s), (diags(curve / s) @ (Ad - diags(e / s) @ Smat) if jac else None)

    r, J0 = model(x)
    for _ in range(3):
        h = _huber(r)
        J = diags(h) @ J0
        JP, rhs = vstack([J, P]).tocsr(), -np.concatenate([h * r, P @ x - bp])
        step = lsqr(JP, rhs, atol=1e-8, btol=1e-8, iter_lim=3000)[0]
        obj = float(np.sum((h * r) ** 2) + np.sum((P @ x - bp) ** 2))
        t = 1.0
        while t > 1 / 32:
            r1, _ = model(x + t * step, False)
            if float(np.sum((h * r1) ** 2) + np.sum((P @ (x + t * step) - bp) ** 2)) <= obj:
                break
            t /= 2
        else:
            break
        x = x + t * step
        if np.abs(t * step).max() < 1e-5:
            break
        r, J0 = model(x)
    return x, model(x, False)[0]


def _thin(logs: np.ndarray) -> np.ndarray:
    """Per SLOPE_GRID point: how much stronger the slope prior is where a
    lens's samples are thin (sqrt of the uniform share over the share within
    half a grid step, at most THIN_MAX): a curve bends where no data hold it."""
    if not THIN_PRIOR or logs.size == 0:
        return np.ones(len(SLOPE_GRID))
    step = float(SLOPE_GRID[1] - SLOPE_GRID[0])
    idx = np.clip(np.rint(np.exp(logs) / step).astype(np.int64), 0, len(SLOPE_GRID) - 1)
    share = np.bincount(idx, minlength=len(SLOPE_GRID)) / logs.size
    return np.minimum(np.sqrt((1.0 / len(SLOPE_GRID)) / np.maximum(share, 1e-6)), THIN_MAX)


#: the slope prior grows where the samples are thin (_thin), by at most THIN_MAX
THIN_PRIOR = True
THIN_MAX = 3.0


def _slope_coeffs(x: np.ndarray) -> np.ndarray:
    """Per value: the coefficients of (dgamma, c_1..c_TERMS) in the local
    slope d log g / d log x."""
    out = np.empty((len(x), 1 + TERMS))
    out[:, 0] = 1.0
    for q in range(1, TERMS + 1):
        out[:, q] = -q * x * (1 - x) ** (q - 1)
    return out


def _subsample(S: _Samples, cap: int, seed: int) -> _Samples:
    if len(S.ii) <= cap:
        return S
    sel = np.sort(np.random.default_rng(seed + 1).choice(len(S.ii), cap, replace=False))
    return _Samples(S.ii[sel], S.jj[sel], S.li[sel], S.lj[sel], S.qi[sel], S.qj[sel])


def _exposure_spread(S: _Samples, sol: np.ndarray, n: int, lens_idx: np.ndarray, vignetting: bool) -> float:
    """RMS over the pixel pairs of the modelled log exposure ratio (ev and
    vignetting): how far apart the pairs see their points."""
    d = sol[S.ii] - sol[S.jj]
    if vignetting:
        ab = sol[3 * n :].reshape(-1, 2)
        a_i, a_j = ab[lens_idx[S.ii]], ab[lens_idx[S.jj]]
        d = d - (a_i[:, 0] * S.qi + a_i[:, 1] * S.qi**2) + (a_j[:, 0] * S.qj + a_j[:, 1] * S.qj**2)
    return float(np.sqrt(np.mean(d**2)))


def solve_exposure(
    warps: Sequence[ProxyWarp | None],
    canvas: Canvas,
    lens: Sequence[int] | None = None,
    vignetting: bool = False,
    max_samples: int = 300_000,
    wb_prior: float = 0.5,
    seed: int = 0,
    response: bool = False,
) -> Exposure:
    """Exposure (EV), white balance and (optionally) a vignetting model per
    lens, solved jointly in the log domain on overlap pixel pairs that neither
    image clipped or left black:

        log I_i,c - log V(r_i) + ev_i + wb_i . B_c = log I_j,c - log V(r_j) + ev_j + wb_j . B_c

    (B: a zero-sum basis of the three channels, so white balance never
    changes the exposure). Clipped pixels are excluded: a blown-out sky says
    nothing about the ratio of two exposures, and counting it pulls the dark
    views' gains up until their sky clips too. Robust (Huber, re-weighted
    twice) against moving things and parallax. The gauge: mean ev = 0 over
    the images with data (the inputs' average exposure); white balance and
    vignetting have weak ridge priors so images without overlaps stay at 1.

    ``response``: log I becomes log g_L(I), a camera response per lens
    (response.py), fitted jointly with everything else; gains and
    vignetting then act in linear light. First the default curve (x^2.2,
    a linear solve as above); then, on up to RESPONSE_SAMPLES pairs, robust
    Gauss-Newton on the residuals in units of log I: each pair's second
    value predicted from its first through the curves (a least-squares fit
    in log g units would favour flat curves, whose residuals shrink
    whatever the data). The exponential ambiguity (g^s with s ev fits as well) is
    pinned by the mean slope d log g / d log x over the sampled values
    (= 2.2, the default's); priors pull the curve's slope on a grid
    towards 2.2 (annealed from strong to SLOPE_PRIOR) and its coefficients
    towards 0. The fitted curve is kept only with enough pixel pairs
    (MIN_RESPONSE_SAMPLES) seen at different exposures
    (MIN_EXPOSURE_SPREAD), when it is monotone with a margin, and when it
    lowers the robust residual by MIN_RESPONSE_GAIN against the default
    curve; otherwise the default (``response_note`` says which and why).
    """
    n = len(warps)
    lens_idx = np.zeros(n, np.int64) if lens is None else np.asarray(lens, np.int64)
    n_lens = int(lens_idx.max()) + 1 if n else 1
    S = _collect(warps, canvas, max_samples, seed)
    vig = np.zeros((n_lens, 2))
    default = np.tile([DEFAULT_GAMMA] + [0.0] * TERMS, (n_lens, 1)) if response else None
    if S is None:
        return Exposure(np.zeros(n), np.zeros((n, 2)), vig, lens_idx, 0, default, "default: no overlaps")
    m = len(S.ii)
    curve = DEFAULT_GAMMA if response else 1.0
    sol, res0 = _solve_linear(S, n, lens_idx, vignetting, wb_prior, curve, False)
    resp, note, res1 = default, ("default: " if response else ""), res0
    spread = _exposure_spread(S, sol, n, lens_idx, vignetting)
    if response and m < MIN_RESPONSE_SAMPLES:
        note += f"{m} pixel pairs"
    elif response and spread < MIN_EXPOSURE_SPREAD:
        # the pairs see each point at (nearly) one exposure: any curve fits them
        note += f"exposure spread {spread:.3f}"
    elif response:
        # a few parameters more than the fixed curve: a subsample of the pairs
        # is enough for them and keeps the Gauss-Newton iterations cheap
        sub = _subsample(S, RESPONSE_SAMPLES, seed)
        sol1, res1 = _solve_linear(sub, n, lens_idx, vignetting, wb_prior, curve, True)
        o_res = 3 * n + (2 * n_lens if vignetting else 0)
        fit = sol1[o_res:].reshape(n_lens, 1 + TERMS) + np.asarray(default)
        used = np.unique(np.concatenate([lens_idx[S.ii], lens_idx[S.jj]]))
        bad = [L for L in used if not Response.from_list(fit[L]).plausible()]
        if bad:
            note += f"lens {bad[0]} not monotone"
        elif res1 > res0 * (1 - MIN_RESPONSE_GAIN):
            note += f"residual {res0:.4f} -> {res1:.4f}"
        else:
            sol, resp, note = sol1, fit, "fitted"
    ev, u, v = sol[:n], sol[n : 2 * n], sol[2 * n : 3 * n]
    used_im = np.bincount(np.concatenate([S.ii, S.jj]), minlength=n) > 0
    ev = ev - ev[used_im].mean()
    if vignetting:
        # log V = a r2 + b r4  ->  V ~ 1 + a r2 + (b + a^2 / 2) r4
        ab = sol[3 * n : 3 * n + 2 * n_lens].reshape(n_lens, 2)
        vig = np.stack([ab[:, 0], ab[:, 1] + ab[:, 0] ** 2 / 2], 1)
    return Exposure(ev, np.stack([u, v], 1), vig, lens_idx, m, resp, note, (res0, res1), spread)


def lens_groups(cams: Sequence[Camera]) -> list[int]:
    """One index per camera: images of one size and focal length (within 1 %) share a lens."""
    keys: list[tuple[int, int, float]] = []
    out = []
    for c in cams:
        for k, (w, h, f) in enumerate(keys):
            if (w, h) == (c.width, c.height) and abs(c.focal - f) < 0.01 * f:
                out.append(k)
                break
        else:
            keys.append((c.width, c.height, c.focal))
            out.append(len(keys) - 1)
    return out


def corrected(
    img: np.ndarray,
    r2: np.ndarray,
    gain: np.ndarray,
    vig: Sequence[float],
    response: Response | None,
    output: tuple[float, ...] | None = None,
) -> np.ndarray:
    """Encoded proxy values as the renderer outputs them (blend._sample):
    gain and vignetting on the encoded values, or with a response, in
    linear light and re-encoded with the output curve (``output``:
    response parameters; default: the default power law)."""
    v = np.maximum(1.0 + r2 * (vig[0] + vig[1] * r2), 0.05)
    if response is None:
        return (img * gain[None, None] / v[..., None]).astype(np.float32)
    lin = response.linear(img) * gain[None, None] / v[..., None]
    return encode(lin, output).astype(np.float32)


def correct_warps(
    warps: Sequence[ProxyWarp | None],
    gains: np.ndarray,
    vigs: Sequence[Sequence[float]],
    responses: Sequence[Response] | None,
    output: tuple[float, ...] | None = None,
) -> None:
    """In place: every proxy as the renderer outputs it (for the seam DP)."""
    for k, w in enumerate(warps):
        if w is not None:
            r = responses[k] if responses else None
            w.img = corrected(w.img, w.r2, np.asarray(gains[k]), vigs[k], r, output)


def brightest_unclipped(
    warps: Sequence[ProxyWarp | None],
    gains: np.ndarray,
    vig: Sequence[Sequence[float]],
    q: float = 99.9,
    responses: Sequence[Response] | None = None,
    output: tuple[float, ...] | None = None,
) -> float:
    """The ``q``-th percentile of the largest channel, after gains and
    vignetting (and the response, as the renderer applies them), of every
    proxy pixel that its input did not clip: how bright the brightest
    well-exposed content comes out."""
    vals = []
    for k, w in enumerate(warps):
        if w is None:
            continue
        ok = w.valid & (w.img.max(2) < CLIPPED)
        if not ok.any():
            continue
        r = responses[k] if responses else None
        x = corrected(w.img[ok][None], w.r2[ok][None], np.asarray(gains[k]), vig[k], r, output)
        vals.append(x[0].max(1))
    if not vals:
        return 1.0
    return float(np.percentile(np.concatenate(vals), q))
