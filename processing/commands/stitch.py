"""python -m processing stitch DIR -o OUT --projection cylindrical|equirectangular."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..io.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="folder of images (or one image list file with one path per line)")
    p.add_argument("-o", "--out", required=True, help="output .tif (tiled BigTIFF RGBA), .png or .jpg")
    p.add_argument(
        "--projection",
        choices=["cylindrical", "equirectangular", "mercator", "rectilinear", "stereographic", "planar"],
        default="cylindrical",
    )
    p.add_argument(
        "--crop",
        choices=["auto", "on", "off"],
        default="auto",
        help="cut to the largest filled rectangle (auto: partial panoramas only)",
    )
    p.add_argument("--wrap", action="store_true", help="360-degree cylinder (equirectangular always wraps)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    p.add_argument("--placements", help="angles.csv / image_list.txt with approximate yaw,pitch,roll,focal")
    p.add_argument("--proxy-mp", type=float, default=0.5, help="feature proxy size in megapixels")
    p.add_argument("--glob", default="*", help="file name pattern inside DIR")
    p.add_argument("--exclude", action="append", default=[], help="file name pattern to skip (repeatable)")
    p.add_argument("--scale", type=float, default=1.0, help="output px/rad relative to the median focal")
    p.add_argument("--max-mp", type=float, default=0.0, help="shrink the canvas to at most this many MP")
    p.add_argument("--bands", type=int, default=-1, help="multi-band levels (-1 auto, 0 hard seams)")
    p.add_argument("--bits", type=int, choices=[8, 16], default=8)
    p.add_argument("--block", type=int, default=1024)
    p.add_argument("--vignetting", action="store_true", help="estimate and correct radial vignetting")
    p.add_argument("--no-gain", action="store_true", help="no gain compensation")
    p.add_argument("--seams", choices=["dp", "voronoi"], default="dp", help="seam finding")
    p.add_argument(
        "--fine-seams",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="dp seams: cut them again at full resolution along the proxy seams (default; --no-fine-seams: "
        "proxy labels only)",
    )
    p.add_argument(
        "--lens-k1",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="estimate radial lens distortion k1 per lens (default; --no-lens-k1: pinhole)",
    )
    p.add_argument("--lens", action="store_true", help="estimate k1, k2 and the principal point shift d, e per lens")
    p.add_argument(
        "--min-share",
        type=float,
        default=0.5,
        help="fail (exit 2, naming the dropped images) when fewer than this share of the images join",
    )
    p.add_argument("--allow-partial", action="store_true", help="stitch whatever joined, however few")
    p.add_argument(
        "--tone",
        choices=["shoulder", "clip"],
        default="shoulder",
        help="shoulder: bright content is compressed below white, never clipped (default)",
    )
    p.add_argument("--exposure", choices=["joint", "means"], default="joint", help="exposure model")
    p.add_argument(
        "--response",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fit a camera response per lens with the joint exposure (default; --no-response: gains on the "
        "encoded values, a power-law response)",
    )
    p.add_argument("--sky", metavar="DIR", help="folder of a separately shot sky capture to merge in last")


def run(args: argparse.Namespace) -> int:
    from fnmatch import fnmatch

    from tqdm import tqdm

    from ..stitch.pipeline import StitchParams, list_images, stitch_files
    from ..stitch.registration import find_placements_file, load_placements

    src = Path(args.dir)
    files = [p for p in list_images(src, args.glob) if not any(fnmatch(p.name, e) for e in args.exclude)]
    if not files:
        raise InputError(src, "no images left after --exclude")
    sky = _sky_capture(args) if args.sky else None  # a bad sky folder fails before the long stitch
    pl_path = Path(args.placements) if args.placements else find_placements_file(src)
    placements = load_placements(pl_path) if pl_path else None
    try:
        params = StitchParams(
            projection=args.projection,
            wrap=bool(args.wrap or args.projection == "equirectangular"),
            proxy_mp=args.proxy_mp,
            scale=args.scale,
            max_output_mp=args.max_mp,
            bands=args.bands,
            bits=args.bits,
            block=args.block,
            vignetting=args.vignetting,
            gain_compensation=not args.no_gain,
            lens_k1=args.lens_k1,
            lens_full=args.lens,
            seams=args.seams,
            fine_seams=args.fine_seams,
            min_share=args.min_share,
            crop=args.crop,
            allow_partial=args.allow_partial,
            tone=args.tone,
            exposure=args.exposure,
            response=args.response,
        )
        params.validate()
    except ValueError as e:
        raise InputError(src, str(e)) from e
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, file=sys.stderr, leave=False)
        bar.total = total
        bar.n = done
        bar.refresh()

    res = stitch_files(files, args.out, params, placements, progress)
    for b in bars.values():
        b.close()
    print(
        f"{res.placed}/{res.total} placed, {res.width}x{res.height}, {res.seconds:.1f} s -> {args.out}", file=sys.stderr
    )
    for d in res.dropped:
        print(f"dropped {d['file']}: {d['reason']}", file=sys.stderr)
    if res.focal_source:
        print(f"focal: {res.focal_source}", file=sys.stderr)
    summary = res.summary()
    if sky is not None:
        from ..stitch.layers import merge_sky_capture

        summary["sky"] = merge_sky_capture(args.out, sky[0], sky_placements=sky[1], bits=args.bits)
        s = summary["sky"]
        print(f"sky: {s['placed']}/{s['sky_images']} placed, gain {s['exposure_gain']} -> {args.out}", file=sys.stderr)
        for d in s["dropped"]:
            print(f"dropped sky {d['file']}: {d['reason']}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    return 0


def _sky_capture(args: argparse.Namespace) -> tuple[list[Path], dict | None]:
    """The sky images of --sky DIR and their placements file, if any."""
    from ..stitch.pipeline import list_images
    from ..stitch.registration import find_placements_file, load_placements

    d = Path(args.sky)
    files = list_images(d)
    pl = find_placements_file(d)
    return files, (load_placements(pl) if pl else None)
