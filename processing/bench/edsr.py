"""python -m processing bench edsr: the shipped EDSR against bicubic on Set5/Set14/B100.

Standard protocol: HR cropped to a multiple of the scale, LR by PIL BICUBIC
(MATLAB imresize equivalent), PSNR/SSIM on Y (BT.601) with `scale` pixels
shaved. Also: LR consistency (output downscaled back vs input), tiled-vs-whole
difference with forced small windows, and the speed (output MP/s) of the
tiled upscale_array against the bare network at several input sizes, both
measured in the same run, alternated.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import emit, peak_rss_mb

SHARED = Path(os.environ.get("TERAPAN_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))

#: Published figures (EDSR paper, Table; bicubic as reported there), PSNR dB.
PUBLISHED = {
    4: {
        "edsr": {"Set5": 32.46, "Set14": 28.80, "B100": 27.71},
        "bicubic": {"Set5": 28.42, "Set14": 26.00, "B100": 25.96},
    },
    2: {
        "edsr": {"Set5": 38.11, "Set14": 33.92, "B100": 32.32},
        "bicubic": {"Set5": 33.66, "Set14": 30.24, "B100": 29.56},
    },
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", type=int, default=4, choices=(2, 3, 4))
    p.add_argument("--sets", default="Set5,Set14,B100")
    p.add_argument("--limit", type=int, default=0, help="at most N images per set (0: all)")
    p.add_argument("--weights", help="weights to measure (default: shipped)")
    p.add_argument("--fast-weights", help="the smaller faster model (default: shipped edsr_x{s}_fast)")
    p.add_argument("--data", default=str(SHARED / "sr"), help="folder holding the sets")
    p.add_argument("--no-ssim", action="store_true")
    p.add_argument("--speed-sizes", default="0.25,1,4", help="input megapixels of the tiled-vs-bare speed test")
    p.add_argument("--bare-max-mp", type=float, default=1.0, help="largest input run as one bare model call")
    p.add_argument("--speed-repeat", type=int, default=2, help="timed runs per size up to 16 output MP (best kept)")
    p.add_argument("--no-speed", action="store_true")


def _eval_set(model: Any, scale: int, paths: list[Path], ssim: bool) -> dict[str, float]:
    from ..upscale.train import bicubic_down, bicubic_up, mod_crop, psnr_y, read_rgb8, sr_image, ssim_y

    rows: dict[str, list[float]] = {k: [] for k in ("psnr", "psnr_bicubic", "ssim", "ssim_bicubic", "lr_mae")}
    for p in paths:
        hr = mod_crop(read_rgb8(p), scale)
        lr = bicubic_down(hr, scale)
        sr = sr_image(model, lr)
        bi = bicubic_up(lr, (hr.shape[1], hr.shape[0]))
        rows["psnr"].append(psnr_y(sr, hr, scale))
        rows["psnr_bicubic"].append(psnr_y(bi, hr, scale))
        if ssim:
            rows["ssim"].append(ssim_y(sr, hr, scale))
            rows["ssim_bicubic"].append(ssim_y(bi, hr, scale))
        back = bicubic_down(sr, scale).astype(np.float64)
        rows["lr_mae"].append(float(np.mean(np.abs(back - lr))))
    out = {k: round(float(np.mean(v)), 4) for k, v in rows.items() if v}
    out["gain_db"] = round(out["psnr"] - out["psnr_bicubic"], 3)
    out["n"] = len(paths)
    return out


def _bare(model: Any, x: np.ndarray, scale: int, max_mp: float) -> np.ndarray:
    """The network alone: one call on the whole input, or (above max_mp) one
    call per non-overlapping piece of at most max_mp (memory), no blending."""
    from ..upscale.edsr import predict

    h, w = x.shape[:2]
    n = max(1, int(np.ceil(np.sqrt(h * w / (max_mp * 1e6)))))
    out = np.empty((h * scale, w * scale, 3), np.float32)
    ys, xs = np.linspace(0, h, n + 1).astype(int), np.linspace(0, w, n + 1).astype(int)
    for i in range(n):
        for j in range(n):
            piece = x[ys[i] : ys[i + 1], xs[j] : xs[j + 1]]
            y = predict(model, piece[None])[0]
            out[ys[i] * scale : ys[i + 1] * scale, xs[j] * scale : xs[j + 1] * scale] = y
    return out


def _speed(model: Any, scale: int, mp: float, params: Any, max_mp: float, repeat: int) -> dict[str, Any]:
    """Output MP/s of the bare network and of the tiled upscale_array on one input, alternated."""
    import cv2

    from ..upscale.upscale import upscale_array, window_layout

    side = math.isqrt(round(mp * 1e6))
    rng = np.random.default_rng(0)
    x = cv2.GaussianBlur(rng.random((side, side, 3)).astype(np.float32), (0, 0), 1.0)
    # Best of REPEAT (the CPU is shared: the minimum is the least disturbed);
    # the first run of each also builds the compiled model for its shapes.
    out_mp = side * side * scale * scale / 1e6
    runs = max(1, repeat if out_mp <= 16 else 1)  # the largest input once: minutes per run on 2 cores
    bare_t, tiled_t, bare_cpu, tiled_cpu = [], [], [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        bare = _bare(model, x, scale, max_mp)
        bare_t.append(time.perf_counter() - t)
        bare_cpu.append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        tiled = upscale_array(x, scale, params)
        tiled_t.append(time.perf_counter() - t)
        tiled_cpu.append(time.process_time() - c)
    wside, starts = window_layout(side, params.tile, 2 * params.margin + params.blend, params.jitter_px, None)
    r = {
        "in_side": side,
        "out_mp": round(out_mp, 2),
        "bare_mp_s": round(out_mp / min(bare_t), 3),
        "tiled_mp_s": round(out_mp / min(tiled_t), 3),
        "tiled_over_bare": round(min(bare_t) / min(tiled_t), 3),
        # CPU seconds of this process: less disturbed by the other agents' load than wall time.
        "tiled_over_bare_cpu": round(min(bare_cpu) / min(tiled_cpu), 3),
        "runs": runs,
        "bare_pieces": int(np.ceil(np.sqrt(side * side / (max_mp * 1e6)))) ** 2,
        "windows": len(starts) ** 2,
        "window_side": wside,
        "seconds_bare": [round(v, 2) for v in bare_t],
        "seconds_tiled": [round(v, 2) for v in tiled_t],
    }
    if r["bare_pieces"] == 1:  # one whole-image call: the tiled result must match it
        d = np.abs(tiled - np.clip(bare, 0, 1)) * 255.0
        r["tiled_vs_bare_mean_abs_255"] = round(float(d.mean()), 5)
        r["tiled_vs_bare_max_abs_255"] = round(float(d.max()), 4)
    return r


def _tiled_vs_whole(model: Any, scale: int, paths: list[Path], params: Any) -> dict[str, float]:
    from ..upscale.edsr import predict
    from ..upscale.train import bicubic_down, mod_crop, read_rgb8
    from ..upscale.upscale import upscale_array

    diffs, maxd = [], 0.0
    for p in paths:
        hr = mod_crop(read_rgb8(p), scale)
        lr = bicubic_down(hr, scale).astype(np.float32) / 255.0
        whole = np.clip(predict(model, lr[None])[0], 0, 1)
        tiled = upscale_array(lr, scale, params)
        d = np.abs(tiled - whole) * 255.0
        diffs.append(float(d.mean()))
        maxd = max(maxd, float(d.max()))
    return {"mean_abs_255": round(float(np.mean(diffs)), 4), "max_abs_255": round(maxd, 3), "n": len(paths)}


def run(args: argparse.Namespace) -> int:
    from ..io.errors import InputError
    from ..upscale.edsr import default_weights, load_model
    from ..upscale.upscale import UpscaleParams

    data = Path(args.data)
    if not data.is_dir():
        raise InputError(data, "SR benchmark sets not found")
    s = args.scale
    wpath = Path(args.weights) if args.weights else default_weights(s)
    model = load_model(s, wpath)
    fast_path = Path(args.fast_weights) if args.fast_weights else wpath.with_name(f"edsr_x{s}_fast.weights.h5")
    result: dict[str, Any] = {
        "bench": "edsr",
        "scale": s,
        "weights": str(wpath),
        "architecture": model.terapan_meta["architecture"],
        "protocol": "Y BT.601, HR mod-crop, border=scale shaved, LR by PIL BICUBIC",
        "sets": {},
    }
    for name in [x.strip() for x in args.sets.split(",") if x.strip()]:
        from ..upscale.train import list_images

        paths = list_images([data / name])
        if args.limit:
            paths = paths[: args.limit]
        t = time.perf_counter()
        r = _eval_set(model, s, paths, not args.no_ssim)
        r["seconds"] = round(time.perf_counter() - t, 1)
        if fast_path.is_file():
            rf = _eval_set(load_model(s, fast_path), s, paths, False)
            r["fast_psnr"] = rf["psnr"]
        result["sets"][name] = r
    result["published"] = PUBLISHED.get(s)
    # Tiling: forced small windows (many seams) against one whole-image call.
    p_tiled = UpscaleParams(scale=s, weights=str(wpath), tile=64, batch=2)
    set5 = [p for p in sorted((data / "Set5").iterdir())][:3] if (data / "Set5").is_dir() else []
    if set5:
        result["tiled_vs_whole"] = _tiled_vs_whole(model, s, set5, p_tiled)
    if not args.no_speed:
        params = UpscaleParams(scale=s, weights=str(wpath))
        result["speed"] = {
            "params": {k: getattr(params, k) for k in ("tile", "margin", "blend", "batch", "jitter_px")},
            "note": "output MP/s; bare = one model call on the whole input (pieces of <= bare_max_mp above it)",
            "bare_max_mp": args.bare_max_mp,
            "sizes": {
                f"{mp:g}MP": _speed(model, s, mp, params, args.bare_max_mp, args.speed_repeat)
                for mp in (float(v) for v in args.speed_sizes.split(",") if v.strip())
            },
        }
    if fast_path.is_file():
        result["fast_architecture"] = load_model(s, fast_path).terapan_meta["architecture"]
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    emit(result)
    return 0
