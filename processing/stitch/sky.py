"""Merging layers on one 360-degree canvas: sub-panoramas and a separate sky.

- ``merge_layers``: several sub-panoramas rendered on the same canvas (RGB +
  alpha each, e.g. the outputs of ``render_region`` with one layout per
  sub-panorama) blended with feathered weights: each layer's weight is the
  distance to its own alpha border (so overlaps fade smoothly), computed
  with wrap-around on 360-degree canvases.
- ``sky_mask``: a soft sky probability from brightness, blue-ness and
  smoothness (low local gradient), cleaned so only regions connected to the
  top of the frame count as sky.
- ``merge_sky``: replace / complete the sky of a panorama with a separately
  shot sky layer (already on the same canvas), with a feathered transition.
All functions work on arrays of one block (the caller tiles big canvases,
with a margin as wide as ``feather``).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def _wrap_pad(a: np.ndarray, pad: int, wrap: bool) -> np.ndarray:
    if not wrap or pad <= 0:
        return a
    return np.concatenate([a[:, -pad:], a, a[:, :pad]], axis=1)


def feather_weight(alpha: np.ndarray, feather: float, wrap: bool = False) -> np.ndarray:
    """Weight rising from 0 at a layer's alpha border to 1 ``feather`` px inside."""
    pad = int(min(alpha.shape[1], max(1, feather * 2))) if wrap else 0
    a = _wrap_pad((alpha > 0.5).astype(np.uint8), pad, wrap)
    a = cv2.copyMakeBorder(a, 1, 1, 0, 0, cv2.BORDER_CONSTANT, value=0) if a.shape[0] > 2 else a
    d = cv2.distanceTransform(a, cv2.DIST_L2, 5)
    d = d[1:-1] if alpha.shape[0] > 2 else d
    if pad:
        d = d[:, pad:-pad]
    return np.clip(d / max(feather, 1e-6), 0.0, 1.0).astype(np.float32) * (alpha > 0).astype(np.float32)


def merge_layers(
    layers: Sequence[tuple[np.ndarray, np.ndarray]], feather: float = 64.0, wrap: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Blend sub-panorama layers [(rgb, alpha), ...] of one canvas block."""
    if not layers:
        raise ValueError("no layers")
    acc = np.zeros(layers[0][0].shape, np.float32)
    wsum = np.zeros(layers[0][1].shape, np.float32)
    cover = np.zeros_like(wsum)
    for rgb, alpha in layers:
        w = feather_weight(alpha, feather, wrap) * alpha + 1e-6 * (alpha > 0)
        acc += rgb.astype(np.float32) * w[:, :, None]
        wsum += w
        cover = np.maximum(cover, alpha)
    out = acc / np.maximum(wsum, 1e-12)[:, :, None]
    out[wsum <= 0] = 0
    return out, cover


def sky_mask(rgb: np.ndarray, alpha: np.ndarray | None = None, smooth_px: int = 15) -> np.ndarray:
    """Soft sky probability (0..1): bright, blue-ish or grey-white, smooth,
    connected to the top of the frame."""
    img = np.clip(rgb.astype(np.float32), 0, 1)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    blue = np.clip((b - np.maximum(r, g)) * 6 + 0.5, 0, 1)
    bright = np.clip((lum - 0.45) * 4, 0, 1)
    gray = cv2.cvtColor((img * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    grad = cv2.blur(np.hypot(gx, gy), (smooth_px, smooth_px))
    smooth = np.clip(1.0 - grad * 8, 0, 1)
    p = np.maximum(blue, bright) * smooth
    if alpha is not None:
        p *= alpha > 0
    hard = (p > 0.5).astype(np.uint8)
    n, lab = cv2.connectedComponents(hard, connectivity=4)
    top = set(np.unique(lab[: max(1, lab.shape[0] // 50)]).tolist()) - {0}
    keep = np.isin(lab, list(top)) if top else np.zeros_like(hard, bool)
    return (p * keep).astype(np.float32)


def merge_sky(
    pano: np.ndarray,
    pano_alpha: np.ndarray,
    sky: np.ndarray,
    sky_alpha: np.ndarray,
    feather: float = 48.0,
    mask: np.ndarray | None = None,
    match_exposure: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Put a separately shot sky into a panorama (same canvas block).

    The sky layer replaces the panorama where the panorama is sky (soft mask,
    feathered over ``feather`` px) and fills where the panorama has no data.
    Its exposure is matched per channel on the pixels both call sky.
    """
    m = sky_mask(pano, pano_alpha) if mask is None else mask.astype(np.float32)
    sky = sky.astype(np.float32)
    if match_exposure:
        both = (m > 0.5) & (sky_alpha > 0.99) & (pano_alpha > 0.99)
        if both.sum() > 100:
            gain = np.array(
                [np.median(pano[..., c][both]) / max(np.median(sky[..., c][both]), 1e-6) for c in range(3)], np.float32
            )
            sky = np.clip(sky * gain, 0, 1)
    k = int(max(3, feather) // 2 * 2 + 1)
    soft = cv2.GaussianBlur(m, (k, k), feather / 3)
    w = np.where(pano_alpha > 0, soft, 1.0) * (sky_alpha > 0)
    w = w * feather_weight(sky_alpha, feather / 2) + (pano_alpha <= 0) * (sky_alpha > 0)
    w = np.clip(w, 0, 1)[:, :, None]
    out = pano * (1 - w) + sky * w
    alpha = np.maximum(pano_alpha, sky_alpha)
    return out.astype(np.float32), alpha.astype(np.float32)
