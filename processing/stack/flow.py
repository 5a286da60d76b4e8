"""Stage 7, flow: residual motion of each aligned frame against the master.

Atmospheric turbulence (and lens/rolling-shutter residue) bends a telephoto
frame by a smooth, frame-varying field that no homography captures. Dense
optical flow (OpenCV DIS, or Farneback) of the aligned frame to the master
measures it; the field is smoothed (turbulence is low-frequency; single-pixel
flow vectors are noise) and clamped (a vector longer than `max_px` is not
turbulence). The field is kept at proxy resolution and sampled where needed.

Convention: flow(p) is such that aligned(p + flow(p)) ~ master(p), with p in
reference pixels; the fusion map is then p -> T(p + flow(p)).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from ..io.params import StageParams
from .warp import proxy


@dataclasses.dataclass(frozen=True)
class FlowParams(StageParams):
    VERSION: ClassVar[int] = 1
    STAGE: ClassVar[str] = "flow"

    method: str = "dis"  # dis | farneback | none
    max_pixels: int = 1_000_000  # flow is computed on a proxy of at most this size
    smooth_px: float = 12.0  # Gaussian sigma of the regularisation, reference px
    max_px: float = 4.0  # clamp: longer vectors are shortened to this
    preset: str = "medium"  # DIS preset: ultrafast | fast | medium

    def __post_init__(self) -> None:
        if self.method not in ("dis", "farneback", "none"):
            raise ValueError("flow: method must be dis, farneback or none")


@dataclass
class FlowField:
    field: np.ndarray  # h x w x 2, reference px, on a proxy grid
    f: tuple[float, float]  # proxy size / reference size (fx, fy)

    def rms(self) -> float:
        return float(np.sqrt(np.mean(np.sum(self.field.astype(np.float64) ** 2, axis=2))))

    def sample(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flow at reference coordinates (x, y) (bilinear, edges clamped)."""
        return self.sample_grid(*self.grid_coords(x, y))

    def grid_coords(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reference coordinates -> positions on this field's proxy grid."""
        px = ((x + 0.5) * self.f[0] - 0.5).astype(np.float32)
        py = ((y + 0.5) * self.f[1] - 0.5).astype(np.float32)
        return px, py

    def sample_grid(self, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flow at proxy-grid positions (see `grid_coords`)."""
        v = cv2.remap(self.field, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return v[..., 0], v[..., 1]


def _u8(g: np.ndarray) -> np.ndarray:
    return (np.clip(g, 0, 1) * 255 + 0.5).astype(np.uint8)


def compute_flow(
    master_grey: np.ndarray,
    aligned_grey: np.ndarray,
    params: FlowParams | None = None,
    valid: np.ndarray | None = None,
    base_f: tuple[float, float] = (1.0, 1.0),
) -> FlowField | None:
    """Smoothed, clamped flow from the master to an aligned frame (or None).

    Both inputs are grey proxies in reference coordinates. VALID (uint8, 0 =
    the frame does not cover the pixel) keeps border garbage out of the field.
    BASE_F: the inputs' size relative to the reference (when already proxies).
    """
    p = params or FlowParams()
    if p.method == "none":
        return None
    a, f2 = proxy(master_grey, p.max_pixels)
    f = (f2[0] * base_f[0], f2[1] * base_f[1])
    b, _ = proxy(aligned_grey, p.max_pixels)
    if p.method == "dis":
        preset = {
            "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
            "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
        }[p.preset]
        dis = cv2.DISOpticalFlow_create(preset)
        fl = dis.calc(_u8(a), _u8(b), None)
    else:
        fl = cv2.calcOpticalFlowFarneback(_u8(a), _u8(b), None, 0.5, 3, 15, 3, 5, 1.2, 0)
    fl = fl.astype(np.float32)
    # Vectors in reference px (the proxy may be smaller).
    fl[..., 0] /= f[0]
    fl[..., 1] /= f[1]
    w = np.ones(fl.shape[:2], np.float32)
    if valid is not None:
        vm = cv2.resize(valid, (fl.shape[1], fl.shape[0]), interpolation=cv2.INTER_NEAREST)
        w = (vm > 0).astype(np.float32)
        # Shrink the valid area: flow next to a border is unreliable.
        w = cv2.erode(w, np.ones((5, 5), np.uint8))
    # Normalised (masked) Gaussian smoothing: the regulariser.
    s = max(0.5, p.smooth_px * f[0])
    num = cv2.GaussianBlur(fl * w[..., None], (0, 0), s, borderType=cv2.BORDER_REFLECT)
    den = cv2.GaussianBlur(w, (0, 0), s, borderType=cv2.BORDER_REFLECT)
    fl = num / np.maximum(den, 1e-3)[..., None]
    fl[den < 1e-3] = 0.0
    mag = np.sqrt((fl**2).sum(axis=2))
    over = mag > p.max_px
    if over.any():
        fl[over] *= (p.max_px / mag[over])[:, None]
    return FlowField(fl.astype(np.float32), f)
