"""python -m processing upscale IN -o OUT --scale S: EDSR upscaling to exactly S x size."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..io.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="input image (PNG, JPEG, TIFF)")
    p.add_argument("-o", "--output", required=True, help="output .tif (tiled 16-bit BigTIFF)")
    p.add_argument("--scale", type=float, required=True, help="final scale factor (any positive number)")
    p.add_argument("--pre-downscale", type=float, default=0.0, help="percent 0-95 to shrink before the model")
    p.add_argument("--iterations", type=int, default=1, help="N steps of equal factor S^(1/N)")
    p.add_argument("--weights", help="EDSR weights (.weights.h5 with JSON sidecar); default: shipped")
    p.add_argument("--auto", action="store_true", help="choose pre-downscale and iterations from the image")
    p.add_argument("--tile", type=int, default=192, help="model window side in input pixels")
    p.add_argument("--batch", type=int, default=2, help="windows per model call")
    p.add_argument("--no-jitter", action="store_true", help="fixed window grid (for comparisons)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..upscale.upscale import UpscaleParams, upscale_file

    src = Path(args.input)
    if not src.is_file():
        raise InputError(src, "no such file")
    params = UpscaleParams(
        scale=args.scale,
        pre_downscale=args.pre_downscale,
        iterations=args.iterations,
        tile=args.tile,
        batch=args.batch,
        weights=args.weights,
        auto=args.auto,
        jitter=not args.no_jitter,
    )
    try:
        params.validate()
    except ValueError as e:
        raise InputError(None, str(e)) from e
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=1000, file=sys.stderr, unit="‰", mininterval=1)

    def progress(f: float) -> None:
        if bar is not None:
            bar.update(int(f * 1000) - bar.n)

    info = upscale_file(src, args.output, params, progress=progress)
    if bar is not None:
        bar.close()
    print(json.dumps({k: info[k] for k in ("output", "in_size", "out_size")} | {"auto": info.get("auto")}, default=str))
    return 0
