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
