"""Terapan against Hugin on one photo set, in one run (bench stitch --compare-hugin)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .hugin import pixel_rays as hugin_pixel_rays
from .hugin import px_per_rad, read_rgba_tiff, reuse_hugin, run_hugin, tiff_offset
from .stitch_measures import (
    canvas_rays,
    clipped_fraction,
    covered,
    hugin_layers,
    inputs_clipped_fraction,
    misalignment,
    scaled_rays,
    seam_measures,
    shrink,
    terapan_layers,
    to_float,
)

#: the measures run at one angular resolution, at most this many pixels of Terapan's result
MEASURE_MP = 8.0


def _read_rgba(path: Path) -> np.ndarray:
    import tifffile

    a = tifffile.imread(path)
    if a.ndim == 3 and a.shape[2] == 3:
        a = np.concatenate([a, np.full((*a.shape[:2], 1), 255 if a.dtype == np.uint8 else 65535, a.dtype)], 2)
    return a


def compare_with_hugin(
    files: list[Path],
    ours: Path,
    res: dict[str, Any],
    work: Path,
    projection: str,
    hfov: float | None,
    reuse: Path | None = None,
) -> dict[str, Any]:
    """``reuse``: an earlier run's Hugin work folder, measured again without
    running Hugin's chain (its seconds and memory are that run's)."""
    from processing.stitch.pipeline import layout_from_json

    from .hugin_cameras import compare_cameras

    out: dict[str, Any] = {"inputs_clipped_fraction": round(inputs_clipped_fraction(files), 5)}
    hg = reuse_hugin(files, reuse) if reuse is not None else run_hugin(files, work, projection, hfov)
    hrec: dict[str, Any] = {"placed": hg.placed, "total": hg.total}
    if reuse is not None:
        hrec["reused_from"] = str(reuse)
    else:
        hrec.update(
            seconds=round(hg.run.seconds, 2),
            cpu_seconds=round(hg.run.cpu_seconds, 1),
            peak_mb=round(hg.run.peak_mb, 1),
            steps_s=hg.run.steps,
        )
    if hg.run.error:
        hrec["error"] = hg.run.error
    out["hugin"] = hrec
    if hg.pto is not None:
        lens = hg.pto.lens(0)
        hrec["lens"] = {k: round(v, 5) for k, v in lens.items()}
    if "error" in res or not ours.is_file():
        return out
    if hg.pto is not None and hg.out is not None:
        # the cameras themselves, image by image (no rendering, no matching)
        out["cameras"] = compare_cameras(res["layout"], (reuse or work) / "project.pto")
    layout = layout_from_json(res["layout"])
    cv = layout.canvas
    a = _read_rgba(ours)
    mask = covered(a[..., 3])
    tq: dict[str, Any] = {"clipped_fraction": round(clipped_fraction(a, mask), 5)}
    # Both results are measured at one sampling of their sources (output
    # pixels per source pixel, each tool with its own focal length), at most
    # MEASURE_MP of Terapan's: the tools may disagree on the focal length.
    s_ours = cv.su
    f_ours = float(np.median([L.cam.focal for L in layout.layers]))
    r = min(s_ours / f_ours, math.sqrt(MEASURE_MP * 1e6 / (cv.width * cv.height)) * s_ours / f_ours)
    f_h = 0.0
    if hg.out is not None and hg.pto is not None:
        lens = hg.pto.lens(0)
        w0 = float(hg.pto.images[0]["w"])
        f_h = w0 / 2 / math.tan(math.radians(lens["v"]) / 2)
        r = min(r, px_per_rad(hg.pto) / f_h)
    m = r * f_ours / s_ours
    pc, layers = terapan_layers(layout, m)
    small = shrink(a, (pc.width, pc.height))
    del a
    o_rgb, o_alpha = to_float(small)
    tq.update(seam_measures(o_rgb, o_alpha, layers, wrap=cv.wrap))
    tq["measured_px_per_source_px"] = round(r, 4)
    out["terapan_quality"] = tq
    if hg.out is None or hg.pto is None:
        return out
    hrgb, halpha = read_rgba_tiff(hg.out)
    h8 = (np.concatenate([hrgb, halpha[..., None]], 2) * 255 + 0.5).astype(np.uint8)
    hrec["width"], hrec["height"] = int(halpha.shape[1]), int(halpha.shape[0])
    hrec["clipped_fraction"] = round(clipped_fraction(h8, halpha > 0.99), 5)
    ox, oy = tiff_offset(hg.out)
    mh = r * f_h / px_per_rad(hg.pto)
    full_w = halpha.shape[1]
    hsize = (max(1, round(full_w * mh)), max(1, round(halpha.shape[0] * mh)))
    hs = shrink(h8, hsize)
    del hrgb, halpha, h8
    h_rgb, h_alpha = to_float(hs)
    hrec.update(seam_measures(h_rgb, h_alpha, hugin_layers([p for _k, p in hg.layers], (ox, oy), mh)))
    # the pto's crop (S) is where enblend's result sits; rays of its pixels
    pto = hg.pto
    pto.crop = (ox, ox + full_w, oy, oy + hsize[1])
    mt = pc.width / cv.width
    mis = misalignment(
        o_rgb,
        o_alpha,
        scaled_rays(canvas_rays(cv), mt),
        h_rgb,
        h_alpha,
        scaled_rays(lambda xs, ys: hugin_pixel_rays(pto, xs, ys), hsize[0] / full_w),
    )
    if "rms_deg" in mis:
        # in source pixels (Hugin's focal length; Terapan's: the same within a few %)
        mis["rms_source_px"] = round(math.radians(mis["rms_deg"]) * f_h, 2)
        mis["focal_px"] = {"terapan": round(f_ours, 1), "hugin": round(f_h, 1)}
    out["misalignment"] = mis
    return out
