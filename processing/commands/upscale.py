"""python -m processing upscale IN -o OUT --scale S: EDSR upscaling to exactly S x size."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..io.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="input image (PNG, JPEG, TIFF)")
    p.add_argument(
        "-o", "--output", required=True, help="output by extension: .tif (16-bit BigTIFF), .png (16-bit), .jpg (8-bit)"
    )
    p.add_argument("--scale", type=float, required=True, help="final scale factor (any positive number)")
    p.add_argument("--pre-downscale", type=float, default=0.0, help="percent 0-95 to shrink before the model")
    p.add_argument("--iterations", type=int, default=1, help="N steps of equal factor S^(1/N)")
    p.add_argument("--weights", help="EDSR weights (.weights.h5 with JSON sidecar); default: shipped")
    p.add_argument("--auto", action="store_true", help="choose pre-downscale and iterations from the image")
    p.add_argument("--tile", type=int, default=384, help="largest model window side in input pixels")
    p.add_argument("--batch", type=int, default=2, help="windows per model call")
    p.add_argument("--no-jitter", action="store_true", help="fixed window grid (for comparisons)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..upscale.upscale import OUTPUT_EXTS, UpscaleParams, upscale_file

    src, out = Path(args.input), Path(args.output)
    if not src.is_file():
        raise InputError(src, "no such file")
    if out.suffix.lower() not in OUTPUT_EXTS:
        raise InputError(out, f"cannot write {out.suffix or 'a file without extension'}: use .tif, .png or .jpg")
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

    try:
        info = upscale_file(src, args.output, params, progress=progress)
    finally:
        if bar is not None:
            bar.close()  # ends the bar's line: an error is printed on a line of its own
    print(json.dumps({k: info[k] for k in ("output", "in_size", "out_size")} | {"auto": info.get("auto")}, default=str))
    return 0
