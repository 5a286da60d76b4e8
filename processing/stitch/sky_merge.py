"""A separately shot sky merged into the ground panorama, block by block.

The sky capture is registered together with the ground images (one bundle
adjustment, so it lands on the same canvas) but laid out and exposed on its
own (``Layout`` of its images). Where it goes is decided once, on a small
proxy of the whole canvas: sky.sky_mask of the ground panorama (bright or
blue, smooth, connected to the top, so the seam stays out of buildings; the
ground's uncovered top counts as sky), feathered, times the sky layer's own
coverage feathered from its border. The sky is exposure-matched to the
ground on the pixels both call sky and the ground did not blow out (one
luminance gain, folded into the sky images' gains). Each output block then renders the sky layout over the
same rectangle and blends with the proxy weight sampled there: no block
depends on its neighbours, so the ground can be re-rendered by regions and
the sky stays as it was.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from .blend import SourceCache, render_rect
from .project import footprint
from .sky import feather_weight, sky_mask

#: the proxy canvas the mask and gains are decided on
PROXY_PIXELS = 1.0e6


def _render_proxy(layout, f: float, cache: SourceCache) -> tuple[np.ndarray, np.ndarray]:
    """The whole layout rendered on its canvas scaled by ``f`` (a small proxy)."""
    pc = layout.canvas.scaled(f)
    layers = [dataclasses.replace(L, footprint=footprint(L.cam, pc)) for L in layout.layers]
    tone = None if layout.tone.identity else layout.tone.apply
    return render_rect(layers, pc, (0, 0, pc.width, pc.height), cache, min(layout.bands, 2), layout.labels, None, tone)


class SkyMerger:
    """Callable (rect, rgb, alpha) -> (rgb, alpha): the ground block with the sky merged in."""

    def __init__(self, ground, sky, feather_deg: float = 2.0, cache: SourceCache | None = None) -> None:
        cv = ground.canvas
        self.canvas = cv
        self.cache = cache or SourceCache(256 << 20)
        f = min(1.0, math.sqrt(PROXY_PIXELS / (cv.width * cv.height)))
        g_rgb, g_a = _render_proxy(ground, f, self.cache)
        s_rgb, s_a = _render_proxy(sky, f, self.cache)
        filled = np.where(g_a[:, :, None] > 0.5, g_rgb, 1.0)  # uncovered top: sky
        m = sky_mask(filled, None)
        m = np.where(g_a > 0.5, m, 1.0).astype(np.float32)
        # one exposure gain (luminance, not per channel: a blue sky must not be
        # tinted to the ground's grey haze), on sky the ground did not blow out
        both = (m > 0.5) & (s_a > 0.99) & (g_a > 0.99) & (g_rgb.max(2) < 0.95)
        gain = np.ones(3)
        if both.sum() > 50:
            lum = np.float32([0.299, 0.587, 0.114])
            gain[:] = np.median(g_rgb[both] @ lum) / max(float(np.median(s_rgb[both] @ lum)), 1e-6)
        self.gain = gain
        self.sky = dataclasses.replace(
            sky,
            layers=[
                dataclasses.replace(L, gain=tuple(float(x) for x in np.asarray(L.gain) * gain)) for L in sky.layers
            ],
        )
        px = max(2.0, math.radians(feather_deg) * cv.su * f)
        k = int(px) // 2 * 2 + 1
        soft = cv2.GaussianBlur(m, (k, k), px / 3)
        w = soft * feather_weight(s_a, px, cv.wrap)
        self.weight = np.clip(w, 0, 1).astype(np.float32)
        self.sky_share = float((self.weight > 0.5).mean())
        self.fx, self.fy = g_a.shape[1] / cv.width, g_a.shape[0] / cv.height

    def __call__(
        self, rect: tuple[int, int, int, int], rgb: np.ndarray, alpha: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        x0, y0, x1, y1 = rect
        xs = ((np.arange(x0, x1) + 0.5) * self.fx - 0.5).astype(np.float32)
        ys = ((np.arange(y0, y1) + 0.5) * self.fy - 0.5).astype(np.float32)
        mx, my = np.meshgrid(xs, ys)
        border = cv2.BORDER_WRAP if self.canvas.wrap else cv2.BORDER_REPLICATE
        w = cv2.remap(self.weight, mx, my, cv2.INTER_LINEAR, borderMode=border)
        if not (w > 1e-3).any():
            return rgb, alpha
        tone = None if self.sky.tone.identity else self.sky.tone.apply
        s_rgb, s_a = render_rect(
            self.sky.layers, self.canvas, rect, self.cache, self.sky.bands, self.sky.labels, None, tone
        )
        w = w * (s_a > 0)
        out = rgb * (1 - w[:, :, None]) + s_rgb * w[:, :, None]
        return out.astype(np.float32), np.maximum(alpha, s_a * (w > 0))
