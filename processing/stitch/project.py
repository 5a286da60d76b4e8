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

#: longitude-based projections: u from longitude, v from a function of latitude (separable maps)
LON_PROJECTIONS = ("cylindrical", "equirectangular", "mercator")
#: projections of the sphere onto the plane tangent at the canvas centre
#: (planar: orthographic, the fast mosaic for flat scenes)
AZIMUTHAL = ("rectilinear", "stereographic", "planar")
PROJECTIONS = LON_PROJECTIONS + AZIMUTHAL


def lat_to_t(lat: np.ndarray, projection: str) -> np.ndarray:
    """Vertical plane coordinate of a latitude for the longitude-based projections."""
    if projection == "equirectangular":
        return lat
    if projection == "cylindrical":
        return np.tan(lat)
    return np.arcsinh(np.tan(lat))  # mercator


def t_to_lat(t: np.ndarray, projection: str) -> np.ndarray:
    if projection == "equirectangular":
        return t
    if projection == "cylindrical":
        return np.arctan(t)
    return np.arctan(np.sinh(t))  # mercator


def local_to_plane(X: np.ndarray, Y: np.ndarray, Z: np.ndarray, projection: str) -> tuple[np.ndarray, np.ndarray]:
    """Rays in the canvas frame (x right, y down, z at the centre) to plane
    coordinates (x right, y up) of an azimuthal projection; nan where the
    projection does not reach (behind a rectilinear / orthographic plane)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if projection == "rectilinear":
            ok = Z > 1e-9
            x, y = X / Z, -Y / Z
        elif projection == "stereographic":
            ok = Z > -1 + 1e-9
            k = 2.0 / (1.0 + Z)
            x, y = k * X, -k * Y
        else:  # planar (orthographic)
            ok = Z >= 0
            x, y = X * 1.0, -Y * 1.0
    return np.where(ok, x, np.nan), np.where(ok, y, np.nan)


def plane_to_local(x: np.ndarray, y: np.ndarray, projection: str) -> tuple[np.ndarray, ...]:
    """Inverse of local_to_plane: unit rays (X, Y, Z) and where they are valid."""
    if projection == "rectilinear":
        n = np.sqrt(x * x + y * y + 1.0)
        return x / n, -y / n, 1.0 / n, np.ones(np.shape(x), bool)
    r2 = x * x + y * y
    if projection == "stereographic":
        d = 4.0 + r2
        return 4.0 * x / d, -4.0 * y / d, (4.0 - r2) / d, np.ones(np.shape(x), bool)
    ok = r2 <= 1.0
    return x, -y, np.sqrt(np.maximum(1.0 - r2, 0.0)), ok


@dataclass(frozen=True)
class Camera:
    """One image's pinhole camera on a rotating rig."""

    width: int
    height: int
    focal: float
    R: tuple[tuple[float, float, float], ...]  # 3x3 camera-to-world rotation
    k1: float = 0.0
    k2: float = 0.0
    d: float = 0.0  # principal point shift from the image centre (px, right)
    e: float = 0.0  # (px, down)

    @property
    def rot(self) -> np.ndarray:
        return np.asarray(self.R, dtype=np.float64)

    @property
    def center(self) -> tuple[float, float]:
        return (self.width - 1) / 2.0 + self.d, (self.height - 1) / 2.0 + self.e

    def resized(self, width: int, height: int) -> Camera:
        """The same camera for the image scaled to width x height (proxies)."""
        s = width / self.width
        return Camera(width, height, self.focal * s, self.R, self.k1, self.k2, self.d * s, self.e * s)

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
            d=float(d.get("d", 0.0)),
            e=float(d.get("e", 0.0)),
        )

    @classmethod
    def make(
        cls,
        width: int,
        height: int,
        focal: float,
        R: np.ndarray,
        k1: float = 0.0,
        k2: float = 0.0,
        d: float = 0.0,
        e: float = 0.0,
    ) -> Camera:
        R_ = tuple(tuple(float(x) for x in r) for r in np.asarray(R))
        return cls(int(width), int(height), float(focal), R_, float(k1), float(k2), float(d), float(e))  # type: ignore[arg-type]


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
    # camera-to-world rotation of the canvas centre (azimuthal projections)
    center: tuple[tuple[float, float, float], ...] | None = None

    @property
    def rot(self) -> np.ndarray:
        return np.eye(3) if self.center is None else np.asarray(self.center, np.float64)

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.center is None:
            d.pop("center")
        else:
            d["center"] = [list(r) for r in self.center]
        return d

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
            tuple(tuple(float(x) for x in r) for r in d["center"]) if d.get("center") else None,  # type: ignore[arg-type]
        )

    def cropped(self, x0: int, y0: int, x1: int, y1: int) -> Canvas:
        """The output rectangle [x0, x1) x [y0, y1) as a canvas of its own."""
        return Canvas(
            self.projection, x1 - x0, y1 - y0, self.su, self.sv, self.u0 - x0, self.v0 - y0, False, self.center
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
            self.center,
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
    if canvas.center is not None:
        rays = rays @ canvas.rot  # world -> canvas frame (rows: R^T r)
    x, y, z = rays[..., 0], rays[..., 1], rays[..., 2]
    if canvas.projection in AZIMUTHAL:
        px, py = local_to_plane(x, y, z, canvas.projection)
        u = canvas.u0 + px * canvas.su
        v = canvas.v0 - py * canvas.sv
        return np.where(np.isfinite(u), u, np.inf), np.where(np.isfinite(v), v, np.inf)
    horiz = np.hypot(x, z)
    lon = np.arctan2(x, z)
    u = canvas.u0 + lon * canvas.su
    if canvas.projection == "equirectangular":
        v = canvas.v0 - np.arctan2(-y, horiz) * canvas.sv
    elif canvas.projection == "mercator":
        with np.errstate(divide="ignore", invalid="ignore"):
            v = canvas.v0 - np.arcsinh(-y / horiz) * canvas.sv
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            v = canvas.v0 - (-y / horiz) * canvas.sv
    return u, v


def canvas_to_rays(us: np.ndarray, vs: np.ndarray, canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """Output points (u, v) (arrays of one shape) to world rays (..., 3) and
    where the projection reaches them: the inverse of rays_to_canvas."""
    px = (np.asarray(us, np.float64) - canvas.u0) / canvas.su
    py = (canvas.v0 - np.asarray(vs, np.float64)) / canvas.sv
    if canvas.projection in AZIMUTHAL:
        X, Y, Z, ok = plane_to_local(px, py, canvas.projection)
        r = np.stack([X, Y, Z], -1)
    else:
        lat = t_to_lat(py, canvas.projection)
        ok = np.abs(lat) <= math.pi / 2
        cl = np.cos(lat)
        r = np.stack([cl * np.sin(px), -np.sin(lat), cl * np.cos(px)], -1)
    if canvas.center is not None:
        r = r @ canvas.rot.T
    return r, ok


def canvas_lonlat(us: np.ndarray, vs: np.ndarray, canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """1-D output coordinates to longitudes and latitudes (radians)."""
    if canvas.projection in AZIMUTHAL:
        raise ValueError(f"{canvas.projection} is not separable into longitudes and latitudes")
    lon = (np.asarray(us, np.float64) - canvas.u0) / canvas.su
    t = (canvas.v0 - np.asarray(vs, np.float64)) / canvas.sv
    return lon, t_to_lat(t, canvas.projection)


def block_map(
    cam: Camera, canvas: Canvas, x0: int, y0: int, w: int, h: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse map of an output rectangle into ``cam``'s source pixels.

    Returns (map_x, map_y, valid) float32 / bool arrays of shape (h, w). The
    rectangle may extend beyond the canvas horizontally (periodic with wrap).
    """
    if canvas.projection in AZIMUTHAL:
        # not separable: one ray per output pixel, through the canvas centre's frame
        uu, vv = np.meshgrid(np.arange(x0, x0 + w, dtype=np.float64), np.arange(y0, y0 + h, dtype=np.float64))
        px = (uu - canvas.u0) / canvas.su
        py = (canvas.v0 - vv) / canvas.sv
        lx, ly, lz, reach = plane_to_local(px, py, canvas.projection)
        M = (cam.rot.T @ canvas.rot).astype(np.float32)  # canvas frame -> camera
        lx, ly, lz = lx.astype(np.float32), ly.astype(np.float32), lz.astype(np.float32)
        X = M[0, 0] * lx + M[0, 1] * ly + M[0, 2] * lz
        Y = M[1, 0] * lx + M[1, 1] * ly + M[1, 2] * lz
        Z = M[2, 0] * lx + M[2, 1] * ly + M[2, 2] * lz
        front = (Z > 1e-6) & reach
    else:
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


def camera_rays(cam: Camera, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """World rays of source pixels (px, py) of ``cam`` (lens model inverted)."""
    return _cam_rays(cam, np.asarray(px, np.float64), np.asarray(py, np.float64))


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
    if canvas.projection in AZIMUTHAL:
        fin = np.isfinite(u) & np.isfinite(v)
        if not fin.any():
            return 0, 0, 0, 0
        if not fin.all():  # the image reaches past the projection's edge: all of the canvas it may cover
            return 0, 0, W, canvas.height
        x0 = max(0, math.floor(float(u.min())) - margin)
        x1 = min(W, math.ceil(float(u.max())) + margin + 1)
        y0 = max(0, math.floor(float(v.min())) - margin)
        y1 = min(canvas.height, math.ceil(float(v.max())) + margin + 1)
        return x0, y0, max(x0, x1), max(y0, y1)
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


#: how far the plane of each azimuthal projection may extend (rectilinear: 72 degrees off centre)
PLANE_LIMIT = {"rectilinear": 3.0, "stereographic": 4.0, "planar": 1.0}
#: and the vertical plane coordinate of the longitude-based ones
T_LIMIT = {"cylindrical": 4.0, "mercator": 3.0, "equirectangular": math.pi / 2}


def covers_360(cams: list[Camera], bins: int = 360, min_share: float = 5 / 6) -> bool:
    """Whether the cameras' longitudes go round the circle: a 360-degree
    panorama, possibly with a gap (a ring whose registration does not quite
    close, a missing stack) of up to (1 - min_share) x 360 degrees; less is
    a partial panorama, never padded to 360 degrees."""
    hit = np.zeros(bins, bool)
    for c in cams:
        if _contains_dir(c, np.array([0.0, -1.0, 0.0])) or _contains_dir(c, np.array([0.0, 1.0, 0.0])):
            return True
        r = border_rays(c)
        lon = np.sort(np.mod(np.arctan2(r[:, 0], r[:, 2]), 2 * math.pi))
        gaps = np.diff(np.concatenate([lon, [lon[0] + 2 * math.pi]]))
        k = int(np.argmax(gaps))
        start, end = lon[(k + 1) % len(lon)], lon[k]
        if end < start:
            end += 2 * math.pi
        idx = np.arange(math.floor(start / (2 * math.pi) * bins), math.ceil(end / (2 * math.pi) * bins) + 1)
        hit[np.mod(idx, bins)] = True
    return bool(hit.mean() >= min_share)


def make_canvas(
    cams: list[Camera],
    projection: str,
    scale: float | None = None,
    wrap: bool = True,
    max_pixels: float | None = None,
) -> Canvas:
    """Canvas for a set of cameras: ``scale`` px/rad (default: median focal).

    Equirectangular with ``wrap`` is the full 360 x 180 degree 2:1 canvas;
    without, like every other projection, it is fitted to the cameras'
    extent. The longitude-based projections span 360 degrees with ``wrap``,
    else the cameras' longitudes; the azimuthal ones are centred on the
    cameras' mean optical axis (horizon level).
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"unknown projection {projection!r}")
    s = float(scale if scale else np.median([c.focal for c in cams]))
    if projection == "equirectangular" and wrap:
        W = max(4, round(2 * math.pi * s / 2) * 2)
        H = W // 2
        if max_pixels and max_pixels < W * H:
            W = max(4, int(math.sqrt(2 * max_pixels)) // 2 * 2)
            H = W // 2
        return Canvas(projection, W, H, W / (2 * math.pi), H / math.pi, W / 2 - 0.5, H / 2 - 0.5, True)
    rays = np.concatenate([border_rays(c) for c in cams])
    if projection in AZIMUTHAL:
        axis = np.sum([c.rot[:, 2] for c in cams], axis=0)
        yaw = math.degrees(math.atan2(axis[0], axis[2]))
        pitch = math.degrees(math.atan2(-axis[1], math.hypot(axis[0], axis[2])))
        R0 = rotation_from_ypr(yaw, pitch, 0.0)
        loc = rays @ R0
        px, py = local_to_plane(loc[:, 0], loc[:, 1], loc[:, 2], projection)
        lim = PLANE_LIMIT[projection]
        fin = np.isfinite(px) & np.isfinite(py)
        px = np.clip(px[fin], -lim, lim) if fin.any() else np.array([-lim, lim])
        py = np.clip(py[fin], -lim, lim) if fin.any() else np.array([-lim, lim])
        if not fin.all():  # cameras reach past the plane's edge
            px = np.concatenate([px, [-lim, lim]])
            py = np.concatenate([py, [-lim, lim]])
        lo, hi, t0, t1 = float(px.min()), float(px.max()), float(py.min()), float(py.max())
        W = max(4, math.ceil((hi - lo) * s) + 1)
        H = max(4, math.ceil((t1 - t0) * s) + 1)
        cv = Canvas(projection, W, H, s, s, -lo * s, t1 * s, False, tuple(tuple(float(x) for x in r) for r in R0))  # type: ignore[arg-type]
        return cv.scaled(math.sqrt(max_pixels / (W * H))) if max_pixels and max_pixels < W * H else cv
    lat = np.arctan2(-rays[:, 1], np.maximum(np.hypot(rays[:, 0], rays[:, 2]), 1e-12))
    tl = T_LIMIT[projection]
    lat_t = np.clip(lat_to_t(np.clip(lat, -1.5707, 1.5707), projection), -tl, tl)
    t0, t1 = float(lat_t.min()), float(lat_t.max())
    if any(_contains_dir(c, np.array([0.0, -1.0, 0.0])) for c in cams):
        t1 = tl
    if any(_contains_dir(c, np.array([0.0, 1.0, 0.0])) for c in cams):
        t0 = -tl
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


def largest_filled_rectangle(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the largest axis-aligned rectangle of True pixels
    (row by row, the largest rectangle under the histogram of column runs)."""
    h, w = mask.shape
    heights = np.zeros(w + 1, np.int64)
    best, rect = 0, (0, 0, 0, 0)
    for y in range(h):
        heights[:w] = np.where(mask[y], heights[:w] + 1, 0)
        stack: list[int] = []
        for x in range(w + 1):
            while stack and heights[stack[-1]] >= heights[x]:
                top = stack.pop()
                hgt = int(heights[top])
                left = stack[-1] + 1 if stack else 0
                area = hgt * (x - left)
                if area > best:
                    best, rect = area, (left, y - hgt + 1, x, y + 1)
            stack.append(x)
    return rect


def coverage_mask(cams: list[Camera], canvas: Canvas) -> np.ndarray:
    """Which pixels of ``canvas`` (a small proxy) some camera covers."""
    cov = np.zeros((canvas.height, canvas.width), bool)
    for c in cams:
        x0, y0, x1, y1 = footprint(c, canvas)
        if x1 <= x0 or y1 <= y0:
            continue
        _mx, _my, valid = block_map(c, canvas, x0, y0, x1 - x0, y1 - y0)
        cols = np.mod(np.arange(x0, x1), canvas.width) if canvas.wrap else np.arange(x0, x1)
        keep = (cols >= 0) & (cols < canvas.width)
        cov[y0:y1][:, cols[keep]] |= valid[:, keep]
    return cov


def autocrop(cams: list[Camera], canvas: Canvas, proxy_pixels: float = 0.5e6) -> Canvas:
    """The canvas cut to the largest rectangle every pixel of which some camera
    covers (found on a small proxy, then shrunk by a proxy pixel for safety)."""
    f = min(1.0, math.sqrt(proxy_pixels / (canvas.width * canvas.height)))
    pc = canvas.scaled(f)
    cov = coverage_mask(cams, pc)
    if not cov.any():
        return canvas
    x0, y0, x1, y1 = largest_filled_rectangle(cov)
    fx, fy = pc.width / canvas.width, pc.height / canvas.height
    X0 = min(canvas.width - 1, math.ceil((x0 + 1) / fx))
    Y0 = min(canvas.height - 1, math.ceil((y0 + 1) / fy))
    X1 = max(X0 + 1, math.floor((x1 - 1) / fx))
    Y1 = max(Y0 + 1, math.floor((y1 - 1) / fy))
    return canvas.cropped(X0, Y0, X1, Y1)
