"""Memory bounded before decoding: what refusing from the header costs.

python -m processing bench limits [--dir /tmp] [--side 15000]

Valid PNGs of zeros (they compress about 1000:1, so they are tiny on disk)
that declare SIDE x SIDE 16-bit RGBA: each case runs in a fresh Python whose
own peak resident memory (VmHWM) is reported, one JSON object per case:

- probe: `load_image` of the file (refused from the header);
- stack: `process_stack` of two good frames and that file, under a 16 GiB
  address-space cap (the file is dropped and named);
- scan: an import plan (`plan_capture`) of a folder of two such files;
- estimate: three 8000 x 8000 8-bit frames (each allowed) fused at x2 under
  a 3 GiB cap: refused with the figures before decoding.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from .common import emit

ROOT = Path(__file__).resolve().parents[2]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where to write the files (deleted after)")
    p.add_argument("--side", type=int, default=15000, help="side of the 16-bit RGBA PNG, pixels")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def zero_png(path: Path, width: int, height: int, bits: int = 16, colour_type: int = 6) -> Path:
    """A valid PNG of zeros, written row by row (never the whole image in memory)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row = b"\0" * (1 + width * channels * bits // 8)  # filter byte + samples
    comp = zlib.compressobj(9)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, colour_type, 0, 0, 0)))
        buf = bytearray()
        for _ in range(height):
            buf += comp.compress(row)
            if len(buf) > 1 << 20:
                f.write(_chunk(b"IDAT", bytes(buf)))
                buf.clear()
        buf += comp.flush()
        f.write(_chunk(b"IDAT", bytes(buf)))
        f.write(_chunk(b"IEND", b""))
    return path


def run_child(code: str, as_cap_mb: int | None = None, timeout: float = 300) -> dict:
    """Run CODE (which fills the dict `out`) in a fresh Python; `out` gains
    'error' (an exception's one line), 'peak_mb' (the child's own VmHWM) and 'seconds'."""
    lines = ["import json, resource, sys, time", "t0 = time.perf_counter()", "out = {}"]
    if as_cap_mb:
        lines.append(f"resource.setrlimit(resource.RLIMIT_AS, ({int(as_cap_mb)} << 20, resource.RLIM_INFINITY))")
    lines.append("try:")
    lines += ["    " + ln for ln in code.strip().splitlines()]
    lines += [
        "except Exception as e:",
        "    out['error'] = f'{type(e).__name__}: {e}'",
        # VmHWM: this process's own peak (ru_maxrss would carry the parent's over the exec).
        "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')][0]",
        "out['peak_mb'] = round(int(hwm.split()[1]) / 1024, 1)",
        "out['seconds'] = round(time.perf_counter() - t0, 3)",
        "print(json.dumps(out, default=str))",
    ]
    r = subprocess.run(
        [sys.executable, "-c", "\n".join(lines)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"child failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def probe_case(bomb: Path) -> dict:
    return run_child(f"from processing.io.imageio import load_image\nload_image({str(bomb)!r})\n")


def stack_case(bomb: Path, folder: Path) -> dict:
    from ..io.imageio import write_image

    folder.mkdir(parents=True, exist_ok=True)
    base = np.random.default_rng(3).random((96, 128, 3)).astype(np.float32)
    for i in range(2):
        write_image(folder / f"a{i}.png", np.roll(base, i, axis=1))
    shutil.copy(bomb, folder / "b_huge.png")
    return run_child(
        "from processing.stack.pipeline import StackParams, list_frames, process_stack\n"
        f"res = process_stack(list_frames({str(folder)!r}), 1.0, StackParams(), upscale_model=False)\n"
        "out['frames'] = res.frames\n",
        as_cap_mb=16384,
    )


def scan_case(bomb: Path, folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        shutil.copy(bomb, folder / f"IMG_{i:04d}.png")
    return run_child(
        "from processing.capture.ingest import plan_capture\n"
        f"plan = plan_capture({str(folder)!r})\n"
        "out['skipped'] = [m.skipped for m in plan.skipped]\n"
    )


def estimate_case(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        zero_png(folder / f"f{i}.png", 8000, 8000, bits=8, colour_type=2)
    return run_child(
        "from processing.stack.pipeline import StackParams, list_frames, process_stack\n"
        f"process_stack(list_frames({str(folder)!r}), 2.0, StackParams(), upscale_model=False)\n",
        as_cap_mb=3072,
    )


def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="terapan-bench-limits-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        bomb = zero_png(work / "huge16.png", args.side, args.side)
        made = time.perf_counter() - t0
        info = {"side": args.side, "file_mb": round(bomb.stat().st_size / 1e6, 2), "write_seconds": round(made, 1)}
        out = probe_case(bomb)
        emit({"bench": "limits", "case": "probe", **info, **out})
        out = stack_case(bomb, work / "stack")
        huge = next((f for f in out.pop("frames", []) if f["file"] == "b_huge.png"), {})
        emit({"bench": "limits", "case": "stack", **info, "dropped_reason": huge.get("reason"), **out})
        out = scan_case(bomb, work / "scan")
        emit({"bench": "limits", "case": "scan", **info, **out})
        out = estimate_case(work / "estimate")
        emit({"bench": "limits", "case": "estimate", "frames": "3 x 8000x8000 8-bit", "cap_mb": 3072, **out})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0
