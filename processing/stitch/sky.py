"""Merging sub-panoramas rendered apart on one 360-degree canvas.

- ``merge_layers``: several sub-panoramas rendered on the same canvas (RGB +
  alpha each, e.g. the outputs of ``render_region`` with one layout per
  sub-panorama) blended with feathered weights: each layer's weight is the
  distance to its own alpha border (so overlaps fade smoothly), computed
  with wrap-around on 360-degree canvases.
A separately shot sky is merged by processing/stitch/layers.py (the one sky
path: ``stitch --sky``, the web app's composite job, ``bench sky``).
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
