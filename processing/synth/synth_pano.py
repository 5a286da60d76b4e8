"""Synthetic panorama captures with ground truth.

- Cube map source (e.g. the meadow: six square faces stacked vertically in
  OpenGL order +X, -X, +Y (sky), -Y (ground), +Z, -Z; the order and the
  per-face (s, t) axes were checked by continuity across face edges):
  ``cube_views`` cuts overlapping perspective views with pointing jitter,
  exposure differences and vignetting; ``cube_to_equirect`` renders the
  ground-truth equirectangular image in the stitcher's conventions.
- ``make_cylinder_views``: wraps any flat photo around a cylinder (360
  degrees) and cuts perspective views from it (web demo).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..io.imageio import write_image
from ..stitch.project import Camera, rotation_from_ypr


def _gl(rays: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # stitcher world (x right, y down, z forward) -> OpenGL cube (y up, z back)
    return rays[..., 0], -rays[..., 1], -rays[..., 2]


def cube_lookup_maps(rays: np.ndarray, face: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Face index and (s, t) in [0, 1] of world rays (..., 3) in a GL cube map."""
    x, y, z = _gl(rays)
    ax, ay, az = np.abs(x), np.abs(y), np.abs(z)
    fidx = np.where(
        (ax >= ay) & (ax >= az), np.where(x > 0, 0, 1), np.where(ay >= az, np.where(y > 0, 2, 3), np.where(z > 0, 4, 5))
    )
    ma = np.maximum(np.maximum(ax, ay), az)
    sc = np.select([fidx == 0, fidx == 1, fidx == 2, fidx == 3, fidx == 4, fidx == 5], [-z, z, x, x, x, -x])
    tc = np.select([fidx == 0, fidx == 1, fidx == 2, fidx == 3, fidx == 4, fidx == 5], [-y, -y, z, -z, -y, -y])
    s = (sc / ma + 1) / 2
    t = (tc / ma + 1) / 2
    return fidx, s * face - 0.5, t * face - 0.5, ma


def sample_cube(cube: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a vertically stacked cube map (6F x F) along rays."""
    F = cube.shape[1]
    fidx, s, t, _ = cube_lookup_maps(rays, F)
    mx = np.clip(s, 0, F - 1).astype(np.float32)
    my = (np.clip(t, 0, F - 1) + fidx * F).astype(np.float32)
    out = np.empty((*rays.shape[:-1], cube.shape[2]), np.float32)
    # remap in chunks shaped (rows, 1024): cv2.remap needs maps < 32767 px a side
    flat_x, flat_y = mx.reshape(-1), my.reshape(-1)
    o = out.reshape(-1, cube.shape[2])
    step = 1024 * 1024
    for a in range(0, len(flat_x), step):
        bx, by = flat_x[a : a + step], flat_y[a : a + step]
        n = len(bx)
        pad = (-n) % 1024
        bx = np.pad(bx, (0, pad)).reshape(-1, 1024)
        by = np.pad(by, (0, pad)).reshape(-1, 1024)
        r = cv2.remap(cube, bx, by, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        o[a : a + n] = r.reshape(-1, cube.shape[2])[:n]
    return out


def cube_to_equirect(cube: np.ndarray, width: int) -> np.ndarray:
    """Ground truth: equirectangular (width x width/2) in the stitcher's
    convention (lon 0 at the centre column, +lon to the right)."""
    H = width // 2
    lon = ((np.arange(width) + 0.5) / width - 0.5) * 2 * math.pi
    lat = (0.5 - (np.arange(H) + 0.5) / H) * math.pi
    cl = np.cos(lat)[:, None]
    rays = np.stack(
        [cl * np.sin(lon)[None, :], -np.sin(lat)[:, None] * np.ones((1, width)), cl * np.cos(lon)[None, :]], -1
    )
    return sample_cube(cube, rays)


def render_view(src_lookup, cam: Camera) -> np.ndarray:
    """Perspective view of ``cam`` (world rays -> colours via src_lookup)."""
    x = np.arange(cam.width) - (cam.width - 1) / 2
    y = np.arange(cam.height) - (cam.height - 1) / 2
    xx, yy = np.meshgrid(x / cam.focal, y / cam.focal)
    v = np.stack([xx, yy, np.ones_like(xx)], -1)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return src_lookup(v @ cam.rot.T)


def vignette(h: int, w: int, strength: float) -> np.ndarray:
    """Multiplicative radial falloff 1 - strength r^2 (r = 1 at the corners)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - (w - 1) / 2) ** 2 + (yy - (h - 1) / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    return 1.0 - strength * r2


@dataclass
class SynthView:
    name: str
    image: np.ndarray
    yaw: float
    pitch: float
    roll: float
    focal: float
    gain: tuple[float, float, float]
    nominal: tuple[float, float] = (0.0, 0.0)  # rig (yaw, pitch) before jitter


def cube_views(
    cube: np.ndarray,
    size: tuple[int, int] = (640, 480),
    hfov: float = 60.0,
    yaw_step: float = 40.0,
    pitches: tuple[float, ...] = (-35.0, 0.0, 35.0),
    zenith: bool = True,
    nadir: bool = True,
    jitter_deg: float = 2.0,
    exposure_sigma: float = 0.08,
    vignetting: float = 0.25,
    seed: int = 0,
) -> list[SynthView]:
    """Overlapping perspective views covering the sphere (rows of yaws at
    each pitch, plus zenith and nadir), with jitter, gains and vignetting."""
    rng = np.random.default_rng(seed)
    w, h = size
    f = w / 2 / math.tan(math.radians(hfov / 2))
    lut = lambda r: sample_cube(cube, r)  # noqa: E731
    views = []
    plan = []
    for p in pitches:
        n = max(3, math.ceil(360 / (yaw_step / max(math.cos(math.radians(p)), 0.35))))
        off = rng.uniform(0, 360 / n)
        plan += [(off + k * 360 / n, p) for k in range(n)]
    if zenith:
        plan.append((0.0, 90.0))
    if nadir:
        plan.append((0.0, -90.0))
    for k, (yaw, pitch) in enumerate(plan):
        yaw_j = ((yaw + rng.normal(0, jitter_deg) + 180) % 360) - 180
        pitch_j = float(np.clip(pitch + rng.normal(0, jitter_deg), -90, 90))
        roll_j = float(rng.normal(0, jitter_deg / 2))
        cam = Camera.make(w, h, f, rotation_from_ypr(yaw_j, pitch_j, roll_j))
        img = render_view(lut, cam)
        gain = tuple(float(x) for x in np.exp(rng.normal(0, exposure_sigma, 3) + rng.normal(0, exposure_sigma)))
        img = img * np.asarray(gain, np.float32)[None, None, :]
        if vignetting:
            img = img * vignette(h, w, vignetting)[:, :, None]
        views.append(
            SynthView(f"view_{k:03d}.png", np.clip(img, 0, 1), yaw_j, pitch_j, roll_j, f, gain, (yaw, pitch))  # type: ignore[arg-type]
        )
    return views


def make_cylinder_views(
    image: np.ndarray,
    n_views: int = 12,
    overlap: float = 0.35,
    view_height: int | None = None,
    jitter_deg: float = 0.0,
    seed: int = 0,
) -> tuple[list[np.ndarray], list[float], float]:
    """Wrap a flat photo around a 360-degree cylinder and cut ``n_views``
    perspective views with the given fractional overlap.

    Returns (views, yaw angles in degrees, focal length in pixels).
    """
    H, W = image.shape[:2]
    s = W / (2 * math.pi)  # cylinder radius in photo pixels
    hfov = 2 * math.pi / n_views * (1 + overlap)
    vh = view_height or int(min(H * 0.9, H))
    f = s  # same resolution as the photo at the view centre
    vw = round(2 * f * math.tan(hfov / 2))
    rng = np.random.default_rng(seed)
    views, yaws = [], []
    for k in range(n_views):
        yaw = k * 360.0 / n_views + (rng.normal(0, jitter_deg) if jitter_deg else 0.0)
        cam = Camera.make(vw, vh, f, rotation_from_ypr(yaw, 0.0, 0.0))
        x = np.arange(vw) - (vw - 1) / 2
        y = np.arange(vh) - (vh - 1) / 2
        xx, yy = np.meshgrid(x / f, y / f)
        v = np.stack([xx, yy, np.ones_like(xx)], -1) @ cam.rot.T
        lon = np.arctan2(v[..., 0], v[..., 2])
        t = v[..., 1] / np.hypot(v[..., 0], v[..., 2])
        mx = (np.mod(lon / (2 * math.pi) + 0.5, 1.0) * W - 0.5).astype(np.float32)
        my = (t * s + (H - 1) / 2).astype(np.float32)
        big = np.concatenate([image, image[:, :2]], 1)  # wrap for bilinear at the seam
        views.append(cv2.remap(big, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
        yaws.append(yaw)
    return views, yaws, f


def write_views(views: list[SynthView], out_dir: str | Path, truth: np.ndarray | None = None) -> Path:
    """Write views, rig.csv (nominal rig angles, no jitter: usable as
    placements), truth.json (true angles, gains) and the truth equirect."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for v in views:
        write_image(out / v.name, v.image)
    with open(out / "rig.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["file", "yaw", "pitch", "roll", "focal"])
        for v in views:
            wr.writerow([v.name, f"{v.nominal[0]:.4f}", f"{v.nominal[1]:.4f}", "0", f"{v.focal:.3f}"])
    (out / "truth.json").write_text(
        json.dumps(
            [
                {"file": v.name, "yaw": v.yaw, "pitch": v.pitch, "roll": v.roll, "focal": v.focal, "gain": v.gain}
                for v in views
            ],
            indent=1,
        )
    )
    if truth is not None:
        write_image(out / "truth_equirect.png", truth)
    return out


def load_cube(path: str | Path, face: int | None = None) -> np.ndarray:
    from ..io.imageio import load_image

    img, _ = load_image(path)
    if img.shape[0] != 6 * img.shape[1]:
        from ..io.errors import InputError

        raise InputError(path, f"not a vertical cube strip (6F x F): {img.shape[1]}x{img.shape[0]}")
    if face and face != img.shape[1]:
        img = cv2.resize(img, (face, face * 6), interpolation=cv2.INTER_AREA)
    return img
