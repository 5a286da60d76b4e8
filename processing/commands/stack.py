"""python -m processing stack DIR -o OUT.tif --scale S: fuse one burst.

Writes a 16-bit RGB TIFF atomically, exactly round(S x reference size), in
the reference frame's coordinates (see processing/stack/pipeline.py). Progress goes
to stderr (tqdm); --json prints the frames, metrics and recipe on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..io.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="folder with the frames (jpg/png/tif/dng/raw)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output TIFF (16-bit RGB)")
    p.add_argument("--scale", type=float, required=True, help="output size / reference size")
    p.add_argument("--reference", default=None, help="reference file name (default: first in name order)")
    p.add_argument("--no-upscale-model", action="store_true", help="fusion only, even above x2")
    p.add_argument("--method", choices=["kernel", "naive"], default=None, help="fusion method (default kernel)")
    p.add_argument("--drop-worst", type=int, default=None, help="drop this many least sharp frames (default 2)")
    p.add_argument("--no-flow", action="store_true", help="skip the turbulence flow stage")
    p.add_argument("--sharpen", type=float, default=None, help="unsharp mask amount (0 disables)")
    p.add_argument("--params", type=Path, default=None, help="JSON file with StackParams.to_dict() content")
    p.add_argument("--json", action="store_true", help="print frames, metrics and recipe as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..io.imageio import write_tiff16
    from ..stack.flow import FlowParams
    from ..stack.pipeline import StackParams, list_frames, process_stack

    if args.output.suffix.lower() not in (".tif", ".tiff"):
        raise InputError(args.output, "output must be a .tif/.tiff file")
    if not args.dir.exists():
        raise InputError(args.dir, "no such folder")
    params = StackParams()
    if args.params:
        try:
            params = StackParams.from_dict(json.loads(args.params.read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise InputError(args.params, f"bad parameters: {e}") from e
    if args.method:
        params = params.replace(fuse=params.fuse.replace(method=args.method))
    if args.drop_worst is not None:
        params = params.replace(sharpness=params.sharpness.replace(drop_worst=args.drop_worst))
    if args.no_flow:
        params = params.replace(flow=FlowParams(method="none"))
    if args.sharpen is not None:
        params = params.replace(sharpen=params.sharpen.replace(amount=args.sharpen))
    paths = list_frames(args.dir)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=1000, file=sys.stderr, unit="", disable=None, bar_format="{l_bar}{bar}| {elapsed}<{remaining}")

    def progress(frac: float, msg: str) -> None:
        if bar is not None:
            bar.set_description_str(msg[:24].ljust(24))
            bar.update(max(0, int(frac * 1000) - bar.n))

    try:
        res = process_stack(
            paths,
            args.scale,
            params,
            reference=args.reference,
            progress=progress,
            upscale_model=not args.no_upscale_model,
            result_dtype="uint16",  # what the TIFF holds, without float temporaries
        )
    finally:
        if bar is not None:
            bar.close()
    write_tiff16(args.output, res.image)
    if args.json:
        print(
            json.dumps(
                {"output": str(args.output), "frames": res.frames, "metrics": res.metrics, "recipe": res.recipe},
                default=float,
            )
        )
    else:
        m = res.metrics
        print(
            f"{args.output}: {m['output_size'][0]}x{m['output_size'][1]} from {m['frames_fused']} of "
            f"{m['frames_total']} frames in {m['seconds_total']:.1f} s",
            file=sys.stderr,
        )
    return 0
