"""An independent burst generator for the fusion evaluation (not synth.py).

The project's own generator (processing/synth.py) is what the fusion was
tuned on; judging the fusion on it alone would flatter it. This one is
written separately, with its own choices:

- the scene is a crop of a real photo, taken into linear light, with a margin
  so that frames shifted by tens of pixels still see real content;
- each frame sees it through its own homography (shift, rotation about a
  random point, mild keystone), plus turbulence: a smooth random displacement
  field that changes from frame to frame;
- optics: a Gaussian lens blur whose width varies a little per frame;
- a moving object: a textured disc that crosses the scene during the burst
  (the ground truth shows it where the reference frame saw it);
- the sensor integrates each pixel over S x S ground-truth pixels (rendered
  with SUPERSAMPLE x SUPERSAMPLE sub-samples per ground-truth pixel, then
  area-averaged), adds shot + read noise in linear light, and the frame is
  encoded to sRGB and quantised to 16 bits;
- a RAW variant keeps one colour per pixel (Bayer mosaic made after the
  shifts, per-channel gains of a white balance and per-channel noise).

Conventions match the stack's contract: transforms map reference-frame pixel
coordinates to frame pixel coordinates (frame 0 is the reference, identity),
and reference pixel (u, v) sits at ground-truth pixel ((u + .5) S - .5, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..stack.develop import linear_to_srgb, srgb_to_linear

SUPERSAMPLE = 2


@dataclass(frozen=True)
class BurstSpec:
    """How a burst is degraded. Noise: sigma at full scale in linear light
    (shot-dominated: sigma^2(x) = noise^2 (shot_share x + (1 - shot_share)))."""

    frames: int = 20
    scale: int = 2
    noise: float = 0.02
    shot_share: float = 0.8
    shift_px: float = 10.0  # frame px, uniform in +-shift (tens of GT px at x2)
    rotation_deg: float = 1.0
    keystone: float = 0.004  # fractional size change across the frame
    turbulence_px: float = 0.25  # RMS of the smooth displacement, frame px
    turbulence_scale_px: float = 24.0  # its correlation length, frame px
    lens_blur_px: float = 0.6  # Gaussian sigma in ground-truth px
    moving_object: bool = True
    seed: int = 0


@dataclass
class SynthBurst:
    frames: list[np.ndarray]  # float32 HxWx3 sRGB [0, 1] (RGB bursts), or HxW mosaics (RAW)
    transforms: list[np.ndarray]
    gt: np.ndarray  # float32 (S h) x (S w) x 3 sRGB
    scale: int
    meta: dict = field(default_factory=dict)


def gt_crop(photo: np.ndarray, spec: BurstSpec, max_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The largest central ground-truth crop (a multiple of S, at most
    MAX_SIDE) that leaves a margin for the shifts; returns it and its origin."""
    s = spec.scale
    ph, pw = photo.shape[:2]
    margin = int(np.ceil((spec.shift_px + 4) * s * 1.25))
    side_w = min(max_side, pw - 2 * margin) // s * s
    side_h = min(max_side, ph - 2 * margin) // s * s
    if side_w < 16 * s or side_h < 16 * s:
        raise ValueError(f"photo {pw}x{ph} too small for shifts of {spec.shift_px} px at x{s}")
    x0, y0 = (pw - side_w) // 2, (ph - side_h) // 2
    return photo[y0 : y0 + side_h, x0 : x0 + side_w], (x0, y0)


def _homography(rng: np.random.Generator, w: int, h: int, spec: BurstSpec) -> np.ndarray:
    """Reference -> frame: rotation about a random point, shift, keystone."""
    th = np.deg2rad(rng.uniform(-spec.rotation_deg, spec.rotation_deg))
    px, py = rng.uniform(0, w), rng.uniform(0, h)
    c, s = np.cos(th), np.sin(th)
    rot = np.array([[c, -s, px - c * px + s * py], [s, c, py - s * px - c * py], [0, 0, 1]])
    tx, ty = rng.uniform(-spec.shift_px, spec.shift_px, 2)
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1.0]])
    kx, ky = rng.uniform(-spec.keystone, spec.keystone, 2)
    keystone = np.array([[1, 0, 0], [0, 1, 0], [kx / w, ky / h, 1.0]])
    t = shift @ rot @ keystone
    return t / t[2, 2]


def _turbulence(rng: np.random.Generator, w: int, h: int, spec: BurstSpec) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random displacement (frame px) on a w x h grid, RMS turbulence_px."""
    if spec.turbulence_px <= 0:
        z = np.zeros((h, w), np.float32)
        return z, z
    k = spec.turbulence_scale_px
    gw, gh = max(2, int(np.ceil(w / k)) + 2), max(2, int(np.ceil(h / k)) + 2)
    out = []
    for _ in range(2):
        coarse = rng.normal(size=(gh, gw)).astype(np.float32)
        fine = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        fine *= spec.turbulence_px / max(1e-6, float(np.sqrt(np.mean(fine * fine))))
        out.append(fine)
    return out[0], out[1]


def _disc_sprite(rng: np.random.Generator, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured disc (stripes and a colour) with an antialiased alpha."""
    d = 2 * radius + 1
    yy, xx = np.mgrid[0:d, 0:d].astype(np.float32) - radius
    r = np.sqrt(xx * xx + yy * yy)
    alpha = np.clip(radius - r + 0.5, 0.0, 1.0)
    ang = rng.uniform(0, np.pi)
    stripes = 0.5 + 0.5 * np.sin((xx * np.cos(ang) + yy * np.sin(ang)) * (2 * np.pi / rng.uniform(5, 11)))
    colour = rng.uniform(0.1, 0.9, 3).astype(np.float32)
    tex = (0.35 + 0.65 * stripes)[..., None] * colour[None, None, :]
    return tex.astype(np.float32), alpha.astype(np.float32)


def _paste(img: np.ndarray, sprite: tuple[np.ndarray, np.ndarray], cx: float, cy: float) -> np.ndarray:
    tex, alpha = sprite
    d = tex.shape[0]
    # Sub-pixel placement: shift the sprite by its fraction first.
    fx, fy = cx - np.floor(cx), cy - np.floor(cy)
    m = np.float32([[1, 0, fx], [0, 1, fy]])
    tex = cv2.warpAffine(tex, m, (d + 1, d + 1), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(alpha, m, (d + 1, d + 1), flags=cv2.INTER_LINEAR)
    x0, y0 = int(np.floor(cx)) - d // 2, int(np.floor(cy)) - d // 2
    h, w = img.shape[:2]
    xa, ya, xb, yb = max(0, x0), max(0, y0), min(w, x0 + d + 1), min(h, y0 + d + 1)
    if xb <= xa or yb <= ya:
        return img
    out = img.copy()
    a = alpha[ya - y0 : yb - y0, xa - x0 : xb - x0, None]
    out[ya:yb, xa:xb] = out[ya:yb, xa:xb] * (1 - a) + tex[ya - y0 : yb - y0, xa - x0 : xb - x0] * a
    return out


def _noise(rng: np.random.Generator, lin: np.ndarray, spec: BurstSpec) -> np.ndarray:
    """Shot + read noise in linear light (on each mosaic sample for RAW, so
    each channel gets the noise of its own signal level)."""
    n2 = spec.noise * spec.noise
    var = n2 * (spec.shot_share * np.maximum(lin, 0.0) + (1.0 - spec.shot_share))
    return lin + rng.normal(size=lin.shape).astype(np.float32) * np.sqrt(var).astype(np.float32)


def _render(
    scene: np.ndarray,
    origin: tuple[float, float],
    t: np.ndarray,
    turb: tuple[np.ndarray, np.ndarray],
    w: int,
    h: int,
    s: int,
) -> np.ndarray:
    """Frame w x h of SCENE (linear, GT px) through T (reference -> frame),
    integrated over each frame pixel's S x S ground-truth area."""
    ss = s * SUPERSAMPLE
    qx = (np.arange(w * ss, dtype=np.float64) + 0.5) / ss - 0.5
    qy = (np.arange(h * ss, dtype=np.float64) + 0.5) / ss - 0.5
    qx, qy = np.meshgrid(qx, qy)
    tx = cv2.resize(turb[0], (w * ss, h * ss), interpolation=cv2.INTER_LINEAR)
    ty = cv2.resize(turb[1], (w * ss, h * ss), interpolation=cv2.INTER_LINEAR)
    inv = np.linalg.inv(t)
    d = inv[2, 0] * qx + inv[2, 1] * qy + inv[2, 2]
    px = (inv[0, 0] * qx + inv[0, 1] * qy + inv[0, 2]) / d + tx
    py = (inv[1, 0] * qx + inv[1, 1] * qy + inv[1, 2]) / d + ty
    mx = ((px + 0.5) * s - 0.5 + origin[0]).astype(np.float32)
    my = ((py + 0.5) * s - 0.5 + origin[1]).astype(np.float32)
    hi = cv2.remap(scene, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return cv2.resize(np.clip(hi, 0, None), (w, h), interpolation=cv2.INTER_AREA)


def make_burst(photo: np.ndarray, spec: BurstSpec, max_side: int = 256, raw: bool = False) -> SynthBurst:
    """A burst of spec.frames frames from PHOTO (sRGB float [0, 1]).

    RAW: frames are RGGB mosaics in linear light (float32, white level 1),
    scaled by the inverse of a random white balance before the noise.
    """
    rng = np.random.default_rng(spec.seed)
    s = spec.scale
    gt_srgb, (x0, y0) = gt_crop(photo, spec, max_side)
    gh, gw = gt_srgb.shape[:2]
    w, h = gw // s, gh // s
    # The scene: the photo around the crop, linear light.
    pad = int(np.ceil((spec.shift_px + 4) * s * 1.25))
    ya, yb = max(0, y0 - pad), min(photo.shape[0], y0 + gh + pad)
    xa, xb = max(0, x0 - pad), min(photo.shape[1], x0 + gw + pad)
    scene = srgb_to_linear(np.ascontiguousarray(photo[ya:yb, xa:xb], np.float32))
    origin = (x0 - xa, y0 - ya)
    sprite = _disc_sprite(rng, radius=max(5, min(gw, gh) // 16)) if spec.moving_object else None
    # The object crosses a random part of the crop: start and velocity in GT px.
    c0 = np.array([rng.uniform(0.2, 0.8) * gw, rng.uniform(0.2, 0.8) * gh]) + origin
    vel = rng.normal(size=2)
    vel *= (0.6 * min(gw, gh) / max(1, spec.frames)) / np.linalg.norm(vel)
    wb = np.array([rng.uniform(1.6, 2.2), 1.0, rng.uniform(1.3, 1.8)], np.float32)  # R, G, B gains
    frames, transforms = [], []
    gt_lin = None
    for i in range(spec.frames):
        sc = scene
        if sprite is not None:
            sc = _paste(sc, sprite, *(c0 + i * vel))
        if i == 0:
            gt_lin = sc[origin[1] : origin[1] + gh, origin[0] : origin[0] + gw]
        t = np.eye(3) if i == 0 else _homography(rng, w, h, spec)
        turb = _turbulence(rng, w, h, spec) if i else _turbulence(rng, w, h, BurstSpec(turbulence_px=0))
        blur = spec.lens_blur_px * rng.uniform(0.85, 1.15)
        if blur > 0:
            sc = cv2.GaussianBlur(sc, (0, 0), blur, borderType=cv2.BORDER_REFLECT)
        lin = _render(sc, origin, t, turb, w, h, s)
        if raw:
            mosaic = mosaic_rggb(lin / wb[None, None, :])
            frame = np.clip(_noise(rng, mosaic, spec), 0.0, 1.0).astype(np.float32)
        else:
            noisy = np.clip(_noise(rng, lin, spec), 0.0, 1.0)
            frame = np.round(linear_to_srgb(noisy) * 65535) / 65535
        frames.append(frame.astype(np.float32))
        transforms.append(t)
    assert gt_lin is not None
    gt = np.clip(linear_to_srgb(np.clip(gt_lin, 0.0, 1.0)), 0.0, 1.0).astype(np.float32)
    meta = {"white_balance": wb.tolist(), "size": [w, h]}
    return SynthBurst(frames, transforms, gt, s, meta)


def mosaic_rggb(rgb: np.ndarray) -> np.ndarray:
    """One colour per pixel, RGGB (R at even row, even column)."""
    h, w = rgb.shape[:2]
    out = np.empty((h, w), np.float32)
    out[0::2, 0::2] = rgb[0::2, 0::2, 0]
    out[0::2, 1::2] = rgb[0::2, 1::2, 1]
    out[1::2, 0::2] = rgb[1::2, 0::2, 1]
    out[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return out
