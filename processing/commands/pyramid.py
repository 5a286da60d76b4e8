"""python -m processing pyramid IN -o DIR: write DIR/image.dzi and DIR/image_files/."""

from __future__ import annotations

import argparse
import json

from ..io.errors import InputError
from ..tiles.pyramid import FORMATS, PyramidParams, build_pyramid


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="image to tile (TIFF, .v, PNG, JPEG, WebP)")
    p.add_argument("-o", "--output", required=True, help="pyramid folder to create (must not exist)")
    p.add_argument("--tile-size", type=int, default=254)
    p.add_argument("--overlap", type=int, default=1)
    p.add_argument("--format", choices=FORMATS, default="jpg")
    p.add_argument("--quality", type=int, default=85)


def run(args: argparse.Namespace) -> int:
    try:
        params = PyramidParams(tile_size=args.tile_size, overlap=args.overlap, format=args.format, quality=args.quality)
    except ValueError as e:
        raise InputError(None, str(e)) from e
    info = build_pyramid(args.input, args.output, params)
    print(json.dumps(info))
    return 0
