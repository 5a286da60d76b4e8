"""python -m processing bench sr: stack super-resolution against ground truth.

Quality mode (default): bursts are synthesised from a crop of a real photo
(processing.synth.synth: homography jitter, pixel integration at 1/S, shot + read
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
        "--repeat",
        type=int,
        default=1,
        help="speed mode: runs per child process; the last is reported (a warm worker), the first as cold",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="speed mode: CPU threads of the CPU stages on both devices (TERAPAN_THREADS; 0: all cores)",
    )
    p.add_argument("--no-write", action="store_true", help="speed mode: do not time writing the 16-bit TIFF")
    p.add_argument(
        "--result-dtype",
        choices=["uint16", "float32"],
        default="uint16",
        help="speed mode: the result process_stack hands back (uint16: what `stack` and the workers use, "
        "quantised on the device; float32: the older float result)",
    )
    p.add_argument(
        "--upscale-model",
        action="store_true",
        help="speed mode: fuse at x2 and let EDSR do the rest (the stack command's default for --scale > 2)",
    )
    p.add_argument(
        "--lib-threads",
        default="one",
        help="speed mode: OpenCV/BLAS threads in the frame-parallel stages, comma-separated: one (the default), "
        "native (their own pools); each is a child run, in this one bench run",
    )
    p.add_argument(
        "--device",
        default=None,
        help="speed mode on these devices, comma-separated: cpu, gpu or cpu,gpu (implies --speed; "
        "gpu needs CuPy and a CUDA device)",
    )


def _reg_rms(frames: list[dict], truth: list[np.ndarray], w: int, h: int) -> float | None:
    from ..stack.warp import apply_h

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
    from ..io.imageio import load_image
    from ..io.metrics import psnr, ssim
    from ..stack.fuse import FuseParams
    from ..stack.pipeline import StackParams, list_frames, process_stack
    from ..stack.sharpen import SharpenParams
    from ..synth.synth import make_burst, write_burst

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
    from ..device.backend import gpu_available
    from ..io.errors import InputError

    devs = [d.strip().lower() for d in (args.device or "cpu").split(",") if d.strip()]
    bad = [d for d in devs if d not in ("cpu", "gpu")]
    if bad or not devs:
        raise InputError(None, f"--device must be cpu, gpu or cpu,gpu (got {args.device!r})")
    if "gpu" in devs and not gpu_available():
        raise InputError(None, "--device gpu: no CUDA device usable through CuPy on this machine")
    return devs


def _speed_frames(big: np.ndarray, n: int, seed: int, noise: float, folder: Path) -> None:
    """N handheld-like JPEG frames of BIG, made in parallel.

    Speed mode needs frames that exercise every stage (a random shift of up to
    20 px, a rotation of up to 1 degree and a slight perspective per frame,
    Gaussian noise), not the physically exact burst of quality mode, whose
    synthesis takes seconds per megapixel. Transforms are drawn in order from
    one seed, so the frames are the same whatever the thread count.
    """
    from concurrent.futures import ThreadPoolExecutor

    h, w = big.shape[:2]
    img8 = np.clip(big * 255.0 + 0.5, 0, 255).astype(np.uint8)
    rng = np.random.default_rng(seed)
    c = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1]], np.float64)
    mats = [np.eye(3)]
    for _ in range(1, n):
        a = np.deg2rad(rng.uniform(-1.0, 1.0))
        r = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        r[:2, 2] = rng.uniform(-20.0, 20.0, 2)
        r[2, :2] = rng.uniform(-2e-6, 2e-6, 2)
        mats.append(np.linalg.inv(c) @ r @ c)
    sigma = max(noise, 1e-4) * 255.0

    def one(i: int) -> None:
        fr = cv2.warpPerspective(img8, mats[i], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        z = np.empty(fr.shape, np.float32)
        cv2.randn(z, 0.0, sigma)  # OpenCV's RNG: fast and thread-safe per call
        fr = cv2.add(fr.astype(np.float32), z).clip(0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"frame_{i:03d}.jpg"), fr, [cv2.IMWRITE_JPEG_QUALITY, 95])

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(one, range(n)))


def _speed(args: argparse.Namespace) -> list[dict]:
    from ..io.imageio import load_image

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
            _speed_frames(big, n, args.seed, noise, Path(td))
            gen = time.perf_counter() - t0
            del big
            by_dev = {}
            libs = [x.strip() for x in args.lib_threads.split(",") if x.strip()]
            for lib in libs:
                for dev in devices:
                    print(f"bench sr: {n} x {mp_req:g} MP on {dev} (library threads: {lib}) ...", file=sys.stderr)
                    res = _speed_child(args, td, dev, lib)
                    res["seconds_generate"] = round(gen, 2)
                    emit(res)  # as soon as it is measured: a later run may not finish
                    results.append(res)
                    by_dev.setdefault(dev, res)
            if len(libs) > 1:
                results.append(_lib_ratio(results[-len(libs) * len(devices) :], libs))
            c, g = by_dev.get("cpu", {}), by_dev.get("gpu", {})
            if c.get("seconds_total") and g.get("seconds_total"):
                # Both measured in this one run, on the same frames.
                res = {
                    "bench": "sr-speedup",
                    "frame_megapixels": g["frame_megapixels"],
                    "scale": args.scale,
                    "gpu_speedup_total": round(c["seconds_total"] / g["seconds_total"], 2),
                    "gpu_speedup_by_stage": {
                        k: round(v / g["seconds"][k], 2) for k, v in c["seconds"].items() if g["seconds"].get(k, 0) > 0
                    },
                }
                emit(res)
                results.append(res)
    return results


#: Stages that run on the host whatever the device (the rest run on the GPU
#: when the stack does): what the GPU cannot speed up until they move.
HOST_STAGES = frozenset({"develop", "sharpness", "align", "color", "flow", "dehaze"})


def _lib_ratio(runs: list[dict], libs: list[str]) -> dict:
    """Per device, each library-thread setting's seconds over the first's."""
    out: dict = {"bench": "sr-lib-threads", "baseline": libs[0], "ratios": {}}
    for r in runs:
        base = next(
            (b for b in runs if b.get("device") == r.get("device") and b.get("library_threads") == libs[0]), None
        )
        if base is None or "seconds" not in r or "seconds" not in base:
            continue
        out["ratios"][f"{r['device']}:{r['library_threads']}"] = {
            "total": round(r["seconds_total"] / base["seconds_total"], 3),
            "cpu_seconds_total": round(sum(r["cpu_seconds"].values()) / sum(base["cpu_seconds"].values()), 3),
            "by_stage": {
                k: round(v / base["seconds"][k], 3) for k, v in r["seconds"].items() if base["seconds"].get(k)
            },
        }
    emit(out)
    return out


def _speed_child(args: argparse.Namespace, td: str, dev: str, lib: str = "one") -> dict:
    outp = Path(td) / "out.tif"
    model = "1" if args.upscale_model else "0"
    write = "0" if args.no_write else "1"
    cmd = [sys.executable, "-m", "processing.bench.sr_child", td, str(outp), str(args.scale), str(args.repeat), model]
    cmd += [write, args.result_dtype]
    threads = args.threads or os.cpu_count() or 1
    env = dict(os.environ, TERAPAN_DEVICE=dev, TERAPAN_THREADS=str(threads), TERAPAN_LIB_THREADS=lib)
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
        return {
            "bench": "sr-speed",
            "device": dev,
            "library_threads": lib,
            "error": proc.stderr.strip().splitlines()[-3:],
        }
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    runs = got["runs"]
    m = runs[-1]  # the warm run: what a long-lived worker sees
    mp = m["input_megapixels"]
    return {
        "bench": "sr-speed",
        "device": dev,
        "device_used": m.get("device", "cpu"),
        "frames": m["frames_total"],
        "frame_megapixels": round(mp / max(1, m["frames_readable"]), 2),
        "scale": args.scale,
        "fuse_scale": m.get("fuse_scale"),
        "upscale_model": m.get("upscale_model"),
        "output_size": m["output_size"],
        "runs": len(runs),
        "seconds_total_cold": runs[0]["seconds_total"],
        "seconds_total": m["seconds_total"],
        "seconds": m["seconds"],
        "seconds_write_tiff16": got["seconds_write"],
        "result_dtype": args.result_dtype,
        "library_threads": lib,
        "gpu_fused_kernel": m.get("gpu_fused_kernel"),
        "threads": threads,
        "seconds_wall_child": round(wall, 2),
        "seconds_cpu_child": round(child_cpu, 2),
        "cpu_count": os.cpu_count(),
        "load_average_1min_after": load,
        "cpu_seconds": m.get("cpu_seconds"),
        "seconds_host_stages": round(sum(v for k, v in m["seconds"].items() if k in HOST_STAGES), 3),
        "seconds_device_stages": round(sum(v for k, v in m["seconds"].items() if k not in HOST_STAGES), 3)
        if m.get("device") == "gpu"
        else 0.0,
        "input_mp_per_s": round(mp / m["seconds_total"], 3) if m["seconds_total"] > 0 else None,
        "input_mp_per_s_by_stage": {k: round(mp / v, 2) for k, v in m["seconds"].items() if v > 0},
        "peak_rss_mb_child": got.get("peak_rss_mb", round(child_peak, 1)),
    }


def run(args: argparse.Namespace) -> int:
    if args.speed or args.device:
        _speed(args)  # emits each result as it comes
        return 0
    emit(_quality(args))
    return 0
