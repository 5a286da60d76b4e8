"""python -m processing bench sr: stack super-resolution against ground truth.

Quality mode (default): bursts are synthesised from a crop of a real photo
(processing.synth: homography jitter, pixel integration at 1/S, shot + read
noise), written as 16-bit PNGs and fused through the real pipeline
(process_stack). For each noise level and frame count N it reports PSNR/SSIM
(sRGB, 8 px border shaved) of (a) bicubic upscaling of the reference frame,
(b) the naive baseline (cubic resampling + median), (c) the default method,
the registration RMS error in px against the known transforms (all pixels of
the kept frames), seconds per stage and input megapixels per second.

Speed mode (--speed or --device): N frames of --megapixels MP each (JPEG,
from the photo enlarged) fused at --scale in a child process per device
(TERAPAN_DEVICE=cpu|gpu); one JSON object per (device, size): seconds and
input megapixels per second per stage, wall and CPU seconds, the child's
peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from .common import emit, peak_rss_mb

DEFAULT_GT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "photos" / "saw_2725x2225.jpg"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gt", type=Path, default=DEFAULT_GT, help="ground-truth photo")
    p.add_argument("--size", type=int, default=512, help="central GT crop side (GT px)")
    p.add_argument(
        "--gt-reduce",
        type=float,
        default=2.0,
        help="area-reduce the photo by this factor first (the photo is soft at 100 %%)",
    )
    p.add_argument("--frames", default="1,4,8,14,20", help="frame counts")
    p.add_argument("--scale", type=float, default=2.0)
    p.add_argument("--noise", default="0.02,0.004", help="noise levels (sigma at full scale, linear)")
    p.add_argument("--turbulence", type=float, default=0.0, help="RMS turbulence, frame px")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--megapixels", default="12", help="speed mode: frame sizes in MP, comma-separated (e.g. 12,45)")
    p.add_argument("--speed", action="store_true", help="speed/memory run instead of quality")
    p.add_argument(
        "--device",
        default=None,
        help="speed mode on these devices, comma-separated: cpu, gpu or cpu,gpu (implies --speed; "
        "gpu needs CuPy and a CUDA device)",
    )


def _reg_rms(frames: list[dict], truth: list[np.ndarray], w: int, h: int) -> float | None:
    from ..warp import apply_h

    gx, gy = np.meshgrid(np.linspace(0, w - 1, 64), np.linspace(0, h - 1, 64))
    errs = []
    for rec, t in zip(frames, truth, strict=True):
        if not rec["kept"] or rec["file"].endswith("_000.png"):
            continue
        u, v = apply_h(np.array(rec["transform"]), gx, gy)
        ut, vt = apply_h(t, gx, gy)
        errs.append(np.mean((u - ut) ** 2 + (v - vt) ** 2))
    return float(np.sqrt(np.mean(errs))) if errs else None


def _quality(args: argparse.Namespace) -> dict:
    from ..fuse import FuseParams
    from ..imageio import load_image
    from ..metrics import psnr, ssim
    from ..sharpen import SharpenParams
    from ..stackpipe import StackParams, list_frames, process_stack
    from ..synth import make_burst, write_burst

    photo, _ = load_image(args.gt)
    if args.gt_reduce > 1:
        ph, pw = photo.shape[:2]
        size = (int(pw / args.gt_reduce), int(ph / args.gt_reduce))
        photo = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
    ph, pw = photo.shape[:2]
    s = args.size
    gt = photo[(ph - s) // 2 : (ph - s) // 2 + s, (pw - s) // 2 : (pw - s) // 2 + s]
    counts = [int(x) for x in args.frames.split(",")]
    out: dict = {
        "bench": "sr",
        "gt": str(args.gt),
        "gt_reduce": args.gt_reduce,
        "crop": s,
        "scale": args.scale,
        "runs": [],
    }
    border = 8
    for noise in [float(x) for x in args.noise.split(",")]:
        burst = make_burst(gt, max(counts), args.scale, seed=args.seed, noise=noise, turbulence_px=args.turbulence)
        for n in counts:
            with tempfile.TemporaryDirectory() as td:
                sub = type(burst)(burst.frames[:n], burst.transforms[:n], gt, burst.scale, burst.meta)
                write_burst(sub, td)
                ref, _ = load_image(Path(td) / "frame_000.png")
                oh, ow = gt.shape[:2]
                bic = np.clip(cv2.resize(ref, (ow, oh), interpolation=cv2.INTER_CUBIC), 0, 1)
                row: dict = {
                    "noise": noise,
                    "frames": n,
                    "bicubic": {"psnr": psnr(bic, gt, border), "ssim": ssim(bic, gt, border)},
                }
                if n >= 2:
                    paths = list_frames(td)
                    naive = StackParams().replace(fuse=FuseParams(method="naive"), sharpen=SharpenParams(amount=0))
                    for name, params in (("naive", naive), ("default", StackParams())):
                        t0 = time.perf_counter()
                        res = process_stack(paths, args.scale, params, upscale_model=False)
                        dt = time.perf_counter() - t0
                        row[name] = {
                            "psnr": psnr(res.image, gt, border),
                            "ssim": ssim(res.image, gt, border),
                            "frames_fused": res.metrics["frames_fused"],
                            "seconds": res.metrics["seconds"],
                            "seconds_total": round(dt, 3),
                            "input_mp_per_s": round(res.metrics["input_megapixels"] / dt, 3),
                        }
                        if name == "default":
                            w, h = res.metrics["reference_size"]
                            row["registration_rms_px"] = _reg_rms(res.frames, sub.transforms, w, h)
                    row["gain_vs_naive_db"] = row["default"]["psnr"] - row["naive"]["psnr"]
                    row["gain_vs_bicubic_db"] = row["default"]["psnr"] - row["bicubic"]["psnr"]
                out["runs"].append(row)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def _devices(args: argparse.Namespace) -> list[str]:
    from ..backend import gpu_available
    from ..errors import InputError

    devs = [d.strip().lower() for d in (args.device or "cpu").split(",") if d.strip()]
    bad = [d for d in devs if d not in ("cpu", "gpu")]
    if bad or not devs:
        raise InputError(None, f"--device must be cpu, gpu or cpu,gpu (got {args.device!r})")
    if "gpu" in devs and not gpu_available():
        raise InputError(None, "--device gpu: no CUDA device usable through CuPy on this machine")
    return devs


def _speed(args: argparse.Namespace) -> list[dict]:
    from ..imageio import load_image, write_image
    from ..synth import iter_burst

    devices = _devices(args)
    n = max(int(x) for x in args.frames.split(","))
    photo, _ = load_image(args.gt)
    ph, pw = photo.shape[:2]
    noise = float(args.noise.split(",")[-1])
    results = []
    for mp_req in [float(x) for x in str(args.megapixels).split(",")]:
        f = np.sqrt(mp_req * 1e6 / (ph * pw))
        big = cv2.resize(photo, (int(pw * f), int(ph * f)), interpolation=cv2.INTER_CUBIC)
        with tempfile.TemporaryDirectory() as td:
            t0 = time.perf_counter()
            for i, (frame, _) in enumerate(iter_burst(big, n, 1.0, seed=args.seed, noise=noise, supersample=1)):
                write_image(Path(td) / f"frame_{i:03d}.jpg", frame, quality=95)
            gen = time.perf_counter() - t0
            del big
            for dev in devices:
                res = _speed_child(args, td, dev)
                res["seconds_generate"] = round(gen, 2)
                results.append(res)
    return results


def _speed_child(args: argparse.Namespace, td: str, dev: str) -> dict:
    outp = Path(td) / "out.tif"
    cmd = [
        sys.executable,
        "-m",
        "processing",
        "stack",
        td,
        "-o",
        str(outp),
        "--scale",
        str(args.scale),
        "--no-upscale-model",
        "--json",
        "--quiet",
    ]
    env = dict(os.environ, TERAPAN_DEVICE=dev)
    t0 = time.perf_counter()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_peak = ru1.ru_maxrss / 1024.0  # max over the children so far
    child_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    if proc.returncode != 0:
        return {"bench": "sr-speed", "device": dev, "error": proc.stderr.strip().splitlines()[-1:]}
    m = json.loads(proc.stdout)["metrics"]
    mp = m["input_megapixels"]
    return {
        "bench": "sr-speed",
        "device": dev,
        "device_used": m.get("device", "cpu"),
        "frames": m["frames_total"],
        "frame_megapixels": round(mp / max(1, m["frames_readable"]), 2),
        "scale": args.scale,
        "output_size": m["output_size"],
        "seconds_wall_child": round(wall, 2),
        "seconds_cpu_child": round(child_cpu, 2),
        "cpu_count": os.cpu_count(),
        "load_average_1min_after": load,
        "seconds": m["seconds"],
        "seconds_total": m["seconds_total"],
        "cpu_seconds": m.get("cpu_seconds"),
        "input_mp_per_s": round(mp / m["seconds_total"], 3) if m["seconds_total"] > 0 else None,
        "input_mp_per_s_by_stage": {k: round(mp / v, 2) for k, v in m["seconds"].items() if v > 0},
        "peak_rss_mb_child": round(child_peak, 1),
    }


def run(args: argparse.Namespace) -> int:
    if args.speed or args.device:
        for res in _speed(args):
            emit(res)
        return 0
    emit(_quality(args))
    return 0
