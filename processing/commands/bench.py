"""python -m processing bench NAME ...: dispatch to processing/bench/<name>.py."""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHES = {
    "sr": "stack super-resolution: PSNR/SSIM, registration error, speed",
    "fusion": "the broad fusion evaluation: many photos and noise levels against bicubic and the tuned seed; --raw",
    "develop": "one frame's develop step: JPEG decoders, lookup, proxies",
    "upscale": "EDSR settings against ground truth",
    "edsr": "EDSR on Set5/Set14/B100 against bicubic",
    "stitch": "stitching against OpenStitching and ground truth",
    "sky": "the sky capture merged into a ground panorama, against ground truth",
    "pyramid": "Deep Zoom writing against plain dzsave",
    "serve": "tile serving load test on loopback",
    "api": "review API and tiles under concurrent clients (gunicorn on loopback)",
    "ingest": "capture metadata scan throughput",
    "limits": "huge images refused from the header: peak memory of each case in a child",
    "farm": "block and reduce jobs on 1, 2, ... workers against one render + dzsave",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=sorted(BENCHES), help="which benchmark")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of that benchmark")


def run(args: argparse.Namespace) -> int:
    mod = importlib.import_module(f"processing.bench.{args.name}")
    sp = argparse.ArgumentParser(prog=f"python -m processing bench {args.name}", description=BENCHES[args.name])
    mod.add_arguments(sp)
    sub = sp.parse_args(args.rest)
    rc = mod.run(sub)
    sys.stdout.flush()
    return int(rc or 0)
