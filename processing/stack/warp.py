"""Pixel-centre geometry shared by the stack stages.

Convention everywhere: pixel (x, y) has its centre at (x, y); an image scaled
by f has pixel x' = (x + 0.5) * f - 0.5. Transforms are 3x3 homographies that
map reference-frame pixel coordinates to a frame's pixel coordinates.
"""

from __future__ import annotations

import cv2
import numpy as np


def scale_matrix(fx: float, fy: float | None = None) -> np.ndarray:
    """Coordinates of an image to those of the same image resized by (fx, fy)."""
    fy = fx if fy is None else fy
    return np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1.0]])


def rescale_transform(t: np.ndarray, f_src: tuple[float, float], f_dst: tuple[float, float]) -> np.ndarray:
    """T between full-size images -> T between images resized by f_src / f_dst.

    T maps source (reference) coordinates to destination (frame) coordinates;
    factors are (fx, fy).
    """
    return scale_matrix(*f_dst) @ t @ np.linalg.inv(scale_matrix(*f_src))


def apply_h(t: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply homography T to coordinate arrays (float64 math, float32 out)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    d = t[2, 0] * x + t[2, 1] * y + t[2, 2]
    u = (t[0, 0] * x + t[0, 1] * y + t[0, 2]) / d
    v = (t[1, 0] * x + t[1, 1] * y + t[1, 2]) / d
    return u.astype(np.float32), v.astype(np.float32)


def grid_maps(
    t: np.ndarray, width: int, height: int, y0: int = 0, rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """map_x, map_y for rows [y0, y0 + rows) of a WIDTH x HEIGHT output under T."""
    rows = height - y0 if rows is None else rows
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(y0, y0 + rows, dtype=np.float64)
    gx, gy = np.meshgrid(xs, ys)
    return apply_h(t, gx, gy)


def warp_to_reference(
    img: np.ndarray, t: np.ndarray, width: int, height: int, interp: int = cv2.INTER_LINEAR
) -> np.ndarray:
    """Resample a frame into reference coordinates (T: reference -> frame)."""
    return cv2.warpPerspective(
        img,
        t.astype(np.float64),
        (width, height),
        flags=interp | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def valid_mask(t: np.ndarray, width: int, height: int, src_w: int, src_h: int, margin: float = 0.5) -> np.ndarray:
    """Reference pixels whose preimage lies inside the frame (uint8 0/255)."""
    mx, my = grid_maps(t, width, height)
    ok = (mx >= -margin) & (my >= -margin) & (mx <= src_w - 1 + margin) & (my <= src_h - 1 + margin)
    return ok.astype(np.uint8) * 255


def grey(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img.astype(np.float32, copy=False)
    return cv2.cvtColor(np.ascontiguousarray(img, dtype=np.float32), cv2.COLOR_RGB2GRAY)


def proxy(img: np.ndarray, max_pixels: float) -> tuple[np.ndarray, tuple[float, float]]:
    """Shrink to at most MAX_PIXELS (area averaging); return the exact (fx, fy)."""
    h, w = img.shape[:2]
    if h * w <= max_pixels:
        return img, (1.0, 1.0)
    f = np.sqrt(max_pixels / (h * w))
    nw, nh = max(8, round(w * f)), max(8, round(h * f))
    return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA), (nw / w, nh / h)
