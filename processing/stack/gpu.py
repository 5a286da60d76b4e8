"""xp-generic image primitives for the GPU (CuPy) fusion path.

Every function takes arrays of one array module `xp` (NumPy or CuPy, see
`processing.device.backend.xp_for`) and returns arrays of the same module, so the
same code runs on the GPU with CuPy and on the CPU with NumPy (which is how
the tests exercise it on machines without CUDA). Each primitive has a CPU
twin in OpenCV / the CPU pipeline that it must match (tests/processing/
test_gpu.py):

| here | CPU twin |
|---|---|
| remap(order=1) | cv2.remap INTER_LINEAR, BORDER_REPLICATE |
| remap(order=3) | cv2.remap INTER_CUBIC (Keys, a = -0.75), BORDER_REPLICATE |
| gaussian_blur | cv2.GaussianBlur, BORDER_REFLECT |
| unsharp | fuse._unsharp |
| box | cv2.blur (BORDER_REFLECT_101) |
| masked_median | fuse.masked_median |
| sharpness | sharpness.sharpness_score |

cv2 quantises interpolation fractions to 1/32 px and rounds integer
outputs; these functions interpolate in float32 without quantising, which is
why the twins agree to a tolerance, not bit for bit.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from ..device.backend import xp_of

Array = Any  # numpy.ndarray or cupy.ndarray


def ndimage_for(xp: ModuleType) -> ModuleType:
    """scipy.ndimage for NumPy, cupyx.scipy.ndimage for CuPy."""
    if xp is np:
        import scipy.ndimage

        return scipy.ndimage
    import cupyx.scipy.ndimage  # type: ignore[import-not-found]

    return cupyx.scipy.ndimage


# ------------------------------------------------------------------ remapping


def _keys(t: Array, xp: ModuleType) -> list[Array]:
    """Keys cubic weights (a = -0.75, OpenCV's INTER_CUBIC) for offsets -1..2."""
    a = -0.75
    t1 = t + 1
    w0 = ((a * t1 - 5 * a) * t1 + 8 * a) * t1 - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    u = 1 - t
    w2 = ((a + 2) * u - (a + 3)) * u * u + 1
    w3 = 1 - w0 - w1 - w2
    return [w0, w1, w2, w3]


def _cubic(img: Array, mx: Array, my: Array, xp: ModuleType) -> Array:
    h, w = img.shape[:2]
    x0 = xp.floor(mx)
    y0 = xp.floor(my)
    wx = _keys((mx - x0).astype(xp.float32), xp)
    wy = _keys((my - y0).astype(xp.float32), xp)
    ix = [xp.clip(x0.astype(xp.int32) + k, 0, w - 1) for k in (-1, 0, 1, 2)]
    iy = [xp.clip(y0.astype(xp.int32) + k, 0, h - 1) for k in (-1, 0, 1, 2)]
    out = None
    for j in range(4):
        row = None
        for i in range(4):
            v = img[iy[j], ix[i]].astype(xp.float32)
            wi = wx[i] if img.ndim == 2 else wx[i][..., None]
            row = v * wi if row is None else row + v * wi
        wj = wy[j] if img.ndim == 2 else wy[j][..., None]
        out = row * wj if out is None else out + row * wj
    return out


def remap(img: Array, map_x: Array, map_y: Array, order: int = 1, xp: ModuleType | None = None) -> Array:
    """Read IMG (H x W or H x W x C) at (map_x, map_y); float32 result.

    Edges are replicated (cv2.BORDER_REPLICATE). Orders 0 and 1 go through
    (cupyx.)scipy.ndimage.map_coordinates; order 3 is the Keys cubic of
    OpenCV's INTER_CUBIC (map_coordinates' order 3 is a B-spline, a
    different and smoother kernel), computed with 16 gathers.
    """
    xp = xp or xp_of(img)
    if order == 3:
        return _cubic(img, map_x, map_y, xp)
    if order not in (0, 1):
        raise ValueError("remap: order must be 0, 1 or 3")
    nd = ndimage_for(xp)
    coords = xp.stack([map_y.astype(xp.float32), map_x.astype(xp.float32)])
    if img.ndim == 2:
        return nd.map_coordinates(img, coords, output=xp.float32, order=order, mode="nearest")
    chans = [
        nd.map_coordinates(img[..., c], coords, output=xp.float32, order=order, mode="nearest")
        for c in range(img.shape[2])
    ]
    return xp.stack(chans, axis=-1)


def coverage(kx: Array, ky: Array, w: int, h: int, xp: ModuleType | None = None) -> Array:
    """Bilinear read of an all-ones W x H image with a zero border at (kx, ky).

    1 inside, falling linearly to 0 over the pixel outside each edge: the
    same as remapping a constant image with BORDER_CONSTANT 0, in closed form.
    """
    xp = xp or xp_of(kx)
    cx = xp.clip(xp.minimum(kx + 1, w - kx), 0, 1)
    cy = xp.clip(xp.minimum(ky + 1, h - ky), 0, 1)
    return (cx * cy).astype(xp.float32)


# ------------------------------------------------------------------- filters


def gaussian_blur(img: Array, sigma: float, xp: ModuleType | None = None) -> Array:
    """Gaussian blur of the two image axes (cv2.GaussianBlur, BORDER_REFLECT).

    ndimage's default truncation (4 sigma) gives the same kernel radius as
    OpenCV's for float images.
    """
    xp = xp or xp_of(img)
    s = (sigma, sigma) + (0.0,) * (img.ndim - 2)
    return ndimage_for(xp).gaussian_filter(img.astype(xp.float32, copy=False), s, mode="reflect")


def unsharp(img: Array, radius: float, amount: float, xp: ModuleType | None = None) -> Array:
    """img + amount (img - blur(img)) (fuse._unsharp)."""
    if amount <= 0:
        return img
    return img + amount * (img - gaussian_blur(img, radius, xp))


def box(img: Array, size: int, xp: ModuleType | None = None) -> Array:
    """Mean over a SIZE x SIZE window (cv2.blur: BORDER_REFLECT_101 = 'mirror')."""
    xp = xp or xp_of(img)
    s = (size, size) + (1,) * (img.ndim - 2)
    return ndimage_for(xp).uniform_filter(img.astype(xp.float32, copy=False), s, mode="mirror")


# ---------------------------------------------------------- across frames


def masked_median(stack: Array, valid: Array, xp: ModuleType | None = None) -> Array:
    """Per-pixel median over axis 0 of the VALID samples (0 where none).

    Invalid samples sort to the end (+inf); the median is the mean of ranks
    (k - 1) // 2 and k // 2 of the k valid ones (fuse.masked_median).
    """
    xp = xp or xp_of(stack)
    v = valid if valid.ndim == stack.ndim else valid[..., None]
    s = xp.sort(xp.where(v, stack, xp.float32(np.inf)), axis=0)
    k = xp.broadcast_to(v.sum(axis=0), s.shape[1:])
    n = s.shape[0]
    lo = xp.take_along_axis(s, xp.clip((k - 1) // 2, 0, n - 1)[None], axis=0)[0]
    hi = xp.take_along_axis(s, xp.clip(k // 2, 0, n - 1)[None], axis=0)[0]
    return xp.where(k > 0, 0.5 * (lo + hi), xp.float32(0.0)).astype(xp.float32)


def clipped_mean(stack: Array, valid: Array, k: float = 3.0, xp: ModuleType | None = None) -> Array:
    """Per-pixel mean of the valid samples within k robust sigmas of their
    median (sigma = 1.4826 MAD, at least 1e-6); 0 where no sample is valid."""
    xp = xp or xp_of(stack)
    v = valid if valid.ndim == stack.ndim else xp.broadcast_to(valid[..., None], stack.shape)
    med = masked_median(stack, v, xp)
    dev = xp.abs(stack - med[None])
    mad = masked_median(dev, v, xp)
    keep = v & (dev <= k * xp.maximum(1.4826 * mad, 1e-6)[None])
    num = xp.where(keep, stack, 0).sum(axis=0)
    cnt = keep.sum(axis=0)
    return xp.where(cnt > 0, num / xp.maximum(cnt, 1), 0).astype(xp.float32)


# ------------------------------------------------------------------ sharpness


def noise_sigma(g: Array, xp: ModuleType | None = None) -> float:
    """White-noise sigma from the finest diagonal Haar band (sharpness.noise_sigma)."""
    xp = xp or xp_of(g)
    g = g[: g.shape[0] // 2 * 2, : g.shape[1] // 2 * 2].astype(xp.float32)
    hh = (g[0::2, 0::2] - g[0::2, 1::2] - g[1::2, 0::2] + g[1::2, 1::2]) / 2.0
    return float(xp.median(xp.abs(hh))) / 0.6745


def sharpness(img: Array, params: Any = None, xp: ModuleType | None = None) -> float:
    """Noise-corrected band-pass RMS (sharpness.sharpness_score) with xp ops."""
    from .sharpness import SharpnessParams, _noise_gain

    p = params or SharpnessParams()
    xp = xp or xp_of(img)
    g = img.mean(axis=2) if img.ndim == 3 else img
    g = g.astype(xp.float32)
    h, w = g.shape
    if h * w > p.max_pixels:
        f = np.sqrt(p.max_pixels / (h * w))
        ch, cw = max(16, int(h * f)), max(16, int(w * f))
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        g = g[y0 : y0 + ch, x0 : x0 + cw]
    sigma = noise_sigma(g, xp)
    bp = gaussian_blur(g, p.sigma_fine, xp) - gaussian_blur(g, p.sigma_coarse, xp)
    m = 2 * int(3 * p.sigma_coarse)
    if bp.shape[0] > 2 * m + 8 and bp.shape[1] > 2 * m + 8:
        bp = bp[m:-m, m:-m]
    energy = float(xp.mean(bp.astype(xp.float64) ** 2)) - sigma**2 * _noise_gain(p)
    return float(np.sqrt(max(energy, 0.0)))


# ------------------------------------------------------- kernel regression


def kernel_maps(
    mx: Array, my: Array, sigma: float | Array, s_range: tuple[float, float], xp: ModuleType
) -> tuple[Array, Array, Array]:
    """Gaussian-weighted 2x2 gather as one bilinear read (fuse._kernel_maps).

    Returns the moved read positions (kx, ky) and the kernel weight, from the
    same lookup tables as the CPU path.
    """
    from .fuse import _LUT_F, _LUT_S, _kernel_luts

    if isinstance(sigma, (int, float)):
        lo = hi = float(sigma)
    else:
        lo, hi = s_range
    a_np, s_np = _kernel_luts(round(lo, 4), round(max(hi, lo), 4))
    a_lut, s_lut = xp.asarray(a_np), xp.asarray(s_np)
    base: Any = 0
    if not isinstance(sigma, (int, float)) and hi > lo:
        lvl = ((sigma - lo) * ((_LUT_S - 1) / (hi - lo)) + 0.5).astype(xp.int32)
        base = xp.clip(lvl, 0, _LUT_S - 1) * (_LUT_F + 1)
    x0 = xp.floor(mx)
    y0 = xp.floor(my)
    ix = ((mx - x0) * _LUT_F + 0.5).astype(xp.int32) + base
    iy = ((my - y0) * _LUT_F + 0.5).astype(xp.int32) + base
    kx = (x0 + a_lut[ix]).astype(xp.float32)
    ky = (y0 + a_lut[iy]).astype(xp.float32)
    return kx, ky, s_lut[ix] * s_lut[iy]


def accumulate(num: Array, den: Array, v: Array, wk: Array) -> None:
    """num += v * wk, den += wk (in place): one frame's kernel-regression term."""
    num += v * wk[..., None]
    den += wk
