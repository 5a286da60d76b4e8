"""Projections and the one-resampling warp maps.

Conventions (used by every stitching module):
- camera: pixel centres at integer coordinates, principal point at the image
  centre ((w - 1) / 2, (h - 1) / 2); camera ray (x - cx, y - cy, f) with
  x right, y down, z forward; optional radial distortion k1, k2 applied to the
  ideal normalised coordinates (pixel = f * xn * (1 + k1 r^2 + k2 r^4) + cx).
- ``R`` maps camera rays to world rays (world = R @ cam); world y points down.
- longitude = atan2(X, Z), latitude = atan2(-Y, hypot(X, Z)) (up positive).
- canvas: u = u0 + lon * su; v = v0 - lat * sv (equirectangular) or
  v = v0 - tan(lat) * sv (cylindrical). With ``wrap`` the canvas width is
  exactly 360 degrees (su = width / 2 pi) and u is periodic.

A warp map for an output rectangle is computed directly from these formulas
(output pixel -> ray -> source pixel), so rotation, focal, lens and projection
are composed into one inverse map and each source pixel is interpolated once.
Maps are built per output block, so cv2.remap's 32767 px limit never applies.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

PROJECTIONS = ("cylindrical", "equirectangular")


@dataclass(frozen=True)
class Camera:
    """One image's pinhole camera on a rotating rig."""

    width: int
    height: int
    focal: float
    R: tuple[tuple[float, float, float], ...]  # 3x3 camera-to-world rotation
    k1: float = 0.0
    k2: float = 0.0

    @property
    def rot(self) -> np.ndarray:
        return np.asarray(self.R, dtype=np.float64)

    @property
    def center(self) -> tuple[float, float]:
        return (self.width - 1) / 2.0, (self.height - 1) / 2.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["R"] = [list(r) for r in self.R]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Camera:
        return cls(
            width=int(d["width"]),
            height=int(d["height"]),
            focal=float(d["focal"]),
            R=tuple(tuple(float(x) for x in r) for r in d["R"]),
            k1=float(d.get("k1", 0.0)),
            k2=float(d.get("k2", 0.0)),
        )

    @classmethod
    def make(cls, width: int, height: int, focal: float, R: np.ndarray, k1: float = 0.0, k2: float = 0.0) -> Camera:
        return cls(
            int(width), int(height), float(focal), tuple(tuple(float(x) for x in r) for r in np.asarray(R)), k1, k2
        )


@dataclass(frozen=True)
class Canvas:
    """Output canvas of a panorama (see module docstring for the formulas)."""

    projection: str
    width: int
    height: int
    su: float
    sv: float
    u0: float
    v0: float
    wrap: bool

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Canvas:
        return cls(
            str(d["projection"]),
            int(d["width"]),
            int(d["height"]),
            float(d["su"]),
            float(d["sv"]),
            float(d["u0"]),
            float(d["v0"]),
            bool(d["wrap"]),
        )

    def scaled(self, factor: float) -> Canvas:
        """The same canvas at another resolution (for proxies)."""
        w = max(1, round(self.width * factor))
        h = max(1, round(self.height * factor))
        fx, fy = w / self.width, h / self.height
        return Canvas(
            self.projection,
            w,
            h,
            self.su * fx,
            self.sv * fy,
            (self.u0 + 0.5) * fx - 0.5,
            (self.v0 + 0.5) * fy - 0.5,
            self.wrap,
        )


def rotation_from_ypr(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world rotation from yaw (right +), pitch (up +), roll (degrees)."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    # pitch up = rotate forward axis towards -y (world up)
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def ypr_from_rotation(R: np.ndarray) -> tuple[float, float, float]:
    """Inverse of rotation_from_ypr (degrees)."""
    z = R[:, 2]
    yaw = math.degrees(math.atan2(z[0], z[2]))
    pitch = math.degrees(math.atan2(-z[1], math.hypot(z[0], z[2])))
    rest = (rotation_from_ypr(yaw, pitch, 0.0)).T @ R
    roll = math.degrees(math.atan2(rest[1, 0], rest[0, 0]))
    return yaw, pitch, roll


# ---------------------------------------------------------------- canvas maths


def rays_to_canvas(rays: np.ndarray, canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """World rays (..., 3) to canvas (u, v); v is inf for cylinder poles."""
    x, y, z = rays[..., 0], rays[..., 1], rays[..., 2]
    horiz = np.hypot(x, z)
    lon = np.arctan2(x, z)
    u = canvas.u0 + lon * canvas.su
    if canvas.projection == "equirectangular":
        v = canvas.v0 - np.arctan2(-y, horiz) * canvas.sv
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            v = canvas.v0 - (-y / horiz) * canvas.sv
    return u, v


def canvas_lonlat(us: np.ndarray, vs: np.ndarray, canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """1-D output coordinates to longitudes and latitudes (radians)."""
    lon = (np.asarray(us, np.float64) - canvas.u0) / canvas.su
    t = (canvas.v0 - np.asarray(vs, np.float64)) / canvas.sv
    lat = t if canvas.projection == "equirectangular" else np.arctan(t)
    return lon, lat


def block_map(
    cam: Camera, canvas: Canvas, x0: int, y0: int, w: int, h: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse map of an output rectangle into ``cam``'s source pixels.

    Returns (map_x, map_y, valid) float32 / bool arrays of shape (h, w). The
    rectangle may extend beyond the canvas horizontally (periodic with wrap).
    """
    lon, lat = canvas_lonlat(np.arange(x0, x0 + w), np.arange(y0, y0 + h), canvas)
    if canvas.projection == "equirectangular":
        lat = np.clip(lat, -math.pi / 2, math.pi / 2)
    cl, sl = np.cos(lat).astype(np.float32), np.sin(lat).astype(np.float32)
    cx_, sx_ = np.cos(lon).astype(np.float32), np.sin(lon).astype(np.float32)
    Rt = cam.rot.T.astype(np.float32)  # world -> camera
    # ray = (cl*sin(lon), -sl, cl*cos(lon)); camera = Rt @ ray, separably.
    a = cl[:, None]
    out = []
    for i in range(3):
        out.append(a * (Rt[i, 0] * sx_ + Rt[i, 2] * cx_)[None, :] - (Rt[i, 1] * sl)[:, None])
    X, Y, Z = out
    front = Z > 1e-6
    Zs = np.where(front, Z, 1.0)
    xn = X / Zs
    yn = Y / Zs
    if cam.k1 or cam.k2:
        r2 = xn * xn + yn * yn
        d = 1.0 + r2 * (cam.k1 + cam.k2 * r2)
        xn *= d
        yn *= d
    cx, cy = cam.center
    mx = xn * np.float32(cam.focal) + np.float32(cx)
    my = yn * np.float32(cam.focal) + np.float32(cy)
    valid = front & (mx > -0.5) & (mx < cam.width - 0.5) & (my > -0.5) & (my < cam.height - 0.5)
    # outside the image: clamp to its border (replicated content, the same in
    # every block, keeps multi-band blending free of dark halos)
    np.clip(mx, 0, cam.width - 1, out=mx)
    np.clip(my, 0, cam.height - 1, out=my)
    return mx.astype(np.float32, copy=False), my.astype(np.float32, copy=False), valid


def center_weight(cam: Camera, mx: np.ndarray, my: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Distance of each source sample to its image border (0 outside): the
    per-pixel Voronoi criterion used for seams, block independent."""
    d = np.minimum(np.minimum(mx + 0.5, cam.width - 0.5 - mx), np.minimum(my + 0.5, cam.height - 0.5 - my))
    d = d / float(max(cam.width, cam.height))
    return np.where(valid, np.maximum(d, 1e-6), 0.0).astype(np.float32)


# ------------------------------------------------------------- footprints


def _cam_rays(cam: Camera, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    cx, cy = cam.center
    xn = (px - cx) / cam.focal
    yn = (py - cy) / cam.focal
    if cam.k1 or cam.k2:  # invert distortion by fixed-point iterations
        xd, yd = xn.copy(), yn.copy()
        for _ in range(10):
            r2 = xn * xn + yn * yn
            d = 1.0 + r2 * (cam.k1 + cam.k2 * r2)
            xn, yn = xd / d, yd / d
    v = np.stack([xn, yn, np.ones_like(xn)], -1)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return v @ cam.rot.T


def border_rays(cam: Camera, n: int = 48) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)
    w, h = cam.width - 1, cam.height - 1
    px = np.concatenate([t * w, np.full(n, w), (1 - t) * w, np.zeros(n)])
    py = np.concatenate([np.zeros(n), t * h, np.full(n, h), (1 - t) * h])
    gx, gy = np.meshgrid(np.linspace(0, w, 9), np.linspace(0, h, 9))
    px = np.concatenate([px, gx.ravel()])
    py = np.concatenate([py, gy.ravel()])
    return _cam_rays(cam, px, py)


def _contains_dir(cam: Camera, d: np.ndarray) -> bool:
    c = cam.rot.T @ d
    if c[2] <= 0:
        return False
    cx, cy = cam.center
    x = c[0] / c[2] * cam.focal + cx
    y = c[1] / c[2] * cam.focal + cy
    return -0.5 < x < cam.width - 0.5 and -0.5 < y < cam.height - 0.5


def footprint(cam: Camera, canvas: Canvas, margin: int = 2) -> tuple[int, int, int, int]:
    """Output bounding box (x0, y0, x1, y1) of a camera; with wrap x1 may
    exceed the canvas width (the footprint continues at the left edge)."""
    rays = border_rays(cam)
    u, v = rays_to_canvas(rays, canvas)
    W = canvas.width
    north = _contains_dir(cam, np.array([0.0, -1.0, 0.0]))
    south = _contains_dir(cam, np.array([0.0, 1.0, 0.0]))
    if canvas.wrap:
        period = 2 * math.pi * canvas.su
        lon_u = np.sort(np.mod(u + 0.5, period))
        gaps = np.diff(np.concatenate([lon_u, [lon_u[0] + period]]))
        k = int(np.argmax(gaps))
        if north or south or gaps[k] < 0.02 * period:
            ux0, ux1 = 0.0, float(W)
        else:
            ux0 = lon_u[(k + 1) % len(lon_u)]
            ux1 = lon_u[k]
            if ux1 < ux0:
                ux1 += period
            ux0 -= 0.5
            ux1 -= 0.5
    else:
        ux0, ux1 = float(np.min(u)), float(np.max(u))
    vf = v[np.isfinite(v)]
    vy0 = float(vf.min()) if vf.size else 0.0
    vy1 = float(vf.max()) if vf.size else float(canvas.height)
    if north:
        vy0 = -1e9
    if south:
        vy1 = 1e9
    x0 = math.floor(ux0) - margin
    x1 = math.ceil(ux1) + margin + 1
    if canvas.wrap and x1 - x0 >= W:
        x0, x1 = 0, W
    y0 = max(0, math.floor(vy0) - margin)
    y1 = min(canvas.height, math.ceil(vy1) + margin + 1)
    if not canvas.wrap:
        x0, x1 = max(0, x0), min(W, x1)
    elif x0 < 0:
        x0 += W
        x1 += W
    elif x0 >= W:
        x0 -= W
        x1 -= W
    return x0, y0, x1, y1


def rect_hits(fp: tuple[int, int, int, int], rect: tuple[int, int, int, int], canvas: Canvas) -> bool:
    """Whether footprint ``fp`` intersects the output rectangle (x0, y0, x1, y1)."""
    fx0, fy0, fx1, fy1 = fp
    rx0, ry0, rx1, ry1 = rect
    if fy1 <= ry0 or fy0 >= ry1 or fx1 <= fx0 or fy1 <= fy0:
        return False
    shifts = (-canvas.width, 0, canvas.width) if canvas.wrap else (0,)
    return any(fx0 + s < rx1 and fx1 + s > rx0 for s in shifts)


def make_canvas(
    cams: list[Camera],
    projection: str,
    scale: float | None = None,
    wrap: bool = True,
    max_pixels: float | None = None,
) -> Canvas:
    """Canvas for a set of cameras: ``scale`` px/rad (default: median focal).

    Equirectangular is always the full 360 x 180 degree 2:1 canvas.
    Cylindrical spans the cameras' vertical extent; with ``wrap`` its width is
    exactly 360 degrees, else the horizontal extent of the cameras.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"unknown projection {projection!r}")
    s = float(scale if scale else np.median([c.focal for c in cams]))
    if projection == "equirectangular":
        W = max(4, round(2 * math.pi * s / 2) * 2)
        H = W // 2
        if max_pixels and max_pixels < W * H:
            W = max(4, int(math.sqrt(2 * max_pixels)) // 2 * 2)
            H = W // 2
        return Canvas(projection, W, H, W / (2 * math.pi), H / math.pi, W / 2 - 0.5, H / 2 - 0.5, True)
    rays = np.concatenate([border_rays(c) for c in cams])
    lat_t = -rays[:, 1] / np.maximum(np.hypot(rays[:, 0], rays[:, 2]), 1e-9)
    t0, t1 = float(np.clip(lat_t.min(), -4, 4)), float(np.clip(lat_t.max(), -4, 4))
    if wrap:
        W = max(4, round(2 * math.pi * s))
        su = W / (2 * math.pi)
        u0 = W / 2 - 0.5
    else:
        lon = np.arctan2(rays[:, 0], rays[:, 2])
        # centre the longitudes on their circular mean so +-180 is not an issue
        m = math.atan2(np.sin(lon).mean(), np.cos(lon).mean())
        d = np.angle(np.exp(1j * (lon - m)))
        lo, hi = float(d.min() + m), float(d.max() + m)
        W = max(4, math.ceil((hi - lo) * s) + 1)
        su = s
        u0 = -lo * s
    H = max(4, math.ceil((t1 - t0) * s) + 1)
    if max_pixels and max_pixels < W * H:
        f = math.sqrt(max_pixels / (W * H))
        return Canvas(projection, W, H, su, s, u0, t1 * s, wrap).scaled(f)
    return Canvas(projection, W, H, su, s, u0, t1 * s, wrap)
