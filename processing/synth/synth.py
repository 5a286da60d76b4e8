"""Synthetic handheld bursts with known ground truth.

A burst is rendered from a real photo (the ground truth, GT) the way a sensor
would see it: every frame is the GT seen through a small homography (jitter of
tens of pixels, a little rotation and perspective) plus smooth random
turbulence, integrated over pixels S times larger than the GT's (box-filter
area sampling), with shot + read noise added in linear light. Frames are
1/S of the GT size, so fusing the burst at S is directly comparable with GT.

Conventions: transforms[i] maps reference-frame pixel coordinates to frame i
pixel coordinates (frame 0 is the reference, identity); frame pixel (u, v)
sits at GT pixel ((u + 0.5) * S - 0.5, (v + 0.5) * S - 0.5) when u, v are
reference coordinates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..io.imageio import write_image
from ..stack.develop import linear_to_srgb, srgb_to_linear

SUPERSAMPLE = 2  # render each LR pixel from (S * SUPERSAMPLE)^2 sub-samples


@dataclass
class Burst:
    frames: list[np.ndarray]  # float32 HxWx3, sRGB-encoded like the GT
    transforms: list[np.ndarray]  # 3x3, reference -> frame i (LR pixels)
    gt: np.ndarray
    scale: float = 2.0
    meta: dict = field(default_factory=dict)


def _centre(w: int, h: int) -> tuple[float, float]:
    return (w - 1) / 2.0, (h - 1) / 2.0


def random_transform(
    rng: np.random.Generator,
    w: int,
    h: int,
    shift_px: float,
    rotation_deg: float,
    perspective: float,
) -> np.ndarray:
    """Homography about the frame centre: rotation, shift, keystone.

    `perspective` is the fractional size change across the frame that the
    keystone causes (0.002 = corners move by 0.1 % of the frame size).
    """
    cx, cy = _centre(w, h)
    th = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg))
    tx, ty = rng.uniform(-shift_px, shift_px, size=2)
    s = 1.0 + rng.uniform(-0.002, 0.002)
    px, py = rng.uniform(-perspective, perspective, size=2) / np.array([w, h])
    c, si = np.cos(th) * s, np.sin(th) * s
    a = np.array([[c, -si, tx], [si, c, ty], [px, py, 1.0]])
    to_c = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1.0]])
    from_c = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1.0]])
    return from_c @ a @ to_c


def smooth_flow(rng: np.random.Generator, w: int, h: int, rms_px: float, scale_px: float = 40.0) -> np.ndarray:
    """Random smooth displacement field (H x W x 2) with RMS magnitude rms_px."""
    if rms_px <= 0:
        return np.zeros((h, w, 2), np.float32)
    step = max(4, int(scale_px / 4))
    gh, gw = h // step + 3, w // step + 3
    noise = rng.standard_normal((gh, gw, 2)).astype(np.float32)
    k = max(3, int(scale_px / step) | 1)
    noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=k / 2.5, borderType=cv2.BORDER_REFLECT)
    flow = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    flow -= flow.mean(axis=(0, 1))
    rms = float(np.sqrt((flow**2).sum(axis=2).mean())) or 1.0
    return (flow * (rms_px / rms)).astype(np.float32)


def add_noise(rng: np.random.Generator, lin: np.ndarray, noise: float) -> np.ndarray:
    """Shot + read noise in linear light: sigma^2 = noise^2 * (0.9 x + 0.1).

    `noise` is therefore the standard deviation at full scale (x = 1).
    """
    if noise <= 0:
        return lin
    sigma = noise * np.sqrt(0.9 * np.clip(lin, 0, 1) + 0.1)
    return np.clip(lin + sigma * rng.standard_normal(lin.shape).astype(np.float32), 0.0, 1.0)


def render_frame(
    gt_lin: np.ndarray,
    transform: np.ndarray,
    out_w: int,
    out_h: int,
    scale: float,
    flow: np.ndarray | None = None,
    supersample: int = SUPERSAMPLE,
) -> np.ndarray:
    """Area-sample the linear GT as seen by frame pixels (no noise).

    Sub-samples at frame position q map to reference p = T^-1 (q + flow(q)),
    then to GT g = (p + 0.5) * S - 0.5; their box average is one pixel.
    """
    ss = max(1, round(scale * supersample))
    hw, hh = out_w * ss, out_h * ss
    # Sub-sample centres in frame pixel units.
    xs = (np.arange(hw, dtype=np.float64) + 0.5) / ss - 0.5
    ys = (np.arange(hh, dtype=np.float64) + 0.5) / ss - 0.5
    qx, qy = np.meshgrid(xs, ys)
    if flow is not None:
        f = cv2.resize(flow, (hw, hh), interpolation=cv2.INTER_LINEAR).astype(np.float64)
        qx = qx + f[..., 0]
        qy = qy + f[..., 1]
    inv = np.linalg.inv(transform)
    den = inv[2, 0] * qx + inv[2, 1] * qy + inv[2, 2]
    px = (inv[0, 0] * qx + inv[0, 1] * qy + inv[0, 2]) / den
    py = (inv[1, 0] * qx + inv[1, 1] * qy + inv[1, 2]) / den
    gx = ((px + 0.5) * scale - 0.5).astype(np.float32)
    gy = ((py + 0.5) * scale - 0.5).astype(np.float32)
    hi = cv2.remap(gt_lin, gx, gy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
    hi = np.clip(hi, 0.0, 1.0)
    return cv2.resize(hi, (out_w, out_h), interpolation=cv2.INTER_AREA)


def _burst_frames(
    gt: np.ndarray,
    n_frames: int,
    scale: float,
    seed: int,
    shift_px: float,
    rotation_deg: float,
    perspective: float,
    turbulence_px: float,
    noise: float,
    moving_object: bool,
    supersample: int,
) -> Iterator[tuple[np.ndarray, np.ndarray, tuple[int, int, int] | None]]:
    """Yield (frame sRGB float32, transform, moving object or None) one at a time."""
    if n_frames < 1:
        raise ValueError("n_frames must be >= 1")
    rng = np.random.default_rng(seed)
    gh, gw = gt.shape[:2]
    w, h = round(gw / scale), round(gh / scale)
    gt_lin = srgb_to_linear(gt.astype(np.float32))
    for i in range(n_frames):
        t = np.eye(3) if i == 0 else random_transform(rng, w, h, shift_px, rotation_deg, perspective)
        flow = smooth_flow(rng, w, h, turbulence_px) if turbulence_px > 0 else None
        lin = render_frame(gt_lin, t, w, h, scale, flow, supersample)
        obj = None
        if moving_object:
            # Object in frame coordinates, a different place each frame.
            s = max(4, min(w, h) // 8)
            ox = int(rng.uniform(0.1, 0.9 - s / w) * w)
            oy = int(rng.uniform(0.1, 0.9 - s / h) * h)
            lin[oy : oy + s, ox : ox + s] = np.array([0.9, 0.1, 0.1], np.float32)
            obj = (ox, oy, s)
        yield linear_to_srgb(add_noise(rng, lin, noise)), t, obj


def iter_burst(
    gt: np.ndarray,
    n_frames: int,
    scale: float,
    seed: int = 0,
    shift_px: float = 20.0,
    rotation_deg: float = 1.0,
    perspective: float = 0.002,
    turbulence_px: float = 0.0,
    noise: float = 0.004,
    supersample: int = SUPERSAMPLE,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (frame sRGB float32, transform) one at a time (low memory)."""
    for frame, t, _ in _burst_frames(
        gt, n_frames, scale, seed, shift_px, rotation_deg, perspective, turbulence_px, noise, False, supersample
    ):
        yield frame, t


def make_burst(
    gt: np.ndarray,
    n_frames: int,
    scale: float,
    seed: int = 0,
    shift_px: float = 20.0,
    rotation_deg: float = 1.0,
    perspective: float = 0.002,
    turbulence_px: float = 0.0,
    noise: float = 0.004,
    moving_object: bool = False,
) -> Burst:
    """Simulate a handheld burst of N frames, 1/S the size of GT (sRGB in, out).

    Frame 0 is the reference (identity transform, still has noise/turbulence).
    `moving_object` paints a bright square that moves between frames (a ghost
    test); its position is in burst.meta["objects"].
    """
    rows = list(
        _burst_frames(
            gt,
            n_frames,
            scale,
            seed,
            shift_px,
            rotation_deg,
            perspective,
            turbulence_px,
            noise,
            moving_object,
            SUPERSAMPLE,
        )
    )
    meta = {
        "seed": seed,
        "shift_px": shift_px,
        "rotation_deg": rotation_deg,
        "perspective": perspective,
        "turbulence_px": turbulence_px,
        "noise": noise,
        "objects": [obj for _, _, obj in rows if obj is not None],
    }
    return Burst([f for f, _, _ in rows], [t for _, t, _ in rows], gt, float(scale), meta)


def write_burst(
    burst: Burst,
    out_dir: str | Path,
    fmt: str = "png",
    gt_source: str | None = None,
    crop: tuple[int, int, int, int] | None = None,
    jpeg_quality: int = 95,
) -> Path:
    """Write frames (16-bit PNG or JPEG), truth/gt.png and truth.json.

    The ground truth goes into a subfolder so that `stack DIR` never takes it
    for a frame.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ext = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg"}[fmt]
    names = []
    for i, f in enumerate(burst.frames):
        name = f"frame_{i:03d}{ext}"
        write_image(out / name, f, quality=jpeg_quality)
        names.append(name)
    write_image(out / "truth" / "gt.png", burst.gt)
    truth = {
        "scale": burst.scale,
        "frames": names,
        "reference": names[0],
        "transforms": [np.asarray(t).tolist() for t in burst.transforms],
        "transform_convention": "reference pixel -> frame pixel, homogeneous 3x3",
        "gt": "truth/gt.png",
        "gt_source": gt_source,
        "crop": list(crop) if crop else None,
        "frame_size": [int(burst.frames[0].shape[1]), int(burst.frames[0].shape[0])],
        **{k: v for k, v in burst.meta.items()},
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return out
