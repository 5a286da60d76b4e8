"""Stage 2, colour: match frames to the reference, haze removal, lateral CA.

- Colour match: per-channel gain and offset that map a frame onto the
  reference, fitted by trimmed least squares on the overlapping pixels of
  downsampled, aligned proxies (linear light). Applied inside fusion (the
  fit is linear, so it commutes with resampling: no extra resampling).
- Haze removal: dark channel prior (He, Sun, Tang 2009) with the
  transmission refined by a guided filter (He et al. 2010), on the fused
  image.
- Transverse (lateral) chromatic aberration: R and B are registered to G by
  a radial scale about the image centre; the scales are estimated on the
  reference and composed into the fusion maps (one resampling).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import cv2
import numpy as np

from ..io.params import StageParams
from .warp import proxy, rescale_transform


@dataclasses.dataclass(frozen=True)
class ColorParams(StageParams):
    VERSION: ClassVar[int] = 1
    STAGE: ClassVar[str] = "color"

    match: bool = True
    match_max_pixels: int = 100_000
    match_offset: bool = True  # fit gain + offset (False: gain only)
    dehaze: bool = False
    dehaze_omega: float = 0.9  # fraction of haze removed
    dehaze_patch: int = 15
    dehaze_t0: float = 0.1  # lower bound of the transmission
    dehaze_radius: int = 40  # guided filter radius (px of a <= 1 MP proxy)
    dehaze_eps: float = 1e-3
    tca: bool = False
    tca_range: float = 0.004  # search radial scales 1 +- this
    tca_max_pixels: int = 4_000_000


# ---------------------------------------------------------------- colour match


def fit_gain_offset(
    ref: np.ndarray, img: np.ndarray, valid: np.ndarray | None = None, offset: bool = True, iters: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ref ~ gain * img + offset, by iteratively trimmed LSQ."""
    gains = np.ones(3, np.float32)
    offs = np.zeros(3, np.float32)
    mask = np.ones(ref.shape[:2], bool) if valid is None else valid.astype(bool)
    # Leave clipped and near-black pixels out: they do not follow the model.
    mask &= (ref.max(axis=2) < 0.98) & (img.max(axis=2) < 0.98)
    for c in range(3):
        x = img[..., c][mask].astype(np.float64)
        y = ref[..., c][mask].astype(np.float64)
        if x.size < 50:
            continue
        keep = np.ones(x.size, bool)
        g, o = 1.0, 0.0
        for _ in range(iters):
            xs, ys = x[keep], y[keep]
            if offset:
                # Closed-form simple linear regression (no BLAS call).
                mx, my = xs.mean(), ys.mean()
                vx = float(np.dot(xs - mx, xs - mx))
                g = float(np.dot(xs - mx, ys - my) / vx) if vx > 1e-12 else 1.0
                o = float(my - g * mx)
            else:
                g, o = float(np.dot(xs, ys) / max(np.dot(xs, xs), 1e-12)), 0.0
            res = y - (g * x + o)
            mad = 1.4826 * np.median(np.abs(res[keep])) + 1e-6
            keep = np.abs(res) < 2.5 * mad
            if keep.sum() < 50:
                break
        if np.isfinite(g) and 0.2 < g < 5.0:
            gains[c], offs[c] = g, o
    return gains, offs


def match_to_reference(
    ref_small: np.ndarray,
    ref_f: tuple[float, float],
    frame_small: np.ndarray,
    frame_f: tuple[float, float],
    transform: np.ndarray,
    params: ColorParams | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Gain/offset of a frame against the reference from small proxies."""
    p = params or ColorParams()
    h, w = ref_small.shape[:2]
    t = rescale_transform(transform, ref_f, frame_f)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpPerspective(frame_small, t, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    ones = np.ones(frame_small.shape[:2], np.uint8)
    valid = cv2.warpPerspective(ones, t, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) > 0
    valid = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    return fit_gain_offset(ref_small, warped, valid, p.match_offset)


def colour_proxy(img: np.ndarray, params: ColorParams | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    p = params or ColorParams()
    return proxy(img, p.match_max_pixels)


# ---------------------------------------------------------------- haze removal


def _box(img: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(img, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """Grey guided filter (He et al. 2010) with box filters."""
    mi, mp = _box(guide, r), _box(src, r)
    cov = _box(guide * src, r) - mi * mp
    var = _box(guide * guide, r) - mi * mi
    a = cov / (var + eps)
    b = mp - a * mi
    return _box(a, r) * guide + _box(b, r)


def dark_channel(img: np.ndarray, patch: int) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (patch, patch))
    return cv2.erode(img.min(axis=2), k)


def dehaze(img: np.ndarray, params: ColorParams | None = None) -> np.ndarray:
    """Dark channel prior haze removal; transmission refined by a guided filter.

    The transmission is estimated on a <= 1 MP proxy (haze is smooth) and
    upsampled; the recovery J = (I - A) / t + A runs at full resolution.
    """
    p = params or ColorParams()
    img = img.astype(np.float32, copy=False)
    small, (fx, _) = proxy(img, 1_000_000)
    patch = max(3, round(p.dehaze_patch * min(1.0, fx * 2)) | 1)
    dc = dark_channel(small, patch)
    # Atmospheric light: brightest pixels among the haziest 0.1 %.
    n = max(1, dc.size // 1000)
    idx = np.argpartition(dc.ravel(), -n)[-n:]
    a = small.reshape(-1, 3)[idx].mean(axis=0).clip(1e-3, 1.0).astype(np.float32)
    t = 1.0 - p.dehaze_omega * dark_channel(small / a, patch)
    g = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    t = guided_filter(g, t.astype(np.float32), max(2, int(p.dehaze_radius * min(1.0, fx * 2))), p.dehaze_eps)
    t = cv2.resize(t, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    t = np.maximum(t, p.dehaze_t0)[..., None]
    return np.clip((img - a) / t + a, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------- transverse chromatic aberr.


def radial_maps(w: int, h: int, k: float) -> tuple[np.ndarray, np.ndarray]:
    """Maps reading a channel at c + k (p - c) (c = image centre)."""
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    xs = (cx + k * (np.arange(w, dtype=np.float32) - cx)).astype(np.float32)
    ys = (cy + k * (np.arange(h, dtype=np.float32) - cy)).astype(np.float32)
    return np.broadcast_to(xs[None, :], (h, w)).copy(), np.broadcast_to(ys[:, None], (h, w)).copy()


def _edge(g: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy)


def estimate_tca(img: np.ndarray, params: ColorParams | None = None) -> tuple[float, float]:
    """Radial scales (k_r, k_b) that register R and B onto G (IMG float
    in [0, 1] or uint16 codes).

    Grid search of the gradient-magnitude correlation with a parabola through
    the best three: sub-pixel even at the image corners.
    """
    p = params or ColorParams()
    # 16-bit frames are shrunk as they are (the correlations below do not
    # depend on scale): no full-size float copy, which at 45 MP cost 2.5 s.
    src = img if img.dtype == np.uint16 else img.astype(np.float32)
    small, (fx, fy) = proxy(src, p.tca_max_pixels)
    small = small.astype(np.float32)
    h, w = small.shape[:2]
    eg = _edge(small[..., 1])
    eg = (eg - eg.mean()) / (eg.std() + 1e-9)
    ks = np.linspace(1 - p.tca_range, 1 + p.tca_range, 17)
    out = []
    for c in (0, 2):
        ec = _edge(small[..., c])
        scores = []
        for k in ks:
            mx, my = radial_maps(w, h, float(k))
            e = cv2.remap(ec, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            e = (e - e.mean()) / (e.std() + 1e-9)
            scores.append(float(np.mean(e * eg)))
        i = int(np.argmax(scores))
        k = float(ks[i])
        if 0 < i < len(ks) - 1:
            s0, s1, s2 = scores[i - 1], scores[i], scores[i + 1]
            den = s0 - 2 * s1 + s2
            if den < 0:
                k += float(0.5 * (s0 - s2) / den * (ks[1] - ks[0]))
        out.append(k)
    return out[0], out[1]


def correct_tca(img: np.ndarray, kr: float, kb: float) -> np.ndarray:
    """Resample R and B by their radial scales (standalone use)."""
    h, w = img.shape[:2]
    out = img.copy()
    for c, k in ((0, kr), (2, kb)):
        mx, my = radial_maps(w, h, k)
        out[..., c] = cv2.remap(img[..., c], mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return out
