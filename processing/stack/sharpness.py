"""Stage 3, sharpness: a noise-robust score, ranking and dropping the worst k.

Plain Laplacian variance grows with noise. Here the score is the energy of a
mid-frequency band-pass (difference of Gaussians) minus the energy that the
estimated noise alone puts into that band, so white noise adds (on average)
nothing. The noise level is estimated from the finest diagonal wavelet band
(median absolute deviation, Donoho), which image structure barely touches.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import cv2
import numpy as np

from ..io.params import StageParams


@dataclasses.dataclass(frozen=True)
class SharpnessParams(StageParams):
    VERSION: ClassVar[int] = 1
    STAGE: ClassVar[str] = "sharpness"

    drop_worst: int = 2  # drop this many of the least sharp frames
    min_keep: int = 1  # never keep fewer frames than this
    sigma_fine: float = 0.8  # band-pass: DoG between these Gaussian sigmas (px)
    sigma_coarse: float = 2.0
    max_pixels: int = 2_000_000  # score a central crop of at most this size


def _grey(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3:
        img = img.mean(axis=2)
    return np.ascontiguousarray(img, dtype=np.float32)


def central_crop(g: np.ndarray, max_pixels: int) -> np.ndarray:
    """The central part of G with at most MAX_PIXELS pixels."""
    h, w = g.shape[:2]
    if h * w <= max_pixels:
        return g
    f = np.sqrt(max_pixels / (h * w))
    ch, cw = max(16, int(h * f)), max(16, int(w * f))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return g[y0 : y0 + ch, x0 : x0 + cw]


def noise_sigma(grey: np.ndarray) -> float:
    """White-noise standard deviation from the finest diagonal Haar band."""
    g = grey[: grey.shape[0] // 2 * 2, : grey.shape[1] // 2 * 2].astype(np.float32)
    hh = (g[0::2, 0::2] - g[0::2, 1::2] - g[1::2, 0::2] + g[1::2, 1::2]) / 2.0
    return float(np.median(np.abs(hh)) / 0.6745)


def _bandpass(g: np.ndarray, p: SharpnessParams) -> np.ndarray:
    a = cv2.GaussianBlur(g, (0, 0), p.sigma_fine, borderType=cv2.BORDER_REFLECT)
    b = cv2.GaussianBlur(g, (0, 0), p.sigma_coarse, borderType=cv2.BORDER_REFLECT)
    return a - b


def _noise_gain(p: SharpnessParams) -> float:
    """Sum of squared band-pass weights: energy per unit white-noise variance."""
    n = int(6 * p.sigma_coarse) * 2 + 1
    d = np.zeros((n, n), np.float32)
    d[n // 2, n // 2] = 1.0
    return float((_bandpass(d, p) ** 2).sum())


def sharpness_score(img: np.ndarray, params: SharpnessParams | None = None) -> float:
    """Band-pass energy above the noise floor, as an RMS (larger = sharper)."""
    p = params or SharpnessParams()
    g = central_crop(_grey(img), p.max_pixels)
    sigma = noise_sigma(g)
    bp = _bandpass(g, p)
    m = 2 * int(3 * p.sigma_coarse)
    if bp.shape[0] > 2 * m + 8 and bp.shape[1] > 2 * m + 8:
        bp = bp[m:-m, m:-m]
    energy = float(np.mean(bp.astype(np.float64) ** 2)) - sigma**2 * _noise_gain(p)
    return float(np.sqrt(max(energy, 0.0)))


def rank_frames(
    scores: list[float], params: SharpnessParams | None = None, protect: int | None = None
) -> tuple[list[bool], list[str]]:
    """Keep flags and reasons: the worst `drop_worst` frames are dropped.

    PROTECT (the reference's index) is never dropped; at least `min_keep`
    frames stay.
    """
    p = params or SharpnessParams()
    n = len(scores)
    keep = [True] * n
    reasons = [""] * n
    n_drop = max(0, min(p.drop_worst, n - max(1, p.min_keep)))
    order = [i for i in np.argsort(scores, kind="stable") if i != protect]
    for i in order[:n_drop]:
        keep[i] = False
        reasons[i] = f"sharpness {scores[i]:.4g} among the {p.drop_worst} lowest"
    return keep, reasons
