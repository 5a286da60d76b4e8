"""Image quality figures against a ground truth: PSNR and SSIM."""

from __future__ import annotations

import numpy as np


def _pair(a: np.ndarray, b: np.ndarray, border: int) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if border > 0:
        a = a[border:-border, border:-border]
        b = b[border:-border, border:-border]
    return a.astype(np.float64), b.astype(np.float64)


def psnr(img: np.ndarray, ref: np.ndarray, border: int = 0, peak: float = 1.0) -> float:
    """PSNR in dB of IMG against REF (both [0, peak]), BORDER px shaved."""
    a, b = _pair(img, ref, border)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak * peak / mse)


def ssim(img: np.ndarray, ref: np.ndarray, border: int = 0) -> float:
    """Mean SSIM (scikit-image, Gaussian window) over channels."""
    from skimage.metrics import structural_similarity

    a, b = _pair(img, ref, border)
    return float(
        structural_similarity(
            a, b, data_range=1.0, channel_axis=2 if a.ndim == 3 else None, gaussian_weights=True, sigma=1.5
        )
    )
