"""python -m processing bench sky [--set meadow|durlach]: the sky merge.

- meadow: ground views (a ring at the horizon) and a separate sky capture
  (a ring at 40 degrees and the zenith, 0.7x the exposure) cut from the real
  360-degree cube map. The ground is stitched, the sky merged
  (stitch.layers.merge_sky_capture); against the truth: PSNR on covered
  pixels (ground alone, merged, the filled sky alone), coverage, the
  exposure gain found, and where the seam lies: the truth's mean gradient
  along the transition band relative to all covered pixels, and the share of
  the band on strong structure (top 10 % gradients). For comparison, all
  views stitched together in one run.
- durlach: the real full sphere split by rows into ground (pitch <= 5
  degrees, 16 images) and sky (pitch ~40 and 72 degrees, 9 images): coverage
  and clipped fraction before and after the merge, gain, seam gradient
  measured on the merged image itself, seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .common import emit
from .stitch import SHARED, psnr, read_rgba

DURLACH_SKY = ("378", "379", "380", "381", "382", "383", "384", "385", "386")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", default="meadow", choices=["meadow", "durlach"])
    p.add_argument("--work", help="work folder (default: a temporary one)")
    p.add_argument("--face", type=int, default=512, help="meadow: cube face size")
    p.add_argument("--view", type=int, default=480, help="meadow: view width (px)")
    p.add_argument("--max-mp", type=float, default=20.0, help="durlach: output megapixels")


def _gradient(rgb: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(np.ascontiguousarray(rgb, np.float32), cv2.COLOR_RGB2GRAY)
    return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3))


def seam_band(composite: Path) -> np.ndarray:
    """Output pixels in the ground/sky transition (0.05 < sky weight < 0.95)."""
    from ..stitch.layers import load_sky, proxy_to_block

    sm = load_sky(composite)
    cv = sm.layout.canvas
    w = proxy_to_block(sm.weights, cv, (0, 0, cv.width, cv.height))
    return (w > 0.05) & (w < 0.95)


def seam_structure(grad: np.ndarray, band: np.ndarray, covered: np.ndarray, margin_px: int) -> dict[str, Any]:
    """Where the ground/sky transition lies, on the ground's covered pixels:
    the band's mean gradient relative to all covered pixels and the share of
    the band on the strongest 10 % of gradients (structure, e.g. buildings).
    Reported for the whole band and for the part chosen inside the ground's
    sky (more than MARGIN_PX from the ground's own border; nearer, it is the
    cut along the end of the ground's coverage)."""
    strong = float(np.percentile(grad[covered], 90))
    mean = max(float(grad[covered].mean()), 1e-9)
    k = 2 * margin_px + 1
    inner = cv2.erode(covered.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
    out: dict[str, Any] = {}
    for name, b in (("seam", band & covered), ("sky_seam", band & inner)):
        out[f"{name}_px"] = int(b.sum())
        out[f"{name}_gradient_ratio"] = round(float(grad[b].mean() / mean), 3) if b.any() else float("nan")
        out[f"{name}_on_structure"] = round(float((grad[b] > strong).mean()), 4) if b.any() else float("nan")
    return out


def _margin(composite: Path) -> int:
    from ..stitch.layers import SkyMergeParams, load_sky

    cv = load_sky(composite).layout.canvas
    p = SkyMergeParams()
    return math.ceil(math.radians(p.border_deg + p.feather_deg) * cv.sv) + 2


def meadow_truth(views_dir: Path, layout_path: Path, cube: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The true panorama on the stitched canvas (frames aligned by the cameras)."""
    from ..stitch.pipeline import layout_from_json
    from ..stitch.project import canvas_lonlat, rotation_from_ypr
    from ..stitch.registration import kabsch
    from ..synth.synth_pano import sample_cube

    truth = json.loads((views_dir / "truth.json").read_text())
    lay = layout_from_json(layout_path)
    by_name = {Path(L.path).name: L for L in lay.layers}
    est = [by_name[t["file"]].cam.rot for t in truth if t["file"] in by_name]
    tru = [rotation_from_ypr(t["yaw"], t["pitch"], t["roll"]) for t in truth if t["file"] in by_name]
    Q = kabsch(np.concatenate(est, axis=1).T, np.concatenate(tru, axis=1).T)
    H, W = shape
    lon, lat = canvas_lonlat(np.arange(W), np.arange(H), lay.canvas)
    cl = np.cos(lat)[:, None]
    rays = np.stack([cl * np.sin(lon)[None, :], -np.sin(lat)[:, None] * np.ones((1, W)), cl * np.cos(lon)[None, :]], -1)
    return sample_cube(cube, rays @ Q.T)


def make_meadow_captures(work: Path, cube: np.ndarray, view: int) -> tuple[Path, Path]:
    """Ground views (horizon ring) and a sky capture (40-degree ring + zenith, 0.7x exposure)."""
    from ..synth.synth_pano import cube_views, write_views

    size = (view, view * 3 // 4)
    ground = cube_views(cube, size, 65.0, 40.0, pitches=(0.0,), zenith=False, nadir=False, exposure_sigma=0.05)
    sky = cube_views(cube, size, 65.0, 50.0, pitches=(40.0,), zenith=True, nadir=False, exposure_sigma=0.05, seed=1)
    for v in sky:
        v.image = np.clip(v.image * 0.7, 0, 1)
        v.name = "sky_" + v.name
    return write_views(ground, work / "ground"), write_views(sky, work / "sky")


def meadow_case(work: Path, face: int = 512, view: int = 480, joint: bool = True) -> dict[str, Any]:
    """Stitch the meadow ground, merge the sky; measure against the truth."""
    from ..stitch.layers import merge_sky_capture
    from ..stitch.pipeline import StitchParams, stitch_files
    from ..stitch.registration import load_placements
    from ..synth.synth_pano import load_cube

    cube = load_cube(SHARED / "photos" / "meadow_cubemap_2048x12288.jpg", face)
    gd, sd = make_meadow_captures(work, cube, view)
    params = StitchParams(projection="equirectangular", wrap=True, nfeatures=1200, bits=16)
    gfiles, sfiles = sorted(gd.glob("view_*.png")), sorted(sd.glob("sky_*.png"))
    t0 = time.perf_counter()
    stitch_files(gfiles, work / "ground.tif", params, load_placements(gd / "rig.csv"))
    t1 = time.perf_counter()
    info = merge_sky_capture(work / "ground.tif", sfiles, work / "merged.tif", load_placements(sd / "rig.csv"))
    t2 = time.perf_counter()
    g_rgb, g_alpha = read_rgba(work / "ground.tif")
    m_rgb, m_alpha = read_rgba(work / "merged.tif")
    gt = meadow_truth(gd, work / "ground.tif.layout.json", cube, g_alpha.shape)
    gcov, mcov = g_alpha > 0.999, m_alpha > 0.999
    filled = mcov & (g_alpha <= 0.001)
    out: dict[str, Any] = {
        "set": "meadow",
        "canvas": [int(g_alpha.shape[1]), int(g_alpha.shape[0])],
        "ground_images": len(gfiles),
        "sky_images": len(sfiles),
        "sky_placed": info["placed"],
        "exposure_gain": info["exposure_gain"],
        "coverage_ground": round(float(gcov.mean()), 4),
        "coverage_merged": round(float(mcov.mean()), 4),
        "psnr_ground_db": round(psnr(g_rgb, gt, gcov), 2),
        "psnr_merged_db": round(psnr(m_rgb, gt, mcov), 2),
        "psnr_filled_sky_db": round(psnr(m_rgb, gt, filled), 2),
        "psnr_merged_db_global_gain": psnr_global_gain(m_rgb, gt, mcov),
        "seconds_ground": round(t1 - t0, 2),
        "seconds_sky_merge": round(t2 - t1, 2),
    }
    out.update(seam_structure(_gradient(gt), seam_band(work / "merged.tif"), gcov, _margin(work / "merged.tif")))
    if joint:
        rig = {**load_placements(gd / "rig.csv"), **load_placements(sd / "rig.csv")}
        t3 = time.perf_counter()
        stitch_files(gfiles + sfiles, work / "joint.tif", params, rig)
        j_rgb, j_alpha = read_rgba(work / "joint.tif")
        gtj = meadow_truth(gd, work / "joint.tif.layout.json", cube, j_alpha.shape)
        jcov = j_alpha > 0.999
        out["joint_stitch"] = {
            "coverage": round(float(jcov.mean()), 4),
            "psnr_db": round(psnr(j_rgb, gtj, jcov), 2),
            "psnr_db_global_gain": psnr_global_gain(j_rgb, gtj, jcov),
            "seconds": round(time.perf_counter() - t3, 2),
        }
    return out


def psnr_global_gain(rgb: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    """PSNR after one least-squares per-channel gain (the overall exposure
    level is a free choice of a stitcher: gains are relative)."""
    g = np.array([(gt[mask][:, c] * rgb[mask][:, c]).sum() / max((rgb[mask][:, c] ** 2).sum(), 1e-9) for c in range(3)])
    return round(psnr(np.clip(rgb * g, 0, 1), gt, mask), 2)


def clipped(rgb: np.ndarray, covered: np.ndarray) -> float:
    return round(float((rgb[covered].min(axis=1) >= 254 / 255).mean()), 4)


def durlach_case(work: Path, max_mp: float = 20.0) -> dict[str, Any]:
    from ..stitch.layers import merge_sky_capture
    from ..stitch.pipeline import StitchParams, stitch_files

    d = SHARED / "panoramas" / "durlach"
    files = sorted(d.glob("P*.JPG"))
    sky = [p for p in files if p.stem[-3:] in DURLACH_SKY]
    ground = [p for p in files if p not in sky]
    params = StitchParams(projection="equirectangular", wrap=True, max_output_mp=max_mp)
    t0 = time.perf_counter()
    res = stitch_files(ground, work / "ground.tif", params)
    t1 = time.perf_counter()
    info = merge_sky_capture(work / "ground.tif", sky, work / "merged.tif")
    t2 = time.perf_counter()
    g_rgb, g_alpha = read_rgba(work / "ground.tif")
    m_rgb, m_alpha = read_rgba(work / "merged.tif")
    gcov, mcov = g_alpha > 0.999, m_alpha > 0.999
    inputs = []
    for p in files:
        from ..io.imageio import load_image

        img, _ = load_image(p)
        inputs.append(
            float((cv2.resize(img, (400, 300), interpolation=cv2.INTER_AREA).min(axis=2) >= 254 / 255).mean())
        )
    out: dict[str, Any] = {
        "set": "durlach",
        "canvas": [res.width, res.height],
        "ground_placed": f"{res.placed}/{len(ground)}",
        "sky_placed": f"{info['placed']}/{len(sky)}",
        "exposure_gain": info["exposure_gain"],
        "coverage_ground": round(float(gcov.mean()), 4),
        "coverage_merged": round(float(mcov.mean()), 4),
        "clipped_inputs": round(float(np.mean(inputs)), 4),
        "clipped_ground": clipped(g_rgb, gcov),
        "clipped_merged": clipped(m_rgb, mcov),
        "seconds_ground": round(t1 - t0, 2),
        "seconds_sky_merge": round(t2 - t1, 2),
    }
    # no truth here: the gradient of the ground composite itself (its buildings)
    out.update(seam_structure(_gradient(g_rgb), seam_band(work / "merged.tif"), gcov, _margin(work / "merged.tif")))
    return out


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.set == "meadow":
            res = meadow_case(work, args.face, args.view)
        else:
            res = durlach_case(work, args.max_mp)
        emit(res)
    return 0 if not math.isnan(float(res.get("seam_gradient_ratio", 0.0))) else 1
