"""Capture metadata scan throughput: a synthetic tree of tiny JPEGs, scanned
cold (headers read, cache written) and again from the cache.

python -m processing bench ingest [--files 100000] [--dir /tmp] [--keep]

Every frame is its own file with its own EXIF capture time (a template JPEG
with the time bytes patched), 20 frames a burst 0.05 s apart, bursts 3 s
apart, 1,000 files a folder, four sub-panorama folders.
"""

from __future__ import annotations

import argparse
import calendar
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..capture.ingest import IngestParams, plan_capture, scan_capture
from .common import emit, peak_rss_mb

T0 = calendar.timegm((2024, 3, 1, 10, 0, 0, 0, 0, 0))
STAMP = "2000:01:01 00:00:00"
SUBSEC = "000"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--files", type=int, default=100_000, help="number of frames in the synthetic tree")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where to build the tree (deleted after)")
    p.add_argument("--keep", action="store_true", help="keep the tree and cache")
    p.add_argument("--burst", type=int, default=20, help="frames per burst")


def _templates(n: int = 8) -> list[tuple[bytes, list[int], list[int]]]:
    """Small JPEGs with placeholder times; returns (bytes, stamp offsets, subsec offsets)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        img = (rng.random((8, 12, 3)) * 255).astype(np.uint8)
        im = Image.fromarray(img).resize((96, 64), Image.Resampling.BICUBIC)
        ex = Image.Exif()
        ex[0x0132] = STAMP
        ifd = ex.get_ifd(0x8769)
        ifd[0x9003] = STAMP
        ifd[0x9291] = SUBSEC
        ifd[0x829A] = 1 / 1000
        ifd[0x8827] = 100
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=80, exif=ex)
        data = buf.getvalue()
        stamps = _find_all(data, STAMP.encode())
        subs = _find_all(data, (SUBSEC + "\x00").encode())
        out.append((data, stamps, subs[:1]))
    return out


def _find_all(data: bytes, needle: bytes) -> list[int]:
    pos, i = [], data.find(needle)
    while i >= 0:
        pos.append(i)
        i = data.find(needle, i + 1)
    return pos


def build_tree(root: Path, files: int, burst: int = 20) -> int:
    """Write FILES tiny JPEGs; returns the number of bursts."""
    temps = _templates()
    per_sub = max(1, -(-files // 4))
    n = 0
    bursts = 0
    t = float(T0)
    for s in range(4):
        count = min(per_sub, files - n)
        for i in range(count):
            if i % burst == 0:
                t += 3.0
                bursts += 1
            else:
                t += 0.05
            data, stamps, subs = temps[bursts % len(temps)]
            ms = round(t * 1000)
            stamp = time.strftime("%Y:%m:%d %H:%M:%S", time.gmtime(ms // 1000)).encode()
            sub = f"{ms % 1000:03d}".encode()
            buf = bytearray(data)
            for o in stamps:
                buf[o : o + len(stamp)] = stamp
            for o in subs:
                buf[o : o + 3] = sub
            folder = root / f"sub{s + 1}" / f"{100 + i // 1000}CAM"
            if i % 1000 == 0:
                folder.mkdir(parents=True, exist_ok=True)
            (folder / f"IMG_{i % 10000:04d}.JPG").write_bytes(bytes(buf))
            n += 1
        t += 3600.0
    return bursts


def run(args: argparse.Namespace) -> int:
    base = Path(tempfile.mkdtemp(prefix="terapan-ingest-bench-", dir=args.dir))
    root = base / "capture"
    cache = base / "cache.sqlite3"
    try:
        t0 = time.perf_counter()
        bursts = build_tree(root, args.files, args.burst)
        build_s = time.perf_counter() - t0

        def scan() -> tuple[float, int, int]:
            t = time.perf_counter()
            ok = bad = 0
            for fm in scan_capture(root, cache_path=cache):
                if fm.ok:
                    ok += 1
                else:
                    bad += 1
            return time.perf_counter() - t, ok, bad

        cold_s, ok, bad = scan()
        cached_s, ok2, _ = scan()
        t = time.perf_counter()
        plan = plan_capture(root, cache=cache, params=IngestParams())
        plan_s = time.perf_counter() - t
        stacks = sum(len(v) for v in plan.subpanoramas.values())
        emit(
            {
                "bench": "ingest",
                "files": args.files,
                "frames_ok": ok,
                "skipped": bad,
                "build_tree_s": round(build_s, 2),
                "cold_scan_s": round(cold_s, 2),
                "cold_frames_per_s": round(ok / cold_s, 1),
                "cached_scan_s": round(cached_s, 2),
                "cached_frames_per_s": round(ok2 / cached_s, 1),
                "plan_cached_s": round(plan_s, 2),
                "plan_frames_per_s": round(ok2 / plan_s, 1),
                "bursts_written": bursts,
                "stacks_found": stacks,
                "subpanoramas": len(plan.subpanoramas),
                "cache_mb": round(cache.stat().st_size / 1e6, 1),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "cpu_count": os.cpu_count(),
                "note": "OS page cache warm (tree just written); cold = headers read and cache written",
            }
        )
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0
