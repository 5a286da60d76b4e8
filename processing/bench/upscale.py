"""python -m processing bench upscale: upscaling settings against ground truth.

Ground truth: SR-set photos (and the sharp saw photo), degraded the way real
inputs are (clean bicubic, sensor noise, optical blur, blur+noise+JPEG) and
downscaled by the scale. Every setting (pre-downscale 0/25/50 %, iterations
1/2, auto) upscales the degraded input; PSNR/SSIM on Y against the truth.

--route: which route gives the best x4 from a burst: fusion at x1 then the
model x4, or fusion at x2 then the model x2 (the stack pipeline's default),
with fusion alone at x4 and single-frame routes for reference.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import emit, peak_rss_mb

SHARED = Path(os.environ.get("TERAPAN_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))

SETTINGS = [(0.0, 1), (25.0, 1), (50.0, 1), (0.0, 2), (25.0, 2), (50.0, 2)]
DEFAULT = (0.0, 1)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--images", type=int, default=4, help="ground-truth images (from Set14, plus the saw photo)")
    p.add_argument("--crop", type=int, default=384, help="ground-truth crop side (HR px)")
    p.add_argument("--weights", help="x{scale} weights (default: shipped)")
    p.add_argument("--route", action="store_true", help="burst routes: fuse x1 + model x4 vs fuse x2 + model x2")
    p.add_argument("--frames", type=int, default=8, help="burst frames for --route")
    p.add_argument(
        "--x2-weights",
        default="",
        help="--route: comma-separated x2 weights also tried after the x2 fusion (e.g. a fusion-tuned model)",
    )
    p.add_argument(
        "--generator",
        choices=("synth", "bench", "both"),
        default="synth",
        help="--route: bursts by the project's generator (synth), the fusion bench's independent one, or both",
    )
    p.add_argument(
        "--make-fusion-pairs",
        metavar="OUT",
        help="write training pairs for a fusion-tuned x2 model instead: the x2 fusion of a synthetic x4 burst "
        "of each T91 / BSD200 photo (NAME_lr.png) beside the photo (NAME_hr.png), for train-edsr --pairs",
    )
    p.add_argument("--data", default=str(SHARED))


def _to8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def _truths(data: Path, n: int, crop: int, scale: int) -> list[tuple[str, np.ndarray]]:
    from ..upscale.train import list_images, read_rgb8

    out = []
    saw = data / "photos" / "saw_2725x2225.jpg"
    if saw.is_file():
        im = read_rgb8(saw)
        h, w = im.shape[:2]
        out.append(("saw", im[h // 2 - crop // 2 : h // 2 + crop // 2, w // 2 - crop // 2 : w // 2 + crop // 2]))
    for p in list_images([data / "sr" / "Set14"])[: max(0, n - len(out))]:
        im = read_rgb8(p)
        h, w = im.shape[:2]
        c = min(crop, h, w) // scale * scale
        y0, x0 = (h - c) // 2, (w - c) // 2
        out.append((p.stem, im[y0 : y0 + c, x0 : x0 + c]))
    return out


def _degrade(hr: np.ndarray, scale: int, kind: str, seed: int) -> np.ndarray:
    """Float LR from uint8 HR: bicubic decimation after optical blur; noise/JPEG on LR."""
    import cv2

    from ..upscale.train import bicubic_down, jpeg

    rng = np.random.default_rng(seed)
    x = hr
    if kind in ("blur", "blur_noise_jpeg"):
        x = cv2.GaussianBlur(hr, (0, 0), 0.6 * scale)  # 0.6 LR px of extra optical blur
    lr = bicubic_down(x, scale).astype(np.float32) / 255.0
    if kind in ("noise", "blur_noise_jpeg", "heavy_noise"):
        sigma = 0.05 if kind == "heavy_noise" else 0.02
        lr = np.clip(lr + rng.normal(0, sigma, lr.shape).astype(np.float32), 0, 1)
    if kind == "blur_noise_jpeg":
        lr = jpeg(_to8(lr), 80).astype(np.float32) / 255.0
    return lr


def _score(sr: np.ndarray, hr: np.ndarray, scale: int) -> tuple[float, float]:
    from ..upscale.train import psnr_y, ssim_y

    s8 = _to8(sr)
    return psnr_y(s8, hr, scale), ssim_y(s8, hr, scale)


def _settings_bench(args: argparse.Namespace) -> dict[str, Any]:
    from ..upscale.train import bicubic_up
    from ..upscale.upscale import UpscaleParams, choose_auto, upscale_array

    s = args.scale
    base = UpscaleParams(scale=s, weights=args.weights)
    truths = _truths(Path(args.data), args.images, args.crop, s)
    conds = ["clean", "noise", "heavy_noise", "blur", "blur_noise_jpeg"]
    names = [f"pre{int(p)}_it{n}" for p, n in SETTINGS] + ["auto", "bicubic"]
    table: dict[str, dict[str, list[float]]] = {c: {k: [] for k in names} for c in conds}
    chosen: dict[str, list[str]] = {c: [] for c in conds}
    t0 = time.perf_counter()
    for ci, cond in enumerate(conds):
        for ii, (_, hr) in enumerate(truths):
            lr = _degrade(hr, s, cond, seed=100 * ci + ii)
            for (pd, n), name in zip(SETTINGS, names, strict=False):
                sr = upscale_array(lr, s, base.replace(pre_downscale=pd, iterations=n))
                table[cond][name].append(_score(sr, hr, s)[0])
            res = choose_auto(lr, base)
            ap = res["params"]
            chosen[cond].append(f"pre{int(ap.pre_downscale)}_it{ap.iterations}")
            table[cond]["auto"].append(_score(upscale_array(lr, s, ap), hr, s)[0])
            table[cond]["bicubic"].append(_score(bicubic_up(_to8(lr), (hr.shape[1], hr.shape[0])) / 255.0, hr, s)[0])
    mean = {c: {k: round(float(np.mean(v)), 3) for k, v in table[c].items()} for c in conds}
    dname = f"pre{int(DEFAULT[0])}_it{DEFAULT[1]}"
    overall = {k: round(float(np.mean([mean[c][k] for c in conds])), 3) for k in names}
    return {
        "bench": "upscale",
        "scale": s,
        "images": [n for n, _ in truths],
        "metric": "PSNR-Y dB vs ground truth, border=scale",
        "conditions": {
            "clean": "bicubic x1/S",
            "noise": "+ Gaussian sigma 0.02 on LR",
            "heavy_noise": "+ Gaussian sigma 0.05 on LR",
            "blur": "Gaussian sigma 0.6 LR px before decimation",
            "blur_noise_jpeg": "blur + noise + JPEG q80",
        },
        "psnr": mean,
        "overall_mean_psnr": overall,
        "auto_choices": chosen,
        "auto_minus_default_db": {c: round(mean[c]["auto"] - mean[c][dname], 3) for c in conds}
        | {"overall": round(overall["auto"] - overall[dname], 3)},
        "best_fixed_per_condition": {c: max(names[:-2], key=lambda k: mean[c][k]) for c in conds},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _route_bursts(args: argparse.Namespace, truths: list[tuple[str, np.ndarray]], s: int):
    """(name, ground truth uint8, frames float sRGB) per truth and generator."""
    from ..synth.synth import make_burst

    gens = ("synth", "bench") if args.generator == "both" else (args.generator,)
    for gen in gens:
        for ii, (name, hr) in enumerate(truths):
            gt = hr.astype(np.float32) / 255.0
            if gen == "synth":
                yield f"{name}/synth", hr, make_burst(gt, args.frames, float(s), seed=ii, noise=0.004).frames
            else:
                from .bursts import BurstSpec
                from .bursts import make_burst as bench_burst

                spec = BurstSpec(frames=args.frames, scale=s, noise=0.004, moving_object=False, seed=500 + ii)
                b = bench_burst(gt, spec, max(hr.shape[:2]))
                yield f"{name}/bench", _to8(b.gt), b.frames


def _route_bench(args: argparse.Namespace) -> dict[str, Any]:
    """x4 from a synthetic burst: where should the model come in (and with
    which x2 weights, --x2-weights)?"""
    from ..io.errors import InputError
    from ..io.imageio import write_image
    from ..stack.pipeline import StackParams, process_stack
    from ..stack.sharpen import SharpenParams, unsharp_mask
    from ..upscale.train import bicubic_up
    from ..upscale.upscale import UpscaleParams, upscale_array

    s = 4
    truths = _truths(Path(args.data), args.images, args.crop // s * s, s)
    rows: dict[str, list[float]] = {}
    secs: dict[str, list[float]] = {}
    up = UpscaleParams(scale=s, weights=args.weights)
    no_sharp = StackParams().replace(sharpen=SharpenParams(amount=0.0))
    x2w = [w for w in args.x2_weights.split(",") if w]
    names: list[str] = []

    def add(name: str, sr: np.ndarray, hr: np.ndarray, t: float) -> None:
        rows.setdefault(name, []).append(_score(sr, hr, s)[0])
        secs.setdefault(name, []).append(t)

    failed: list[dict[str, str]] = []
    for bname, hr, frames in _route_bursts(args, truths, s):
        with tempfile.TemporaryDirectory(prefix="terapan-route-") as td:
            for i, f in enumerate(frames):
                write_image(Path(td) / f"frame_{i:03d}.png", f)
            paths = sorted(Path(td).glob("frame_*"))
            t = time.perf_counter()
            try:
                f1 = process_stack(paths, 1.0, no_sharp, upscale_model=False).image
            except InputError as e:  # too few frames align: reported, not hidden
                failed.append({"burst": bname, "error": str(e.reason)})
                continue
            names.append(bname)
            a = unsharp_mask(upscale_array(f1, s, up), SharpenParams())
            add("fuse_x1_model_x4", a, hr, time.perf_counter() - t)
            t = time.perf_counter()
            b = process_stack(paths, float(s), upscale_model=True).image  # fuse x2 + model x2 (+ sharpen)
            add("fuse_x2_model_x2", b, hr, time.perf_counter() - t)
            if x2w:
                f2 = process_stack(paths, 2.0, upscale_model=False).image
                for w in x2w:
                    t = time.perf_counter()
                    sr = upscale_array(f2, 2, UpscaleParams(scale=2, weights=w))
                    add(f"fuse_x2_model_x2[{w}]", sr, hr, time.perf_counter() - t)
            t = time.perf_counter()
            c = process_stack(paths, float(s), upscale_model=False).image
            add("fuse_x4_only", c, hr, time.perf_counter() - t)
        ref = frames[0]
        t = time.perf_counter()
        add("single_frame_model_x4", upscale_array(ref, s, up), hr, time.perf_counter() - t)
        add("single_frame_bicubic", bicubic_up(_to8(ref), (hr.shape[1], hr.shape[0])) / 255.0, hr, 0.0)
    mean = {k: round(float(np.mean(v)), 3) for k, v in rows.items()}
    return {
        "bench": "upscale-route",
        "scale": s,
        "frames": args.frames,
        "generator": args.generator,
        "bursts": names,
        "failed": failed,
        "metric": "PSNR-Y dB vs ground truth, border=4",
        "psnr": mean,
        "psnr_per_burst": {k: [round(x, 3) for x in v] for k, v in rows.items()},
        "seconds_mean": {k: round(float(np.mean(v)), 2) for k, v in secs.items()},
        "best_route": max(("fuse_x1_model_x4", "fuse_x2_model_x2"), key=lambda k: mean[k]),
    }


def make_fusion_pairs(out: Path, photos: list[Path], seed: int = 123) -> dict[str, Any]:
    """(x2 fusion of a x4 burst, ground truth) pairs: the degradation the model
    sees in the stack's model route (fuse x2, then the model x2). Bursts by
    the project's generator (synth.make_burst: 6/8/12 frames, noise 0.2-2 %,
    shifts of 12 px), fused by the real pipeline; photos under 160 px and
    bursts that do not align are skipped."""
    from PIL import Image

    from ..io.errors import InputError
    from ..stack.pipeline import process_stack
    from ..synth.synth import make_burst, write_burst
    from ..upscale.train import read_rgb8

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    noises = rng.choice([0.002, 0.004, 0.01, 0.02], size=len(photos))
    frames = rng.choice([6, 8, 12], size=len(photos))
    made, skipped = 0, []
    for i, p in enumerate(photos):
        im = read_rgb8(p)
        h, w = im.shape[:2]
        if min(h, w) < 160:
            skipped.append(p.name)
            continue
        im = im[: h // 4 * 4, : w // 4 * 4]
        burst = make_burst(
            im.astype(np.float32) / 255.0, int(frames[i]), 4.0, seed=1000 + i, noise=float(noises[i]), shift_px=12.0
        )
        with tempfile.TemporaryDirectory(prefix="terapan-pairs-") as td:
            write_burst(burst, td)
            try:
                f2 = process_stack(sorted(Path(td).glob("frame_*")), 2.0, upscale_model=False).image
            except InputError:
                skipped.append(p.name)
                continue
        if f2.shape[0] * 2 != im.shape[0] or f2.shape[1] * 2 != im.shape[1]:
            skipped.append(p.name)
            continue
        Image.fromarray(_to8(f2)).save(out / f"{p.stem}_lr.png")
        Image.fromarray(im).save(out / f"{p.stem}_hr.png")
        made += 1
    return {"bench": "upscale-fusion-pairs", "out": str(out), "pairs": made, "skipped": len(skipped)}


def run(args: argparse.Namespace) -> int:
    from ..io.errors import InputError

    if not Path(args.data).is_dir():
        raise InputError(args.data, "shared data folder not found")
    if args.make_fusion_pairs:
        from ..upscale.train import list_images

        sr = Path(args.data) / "sr"
        out = make_fusion_pairs(Path(args.make_fusion_pairs), list_images([sr / "BSD200", sr / "T91"]))
    else:
        out = _route_bench(args) if args.route else _settings_bench(args)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    emit(out)
    return 0
