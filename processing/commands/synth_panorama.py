"""python -m processing synth panorama: ground-truth panorama views.

Either from a cube map (default: the meadow, six faces stacked vertically),
cutting overlapping perspective views with pointing jitter, exposure
differences and vignetting, or (--cylinder PHOTO) from any flat photo wrapped
around a 360-degree cylinder. Writes the views, angles.csv (true
placements) and truth.json (+ truth_equirect.png for cube maps).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..io.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--out", required=True, help="output folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cube", help="vertical cube strip (6F x F), e.g. meadow_cubemap_2048x12288.jpg")
    src.add_argument("--cylinder", help="flat photo to wrap around a 360-degree cylinder")
    p.add_argument("--face", type=int, default=1024, help="cube face size to work at")
    p.add_argument("--size", default="640x480", help="view size WxH (cube)")
    p.add_argument("--hfov", type=float, default=60.0)
    p.add_argument("--yaw-step", type=float, default=40.0)
    p.add_argument("--jitter", type=float, default=2.0, help="pointing jitter, degrees")
    p.add_argument("--exposure", type=float, default=0.08, help="log-gain sigma")
    p.add_argument("--vignetting", type=float, default=0.2)
    p.add_argument("--views", type=int, default=12, help="number of views (cylinder)")
    p.add_argument("--overlap", type=float, default=0.35, help="fractional overlap (cylinder)")
    p.add_argument("--truth-width", type=int, default=2048, help="width of truth_equirect.png (cube)")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from ..io.imageio import load_image, write_image
    from ..synth.synth_pano import cube_to_equirect, cube_views, load_cube, make_cylinder_views, write_views

    out = Path(args.out)
    if args.cube:
        try:
            w, h = (int(x) for x in args.size.lower().split("x"))
        except ValueError as e:
            raise InputError(args.size, "size must be WxH") from e
        cube = load_cube(args.cube, args.face)
        views = cube_views(
            cube,
            (w, h),
            args.hfov,
            args.yaw_step,
            jitter_deg=args.jitter,
            exposure_sigma=args.exposure,
            vignetting=args.vignetting,
            seed=args.seed,
        )
        write_views(views, out, cube_to_equirect(cube, args.truth_width))
        n = len(views)
    else:
        img, _ = load_image(args.cylinder)
        views, yaws, f = make_cylinder_views(img, args.views, args.overlap, seed=args.seed)
        out.mkdir(parents=True, exist_ok=True)
        lines = ["file,yaw,pitch,roll,focal"]
        for k, (v, y) in enumerate(zip(views, yaws, strict=True)):
            write_image(out / f"view_{k:03d}.png", v)
            lines.append(f"view_{k:03d}.png,{y:.4f},0,0,{f:.3f}")
        (out / "angles.csv").write_text("\n".join(lines) + "\n")
        n = len(views)
    print(json.dumps({"views": n, "out": str(out)}), file=sys.stdout)
    return 0
