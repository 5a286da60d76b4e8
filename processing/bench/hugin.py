"""Hugin's command-line chain on a set of photos, for `bench stitch --compare-hugin`.

The chain is the one a Hugin user's "Assistant" runs, in Debian's hugin-tools:
pto_gen -> cpfind --multirow --celeste -> cpclean -> autooptimiser -a -m -l -s
-> pano_modify --projection --canvas=AUTO --crop=AUTO -> nona -m TIFF_m (one
remapped layer per image, cropped, offsets in the TIFF tags) -> enblend.
nona renders only the images of the control-point graph's main component
(the others would be pasted at pto_gen's initial guess), and its layers are
kept: the ghost measure compares the result with them.

The chain's seconds and peak memory are those of the whole process tree
(the sum of the resident sets of every running process of the chain,
sampled every 50 ms).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TOOLS = ("pto_gen", "cpfind", "cpclean", "autooptimiser", "pano_modify", "nona", "enblend")
#: pano_modify --projection numbers
PTO_PROJECTIONS = {"rectilinear": 0, "cylindrical": 1, "equirectangular": 2}


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def ensure_hugin(install: bool = True) -> str | None:
    """None when the Hugin tools are there (installing Debian's hugin-tools and
    enblend with apt-get when they are not and apt is available as root);
    otherwise the reason they are not, for the bench's skip message."""
    if not missing_tools():
        return None
    if install and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "hugin-tools", "enblend"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
    miss = missing_tools()
    if not miss:
        return None
    how = "apt-get install hugin-tools enblend failed" if shutil.which("apt-get") else "no apt-get here"
    return f"Hugin tools missing ({', '.join(miss)}); {how}"


@dataclass
class TreeRun:
    seconds: float = 0.0
    peak_mb: float = 0.0
    cpu_seconds: float = 0.0
    error: str | None = None
    steps: dict[str, float] = field(default_factory=dict)


def run_chain(commands: list[list[str]], cwd: Path, log: Path) -> TreeRun:
    """Run commands one after the other; wall seconds, CPU seconds and the peak
    of the summed RSS of each command's process tree."""
    import psutil

    res = TreeRun()
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        for cmd in commands:
            ts = time.perf_counter()
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
            proc = subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
            root = psutil.Process(proc.pid)
            cpu: dict[int, float] = {}
            while proc.poll() is None:
                with contextlib.suppress(psutil.Error):
                    procs = [root, *root.children(recursive=True)]
                    rss = 0
                    for p in procs:
                        with contextlib.suppress(psutil.Error):
                            rss += p.memory_info().rss
                            t = p.cpu_times()
                            cpu[p.pid] = t.user + t.system + t.children_user + t.children_system
                    res.peak_mb = max(res.peak_mb, rss / 2**20)
                time.sleep(0.05)
            res.cpu_seconds += sum(cpu.values())
            res.steps[cmd[0]] = round(res.steps.get(cmd[0], 0.0) + time.perf_counter() - ts, 2)
            if proc.returncode != 0:
                res.error = f"{cmd[0]} exited with {proc.returncode} (see {log})"
                break
    res.seconds = time.perf_counter() - t0
    return res


# ------------------------------------------------------------- the pto file


@dataclass
class Pto:
    projection: int
    width: int
    height: int
    hfov: float
    crop: tuple[int, int, int, int]  # x0, x1, y0, y1 of the output in the full canvas
    images: list[dict[str, str]]
    pairs: list[tuple[int, int]]  # control points' image pairs

    def main_component(self) -> list[int]:
        """Images of the largest connected component of the control-point graph."""
        n = len(self.images)
        parent = list(range(n))

        def find(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for a, b in self.pairs:
            parent[find(a)] = find(b)
        comps: dict[int, list[int]] = {}
        for k in range(n):
            comps.setdefault(find(k), []).append(k)
        best = max(comps.values(), key=len)
        return sorted(best) if len(best) > 1 or not self.pairs else []

    def lens(self, k: int = 0) -> dict[str, float]:
        """Image k's lens parameters (a, b, c, d, e, v); '=' links resolved to image 0."""
        out = {}
        for key in ("a", "b", "c", "d", "e", "v"):
            v = self.images[k].get(key, "0")
            if v.startswith("="):
                v = self.images[int(v[1:])].get(key, "0")
            out[key] = float(v)
        return out


def _fields(line: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for tok in line.split()[1:]:
        if tok.startswith('n"'):
            out["n"] = tok[2:].rstrip('"')
            continue
        # keys are letters (v, Ra, Eev, TrX, ...); the value (or "=k", a link) follows
        i = 0
        while i < len(tok) and tok[i].isalpha():
            i += 1
        if i and tok[i:]:
            out[tok[:i]] = tok[i:]
    return out


def read_pto(path: Path) -> Pto:
    p: dict[str, str] = {}
    images: list[dict[str, str]] = []
    pairs = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("p "):
            p = _fields(line)
        elif line.startswith("i "):
            images.append(_fields(line))
        elif line.startswith("c "):
            f = _fields(line)
            a, b = int(f["n"]), int(f["N"])
            if a != b:
                pairs.append((a, b))
    w, h = int(p["w"]), int(p["h"])
    crop = (0, w, 0, h)
    if "S" in p:
        x0, x1, y0, y1 = (int(v) for v in p["S"].split(","))
        crop = (x0, x1, y0, y1)
    return Pto(int(p.get("f", "2")), w, h, float(p.get("v", "360")), crop, images, pairs)


def pixel_rays(pto: Pto, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Rays (world: x right, y down, z forward) of pixels of Hugin's cropped
    output (x, y relative to the crop's corner)."""
    X = np.asarray(xs, np.float64) + pto.crop[0] - (pto.width - 1) / 2
    Y = (pto.height - 1) / 2 - (np.asarray(ys, np.float64) + pto.crop[2])
    hf = math.radians(pto.hfov)
    if pto.projection == 0:  # rectilinear
        f = pto.width / 2 / math.tan(hf / 2)
        v = np.stack([X / f, -Y / f, np.ones_like(X)], -1)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)
    s = pto.width / hf
    lon = X / s
    lat = Y / s if pto.projection == 2 else np.arctan(Y / s)
    cl = np.cos(lat)
    return np.stack([cl * np.sin(lon), -np.sin(lat), cl * np.cos(lon)], -1)


def px_per_rad(pto: Pto) -> float:
    hf = math.radians(pto.hfov)
    return pto.width / 2 / math.tan(hf / 2) if pto.projection == 0 else pto.width / hf


# ------------------------------------------------------------------ the run


@dataclass
class HuginResult:
    run: TreeRun
    pto: Pto | None = None
    out: Path | None = None
    layers: list[tuple[int, Path]] = field(default_factory=list)  # (image index, layer tif)
    placed: int = 0
    total: int = 0


def run_hugin(
    files: list[Path], work: Path, projection: str = "equirectangular", hfov: float | None = None
) -> HuginResult:
    """Hugin's chain on ``files`` in ``work``; ``hfov`` (degrees) where the
    photos carry no EXIF focal length."""
    work.mkdir(parents=True, exist_ok=True)
    log = work / "hugin.log"
    log.write_text("")
    pto = "project.pto"
    gen = ["pto_gen", "-o", pto] + (["-f", f"{hfov:.4f}"] if hfov else []) + [str(f) for f in files]
    first = [
        gen,
        ["cpfind", "--multirow", "--celeste", "-o", pto, pto],
        ["cpclean", "-o", pto, pto],
        ["autooptimiser", "-a", "-m", "-l", "-s", "-o", pto, pto],
        [
            "pano_modify",
            f"--projection={PTO_PROJECTIONS[projection]}",
            "--canvas=AUTO",
            "--crop=AUTO",
            "-o",
            pto,
            pto,
        ],
    ]
    run = run_chain(first, work, log)
    res = HuginResult(run, total=len(files))
    if run.error:
        return res
    p = read_pto(work / pto)
    res.pto = p
    main = p.main_component()
    res.placed = len(main)
    if not main:
        run.error = "no control points: nothing placed"
        return res
    # only the main component: nona would paste the others at their initial guess
    sel = [a for k in main for a in ("-i", str(k))]
    second = [
        ["nona", "-m", "TIFF_m", "-o", "layer_", *sel, pto],
    ]
    r2 = run_chain(second, work, log)
    layers = sorted(work.glob("layer_*.tif"))
    idx = [int(p_.stem.split("_")[-1]) for p_ in layers]
    r3 = TreeRun()
    if not r2.error and layers:
        r3 = run_chain([["enblend", "-o", "result.tif", *[str(x.name) for x in layers]]], work, log)
    for r in (r2, r3):
        run.seconds += r.seconds
        run.cpu_seconds += r.cpu_seconds
        run.peak_mb = max(run.peak_mb, r.peak_mb)
        run.steps.update(r.steps)
        run.error = run.error or r.error
    res.layers = list(zip(idx, layers, strict=True))
    if (work / "result.tif").is_file():
        res.out = work / "result.tif"
    return res


def reuse_hugin(files: list[Path], work: Path) -> HuginResult:
    """Hugin's results of an earlier run (its work folder: project.pto,
    layer_*.tif, result.tif) without running the chain; no seconds / memory."""
    res = HuginResult(TreeRun(), total=len(files))
    pto = work / "project.pto"
    if not pto.is_file():
        res.run.error = f"{pto} not found"
        return res
    res.pto = read_pto(pto)
    res.placed = len(res.pto.main_component())
    layers = sorted(work.glob("layer_*.tif"))
    res.layers = [(int(p_.stem.split("_")[-1]), p_) for p_ in layers]
    if (work / "result.tif").is_file():
        res.out = work / "result.tif"
    return res


def tiff_offset(path: Path) -> tuple[int, int]:
    """A nona / enblend TIFF's position in the full canvas (XPosition x XResolution)."""
    import tifffile

    with tifffile.TiffFile(path) as t:
        tags = t.pages[0].tags

        def pos(name: str, res: str) -> int:
            if name not in tags:
                return 0
            n, d = tags[name].value
            rn, rd = tags[res].value if res in tags else (1, 1)
            return round(n / d * rn / rd)

        return pos("XPosition", "XResolution"), pos("YPosition", "YResolution")


def read_rgba_tiff(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """float RGB in [0, 1] and alpha of an (8 or 16 bit) RGBA TIFF (OpenCV
    decodes nona's and enblend's LZW; tifffile would need imagecodecs)."""
    import cv2

    a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if a is None:
        raise ValueError(f"{path}: unreadable TIFF")
    if a.ndim == 2:  # grey (budapest): nona / enblend keep one channel
        a = a[:, :, None]
    if a.shape[2] <= 2:  # grey (+ alpha)
        a = np.concatenate([np.repeat(a[:, :, :1], 3, axis=2), a[:, :, 1:]], axis=2)
    else:
        a = a[..., [2, 1, 0, 3]] if a.shape[2] == 4 else a[..., ::-1]
    mx = 255.0 if a.dtype == np.uint8 else 65535.0
    rgb = a[..., :3].astype(np.float32) / mx
    alpha = a[..., 3].astype(np.float32) / mx if a.shape[-1] == 4 else np.ones(a.shape[:2], np.float32)
    return rgb, alpha


# ------------------------------------------- Hugin's camera model in Python
#
# Hugin's image model (rectilinear lenses, "f0"), checked against Hugin's own
# pano_trafo to 1e-4 degrees (tests/processing/stitch/test_hugin_model.py):
# - focal f = (w / 2) / tan(v / 2), principal point at the image centre
#   ((w - 1) / 2, (h - 1) / 2) plus (d, e) px (right, down: the same sign as
#   Camera.d / Camera.e);
# - radial: a source (distorted) radius r_s = (a r^3 + b r^2 + c r + 1 - a - b - c) r
#   of the ideal radius r, both in units of half the smaller image side;
# - camera-to-world rotation Ry(yaw) Rx(pitch) Rz(roll) in pixel_rays' world
#   frame (x right, y down, z forward).


def control_points(path: Path) -> list[tuple[int, float, float, int, float, float]]:
    """A pto's control points between two different images: (n, x, y, N, X, Y)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("c "):
            f = _fields(line)
            a, b = int(f["n"]), int(f["N"])
            if a != b:
                out.append((a, float(f["x"]), float(f["y"]), b, float(f["X"]), float(f["Y"])))
    return out


def hugin_focal(lens: dict[str, float], width: int) -> float:
    return width / 2 / math.tan(math.radians(lens["v"]) / 2)


def hugin_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world rotation of an image line's y, p, r (degrees)."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    cy, sy, cp, sp, cr, sr = math.cos(y), math.sin(y), math.cos(p), math.sin(p), math.cos(r), math.sin(r)
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    Rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return Ry @ Rx @ Rz


def _radial(lens: dict[str, float], rho: np.ndarray) -> np.ndarray:
    a, b, c = lens["a"], lens["b"], lens["c"]
    return (a * rho**3 + b * rho**2 + c * rho + 1 - a - b - c) * rho


def hugin_radius(lens: dict[str, float], width: int, height: int, t: np.ndarray) -> np.ndarray:
    """Source radius (px from the principal point) of a ray at tan(angle to the axis) = t."""
    n = min(width, height) / 2
    return n * _radial(lens, hugin_focal(lens, width) * np.asarray(t, np.float64) / n)


def hugin_image_rays(pto: Pto, k: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """World rays (pixel_rays' frame) of source pixels (x, y) of image k."""
    im = pto.images[k]
    lens = pto.lens(k)
    w, h = int(im["w"]), int(im["h"])
    n = min(w, h) / 2
    f = hugin_focal(lens, w)
    dx = np.asarray(xs, np.float64) - (w - 1) / 2 - lens["d"]
    dy = np.asarray(ys, np.float64) - (h - 1) / 2 - lens["e"]
    rs = np.hypot(dx, dy) / n
    rho = rs.copy()
    for _ in range(30):  # invert the radial polynomial (Newton)
        a, b, c = lens["a"], lens["b"], lens["c"]
        g = _radial(lens, rho) - rs
        dg = 4 * a * rho**3 + 3 * b * rho**2 + 2 * c * rho + 1 - a - b - c
        rho = rho - g / dg
    s = np.where(rs > 1e-12, rho / np.maximum(rs, 1e-12), 1.0) / f
    v = np.stack([dx * s, dy * s, np.ones_like(dx)], -1)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    R = hugin_rotation(float(im.get("y", 0)), float(im.get("p", 0)), float(im.get("r", 0)))
    return v @ R.T


def lens_agreement(cam: Any, lens: dict[str, float]) -> dict[str, float]:
    """Terapan's lens (a Camera: focal, k1, k2, d, e) against Hugin's (v, a,
    b, c, d, e) of an image of the same size: the radial curves, source
    radius as a function of the ray's angle to the optical axis (focal and
    distortion together), compared out to the image corner, and the
    principal point shifts."""
    w, h = cam.width, cam.height
    fh = hugin_focal(lens, w)
    t = np.linspace(0, math.hypot(w, h) / 2 / min(fh, cam.focal), 200)
    rt = cam.focal * t * (1 + cam.k1 * t**2 + cam.k2 * t**4)
    rh = hugin_radius(lens, w, h, t)
    # in the image: only radii up to the corner
    inside = (rt <= math.hypot(w, h) / 2) | (rh <= math.hypot(w, h) / 2)
    diff = np.abs(rt - rh)[inside]
    return {
        "focal_terapan": round(cam.focal, 1),
        "focal_hugin": round(fh, 1),
        "radial_max_diff_px": round(float(diff.max()), 2),
        "radial_diff_at_half_px": round(float(np.interp(min(w, h) / 2 / fh, t, np.abs(rt - rh))), 2),
        "d_terapan": round(cam.d, 2),
        "e_terapan": round(cam.e, 2),
        "d_hugin": round(lens["d"], 2),
        "e_hugin": round(lens["e"], 2),
    }
