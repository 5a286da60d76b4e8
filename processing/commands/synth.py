"""python -m processing synth KIND ...: synthetic data with ground truth.

Kinds: `burst` (a handheld burst from a real photo). Each kind is a function
`_add_KIND(subparsers)` + `_run_KIND(args)`, so others can add more kinds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io.errors import InputError


def _add_burst(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("burst", help="a handheld burst (frames 1/S of the GT) with truth.json")
    p.add_argument("gt", type=Path, help="ground-truth photo")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--scale", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.004, help="noise sigma at full scale (linear)")
    p.add_argument("--turbulence", type=float, default=0.0, help="RMS turbulence displacement, frame px")
    p.add_argument("--shift", type=float, default=20.0, help="max jitter, frame px")
    p.add_argument("--rotation", type=float, default=1.0, help="max rotation, degrees")
    p.add_argument("--perspective", type=float, default=0.002)
    p.add_argument("--size", default=None, help="WxH central crop of the GT (GT pixels)")
    p.add_argument("--format", choices=["png", "jpg"], default="png", help="frames as 16-bit PNG or JPEG")
    p.add_argument("--moving-object", action="store_true", help="paint a moving square (ghost test)")


def _crop(gt_path: Path, size: str | None):
    from ..io.imageio import load_image

    img, _ = load_image(gt_path)
    if not size:
        return img, None
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError as e:
        raise InputError(None, f"--size must be WxH, not {size!r}") from e
    ih, iw = img.shape[:2]
    if w > iw or h > ih or w < 16 or h < 16:
        raise InputError(gt_path, f"crop {w}x{h} does not fit the {iw}x{ih} image")
    x0, y0 = (iw - w) // 2, (ih - h) // 2
    return img[y0 : y0 + h, x0 : x0 + w], (x0, y0, w, h)


def _run_burst(args: argparse.Namespace) -> int:
    from ..synth.synth import make_burst, write_burst

    if args.frames < 1 or args.scale <= 0:
        raise InputError(None, "--frames must be >= 1 and --scale > 0")
    gt, crop = _crop(args.gt, args.size)
    burst = make_burst(
        gt,
        args.frames,
        args.scale,
        seed=args.seed,
        shift_px=args.shift,
        rotation_deg=args.rotation,
        perspective=args.perspective,
        turbulence_px=args.turbulence,
        noise=args.noise,
        moving_object=args.moving_object,
    )
    write_burst(burst, args.output, fmt=args.format, gt_source=str(args.gt), crop=crop)
    print(args.output)
    return 0


def _add_panorama(sub: argparse._SubParsersAction) -> None:
    from . import synth_panorama

    synth_panorama.add_arguments(sub.add_parser("panorama", help="ground-truth panorama views (cube map or cylinder)"))


def _run_panorama(args: argparse.Namespace) -> int:
    from . import synth_panorama

    return synth_panorama.run(args)


KINDS = {"burst": (_add_burst, _run_burst), "panorama": (_add_panorama, _run_panorama)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="kind", metavar="KIND")
    sub.required = True
    for add, _ in KINDS.values():
        add(sub)


def run(args: argparse.Namespace) -> int:
    return KINDS[args.kind][1](args)
