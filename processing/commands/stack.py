"""python -m processing stack DIR -o OUT --scale S: fuse one burst.

Writes OUT atomically by its extension: .tif/.tiff and .png as 16-bit RGB,
.jpg/.jpeg as 8-bit; exactly round(S x reference size), in the reference
frame's coordinates (see processing/stack/pipeline.py). Progress goes to stderr
(tqdm), closed (its line ended) before any message; frames that were skipped
are named on stderr with the reason, file names escaped (io.errors.one_line);
--json prints the frames, metrics and recipe on stdout. --bayer fuses RAW
bursts straight from their mosaics (processing/stack/bayer.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..io.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="folder with the frames (jpg/png/tif/dng/raw)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .tif/.png (16-bit RGB) or .jpg (8-bit)")
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
    p.add_argument(
        "--bayer",
        action="store_true",
        help="RAW bursts: fuse straight from the Bayer mosaics (each raw sample once, with its colour)",
    )


OUTPUT_EXTS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def _write(path: Path, img) -> None:
    """IMG (uint16 codes or float [0, 1]) by PATH's extension; JPEG gets the
    16-bit codes rounded to 8 bits."""
    import numpy as np

    from ..io.imageio import write_image

    if path.suffix.lower() in (".jpg", ".jpeg") and img.dtype == np.uint16:
        img = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    write_image(path, img)


def _say_skipped(frames: list[dict]) -> None:
    from ..io.errors import one_line

    for fr in frames:
        if not fr.get("kept") and fr.get("reason"):
            print(f"skipped {one_line(str(fr['file']))}: {one_line(str(fr['reason']))}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from ..stack.flow import FlowParams
    from ..stack.pipeline import StackParams, list_frames, process_stack

    if args.output.suffix.lower() not in OUTPUT_EXTS:
        raise InputError(args.output, "output must be a .tif, .tiff, .png, .jpg or .jpeg file")
    if not args.dir.exists():
        raise InputError(args.dir, "no such folder")
    if args.bayer:
        return _run_bayer(args)
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

    from ..io.errors import one_line

    def progress(frac: float, msg: str) -> None:
        if bar is not None:
            bar.set_description_str(one_line(msg)[:24].ljust(24))
            bar.update(max(0, int(frac * 1000) - bar.n))

    try:  # the bar is closed, its line ended, before any message is printed
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
    _say_skipped(res.frames)
    _write(args.output, res.image)
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


def _run_bayer(args: argparse.Namespace) -> int:
    import time

    from ..io.imageio import to_uint16
    from ..stack.bayer import process_raw_stack
    from ..stack.pipeline import list_frames

    t0 = time.perf_counter()
    img, frames = process_raw_stack(list_frames(args.dir), args.scale, args.reference)
    _say_skipped(frames)
    _write(args.output, to_uint16(img))
    kept = sum(1 for f in frames if f["kept"])
    if args.json:
        meta = {"output_size": [int(img.shape[1]), int(img.shape[0])], "frames_fused": kept, "route": "bayer"}
        print(json.dumps({"output": str(args.output), "frames": frames, "metrics": meta}))
    else:
        print(
            f"{args.output}: {img.shape[1]}x{img.shape[0]} from {kept} of {len(frames)} RAW frames (Bayer fusion) "
            f"in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
    return 0
