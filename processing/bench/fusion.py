"""python -m processing bench fusion: the broad fusion evaluation.

Bursts come from an independent generator (processing/bench/bursts.py) made
from many real photos (portraits, foliage, text, architecture, sky, texture)
at several noise levels, and go through the real stack pipeline
(process_stack: develop, align, flow, fuse, ...) as 16-bit PNG files. Per
case, against the ground truth (sRGB, 8 px border shaved), PSNR and SSIM of:

- bicubic: the reference frame upscaled with a cubic kernel;
- median: the seed's fusion without sharpening (align, one cubic resampling
  per frame, per-pixel median) - the safety net's floor;
- seed: the same with the unsharp mask whose amount (and radius) give the
  best PSNR for that very case (an oracle tuning: the strongest seed);
- default: `stack --no-upscale-model` with the default parameters.

--raw adds RAW bursts (RGGB mosaics, see bursts.make_burst) and compares the
fusion straight from the mosaic with develop-then-fuse on the same bursts.

One JSON object: per case and a summary (mean / min gain of the default over
bicubic, over the tuned seed and over the median; wins; mean SSIM).
--preset small runs in under 3 minutes on 2 cores; --preset full is the
evaluation of docs/sr.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from ..io.errors import InputError
from .bursts import BurstSpec, make_burst
from .common import emit, peak_rss_mb

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BORDER = 8


@dataclass(frozen=True)
class Photo:
    name: str
    kind: str  # portrait | foliage | text | architecture | sky | texture
    path: str  # relative to the data folder
    box: tuple[int, int, int, int] | None = None  # x, y, w, h cut before anything else
    reduce: float = 1.0  # area-reduce first (photos that are soft at 100 %)


PHOTOS = [
    Photo("lenna", "portrait", "sr/Set14/lenna.png"),
    Photo("barbara", "portrait", "sr/Set14/barbara.png"),
    Photo("man", "portrait", "sr/Set14/man.png"),
    Photo("b100-035", "portrait", "sr/B100/img_035.png"),
    Photo("b100-024", "portrait", "sr/B100/img_024.png"),
    Photo("b100-008", "foliage", "sr/B100/img_008.png"),
    Photo("b100-016", "foliage", "sr/B100/img_016.png"),
    Photo("b100-086", "foliage", "sr/B100/img_086.png"),
    Photo("ppt3", "text", "sr/Set14/ppt3.png"),
    Photo("comic", "text", "sr/Set14/comic.png"),
    Photo("b100-003", "architecture", "sr/B100/img_003.png"),
    Photo("b100-014", "architecture", "sr/B100/img_014.png"),
    Photo("b100-045", "architecture", "sr/B100/img_045.png"),
    Photo("b100-069", "architecture", "sr/B100/img_069.png"),
    Photo("b100-020", "sky", "sr/B100/img_020.png"),
    Photo("b100-067", "sky", "sr/B100/img_067.png"),
    Photo("meadow-sky", "sky", "photos/meadow_cubemap_2048x12288.jpg", (0, 4096, 2048, 2048), 4.0),
    Photo("saw", "texture", "photos/saw_2725x2225.jpg", None, 2.0),
    Photo("saw-wood", "texture", "photos/saw_2725x2225.jpg", (1500, 1200, 1200, 1000), 2.0),
    Photo("baboon", "texture", "sr/Set14/baboon.png"),
    Photo("zebra", "texture", "sr/Set14/zebra.png"),
]
SMALL = ["lenna", "b100-008", "ppt3", "b100-003", "b100-020"]
NOISE_FULL = "0.004,0.02,0.05"
NOISE_SMALL = "0.004,0.03"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=["small", "full"], default="small", help="small: < 3 min on 2 cores")
    p.add_argument("--photos", default=None, help="comma-separated photo names (default: the preset's)")
    p.add_argument("--noise", default=None, help="noise levels, sigma at full scale, linear (default: the preset's)")
    p.add_argument("--frames", type=int, default=None, help="frames per burst (small 10, full 20)")
    p.add_argument("--max-side", type=int, default=None, help="ground-truth crop side (small 192, full 256)")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--seed", type=int, default=20)
    p.add_argument("--raw", action="store_true", help="also RAW bursts: Bayer fusion against develop-then-fuse")
    p.add_argument("--no-rgb", action="store_true", help="with --raw: only the RAW comparison")
    p.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    p.add_argument(
        "--fuse-params",
        default=None,
        help="JSON of FuseParams fields for the default route (A/B runs), e.g. '{\"robust_k\": 4}'",
    )
    p.add_argument("--no-moving-object", action="store_true", help="bursts without the moving disc (static scenes)")


def load_photo(ph: Photo, data: Path) -> np.ndarray:
    from ..io.imageio import load_image

    img, _ = load_image(data / ph.path)
    if ph.box is not None:
        x, y, w, h = ph.box
        img = img[y : y + h, x : x + w]
    if ph.reduce > 1:
        h, w = img.shape[:2]
        img = cv2.resize(img, (int(w / ph.reduce), int(h / ph.reduce)), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img, np.float32)


def _score(img: np.ndarray, gt: np.ndarray) -> dict:
    from ..io.metrics import psnr, ssim

    return {"psnr": round(psnr(img, gt, BORDER), 3), "ssim": round(ssim(img, gt, BORDER), 4)}


def tuned_unsharp(img: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, dict]:
    """The unsharp mask (amount 0..4, radius 0.6..2.5) with the best PSNR."""
    from ..io.metrics import psnr

    best = (psnr(img, gt, BORDER), 0.0, 1.0, img)
    for radius in (0.6, 0.9, 1.3, 1.8, 2.5):
        blur = cv2.GaussianBlur(img, (0, 0), radius, borderType=cv2.BORDER_REFLECT)
        for amount in np.arange(0.1, 4.01, 0.1):
            out = np.clip(img + amount * (img - blur), 0.0, 1.0)
            v = psnr(out, gt, BORDER)
            if v > best[0]:
                best = (v, float(amount), radius, out)
    return best[3], {"amount": round(best[1], 2), "radius": best[2]}


def _stack(folder: str, scale: int, params) -> tuple[np.ndarray, dict]:
    from ..stack.pipeline import list_frames, process_stack

    t0 = time.perf_counter()
    res = process_stack(list_frames(folder), scale, params, upscale_model=False)
    info = {"frames_fused": res.metrics["frames_fused"], "seconds": round(time.perf_counter() - t0, 2)}
    if params.fuse.method == "kernel":
        info["deblur"] = res.metrics.get("deblur")
        info["safety_net"] = res.metrics.get("safety_net")
    return res.image, info


def rgb_case(ph: Photo, photo: np.ndarray, spec: BurstSpec, max_side: int, fuse_over: dict | None = None) -> dict:
    from ..io.imageio import write_image
    from ..stack.fuse import FuseParams
    from ..stack.pipeline import StackParams
    from ..stack.sharpen import SharpenParams

    burst = make_burst(photo, spec, max_side)
    gt = burst.gt
    row: dict = {"photo": ph.name, "kind": ph.kind, "noise": spec.noise, "frames": spec.frames}
    row["size"] = [gt.shape[1], gt.shape[0]]
    with tempfile.TemporaryDirectory() as td:
        for i, f in enumerate(burst.frames):
            write_image(Path(td) / f"f_{i:03d}.png", f)
        oh, ow = gt.shape[:2]
        bic = np.clip(cv2.resize(burst.frames[0], (ow, oh), interpolation=cv2.INTER_CUBIC), 0, 1)
        row["bicubic"] = _score(bic, gt)
        seed_params = StackParams().replace(fuse=FuseParams(method="naive"), sharpen=SharpenParams(amount=0))
        med, info = _stack(td, spec.scale, seed_params)
        row["median"] = {**_score(med, gt), **info}
        sharp, tune = tuned_unsharp(med, gt)
        row["seed_tuned"] = {**_score(sharp, gt), **tune}
        default = StackParams()
        if fuse_over:
            default = default.replace(fuse=default.fuse.replace(**fuse_over))
        out, info = _stack(td, spec.scale, default)
        row["default"] = {**_score(out, gt), **info}
    d = row["default"]["psnr"]
    row["gain_over_bicubic_db"] = round(d - row["bicubic"]["psnr"], 3)
    row["gain_over_seed_db"] = round(d - row["seed_tuned"]["psnr"], 3)
    row["gain_over_median_db"] = round(d - row["median"]["psnr"], 3)
    return row


def raw_case(ph: Photo, photo: np.ndarray, spec: BurstSpec, max_side: int) -> dict:
    """Bayer fusion against develop-then-fuse on the same RAW burst."""
    from ..stack.bayer import RawFrame, fuse_raw_burst

    burst = make_burst(photo, spec, max_side, raw=True)
    gt = burst.gt
    wb = np.array(burst.meta["white_balance"], np.float32)
    row: dict = {"photo": ph.name, "kind": ph.kind, "noise": spec.noise, "frames": spec.frames, "raw": True}
    frames = [RawFrame(m, "RGGB", 0.0, 1.0, wb) for m in burst.frames]
    t0 = time.perf_counter()
    dtf = develop_then_fuse(frames, spec.scale)
    row["develop_then_fuse"] = {**_score(dtf, gt), "seconds": round(time.perf_counter() - t0, 2)}
    t0 = time.perf_counter()
    out = fuse_raw_burst(frames, spec.scale)
    row["bayer"] = {**_score(out, gt), "seconds": round(time.perf_counter() - t0, 2)}
    row["gain_bayer_over_develop_db"] = round(row["bayer"]["psnr"] - row["develop_then_fuse"]["psnr"], 3)
    return row


def develop_then_fuse(frames, scale: int) -> np.ndarray:
    """Demosaic each RAW frame (OpenCV's edge-aware Bayer), encode, fuse
    through the stack pipeline (the route RAW files take today)."""
    from ..io.imageio import write_image
    from ..stack.bayer import demosaic

    with tempfile.TemporaryDirectory() as td:
        for i, fr in enumerate(frames):
            write_image(Path(td) / f"f_{i:03d}.png", demosaic(fr, encode=True))
        from ..stack.pipeline import StackParams

        out, _ = _stack(td, scale, StackParams())
    return out


def _summary(rows: list[dict]) -> dict:
    if not rows:
        return {}
    g_seed = [r["gain_over_seed_db"] for r in rows]
    g_bic = [r["gain_over_bicubic_db"] for r in rows]
    g_med = [r["gain_over_median_db"] for r in rows]
    worst = min(rows, key=lambda r: r["gain_over_seed_db"])
    return {
        "cases": len(rows),
        "mean_gain_over_bicubic_db": round(float(np.mean(g_bic)), 3),
        "mean_gain_over_seed_db": round(float(np.mean(g_seed)), 3),
        "min_gain_over_seed_db": round(float(np.min(g_seed)), 3),
        "worst_case": f"{worst['photo']} noise {worst['noise']}",
        "wins_over_seed": sum(1 for g in g_seed if g > 0),
        "cases_with_1db_over_seed": sum(1 for g in g_seed if g >= 1.0),
        "min_gain_over_median_db": round(float(np.min(g_med)), 3),
        "mean_ssim": {
            k: round(float(np.mean([r[k]["ssim"] for r in rows])), 4)
            for k in ("bicubic", "median", "seed_tuned", "default")
        },
        "ssim_wins_over_seed": sum(1 for r in rows if r["default"]["ssim"] > r["seed_tuned"]["ssim"]),
    }


def run(args: argparse.Namespace) -> int:
    small = args.preset == "small"
    names = args.photos.split(",") if args.photos else (SMALL if small else [p.name for p in PHOTOS])
    by_name = {p.name: p for p in PHOTOS}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"bench fusion: unknown photo(s) {unknown}; known: {sorted(by_name)}")
    noises = [float(x) for x in (args.noise or (NOISE_SMALL if small else NOISE_FULL)).split(",")]
    frames = args.frames or (10 if small else 20)
    max_side = args.max_side or (192 if small else 256)
    if not args.data.is_dir():
        raise SystemExit(f"bench fusion: no data folder {args.data}")
    fuse_over = json.loads(args.fuse_params) if args.fuse_params else None
    t0 = time.perf_counter()
    rows: list[dict] = []
    raw_rows: list[dict] = []
    failed: list[dict] = []
    for k, name in enumerate(names):
        ph = by_name[name]
        photo = load_photo(ph, args.data)
        for j, noise in enumerate(noises):
            spec = BurstSpec(
                frames=frames,
                scale=args.scale,
                noise=noise,
                seed=args.seed + 100 * k + j,
                moving_object=not args.no_moving_object,
            )
            if not args.no_rgb:
                try:
                    rows.append(rgb_case(ph, photo, spec, max_side, fuse_over))
                except InputError as e:  # e.g. too few frames align: reported, not hidden
                    failed.append({"photo": name, "noise": noise, "error": str(e.reason)})
                print(f"bench fusion: {name} noise {noise} done", file=sys.stderr, flush=True)
            if args.raw:
                try:
                    raw_rows.append(raw_case(ph, photo, replace(spec, moving_object=False), max_side))
                except InputError as e:
                    failed.append({"photo": name, "noise": noise, "raw": True, "error": str(e.reason)})
    out: dict = {
        "bench": "fusion",
        "preset": args.preset,
        "scale": args.scale,
        "frames": frames,
        "max_side": max_side,
        "noise": noises,
        "seed": args.seed,
        "moving_object": not args.no_moving_object,
        "fuse_params": fuse_over,
        "cases": rows,
        "failed": failed,
        "summary": _summary(rows),
    }
    if args.raw:
        gains = [r["gain_bayer_over_develop_db"] for r in raw_rows]
        out["raw_cases"] = raw_rows
        out["raw_summary"] = {
            "cases": len(raw_rows),
            "mean_gain_bayer_over_develop_db": round(float(np.mean(gains)), 3) if gains else None,
            "min_gain_bayer_over_develop_db": round(float(np.min(gains)), 3) if gains else None,
        }
    out["seconds_total"] = round(time.perf_counter() - t0, 1)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    emit(out)
    return 0
