"""Issue 15, fault injection: images that would take gigabytes once decoded.

Valid, tiny PNGs (zeros compress ~1000:1) that declare 15000 x 15000 16-bit
RGBA (225 MP: under the pixel limit, 4.5 GiB decoded): each run happens in a
child process whose own peak memory (VmHWM) is measured. The decoders refuse
them from the header; `stack` drops one beside good frames and names it; the
import scan reads headers only; a stack whose frames each pass but together
cannot fit the job's memory cap is refused with the figures, before decoding.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PEAK_LIMIT_MB = 500


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


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:  # noqa: ANN001
    return zero_png(tmp_path_factory.mktemp("bomb") / "huge16.png", 15000, 15000)


def _child(code: str, *, as_cap_mb: int | None = None, timeout: float = 120) -> tuple[dict, int]:
    """Run CODE in a fresh Python; return (the JSON it prints last, its peak RSS in MB)."""
    wrapper = (
        "import json, resource, sys\n"
        + (
            f"resource.setrlimit(resource.RLIMIT_AS, ({as_cap_mb} << 20, resource.RLIM_INFINITY))\n"
            if as_cap_mb
            else ""
        )
        + "out = {}\n"
        + "try:\n"
        + "".join("    " + line + "\n" for line in code.strip().splitlines())
        + "except Exception as e:\n"
        + "    out['error'] = f'{type(e).__name__}: {e}'\n"
        # VmHWM: this process's own peak; ru_maxrss would carry over the parent's from before the exec.
        + "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')][0]\n"
        + "out['peak_mb'] = int(hwm.split()[1]) / 1024\n"
        + "print(json.dumps(out))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", wrapper], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return out, int(out["peak_mb"])


def test_decoders_refuse_from_the_header(bomb: Path) -> None:
    out, peak = _child(
        f"from processing.io.imageio import load_image, probe\n"
        f"try:\n"
        f"    probe({str(bomb)!r})\n"
        f"except Exception as e:\n"
        f"    out['probe'] = str(e)\n"
        f"load_image({str(bomb)!r})\n"
    )
    assert "15000 x 15000 x 4 channels of 16 bits" in out["probe"] and "refused before decoding" in out["probe"]
    assert out["error"].startswith("InputError") and str(bomb) in out["error"]
    assert peak < PEAK_LIMIT_MB, peak
    print(f"\n15000x15000 16-bit RGBA PNG ({bomb.stat().st_size / 1e6:.1f} MB): refused, child peak {peak} MB")


def test_stack_drops_the_bomb_and_names_it(bomb: Path, tmp_path: Path) -> None:
    from processing.io.imageio import write_image

    rng = np.random.default_rng(3)
    base = rng.random((96, 128, 3)).astype(np.float32)
    for i in range(2):
        write_image(tmp_path / f"a{i}.png", np.roll(base, i, axis=1))
    shutil.copy(bomb, tmp_path / "b_huge.png")
    out, peak = _child(
        "from pathlib import Path\n"
        "from processing.stack.pipeline import StackParams, list_frames, process_stack\n"
        f"res = process_stack(list_frames({str(tmp_path)!r}), 1.0, StackParams(), upscale_model=False)\n"
        "out['frames'] = res.frames\n",
        as_cap_mb=16384,
        timeout=300,
    )
    assert "error" not in out, out.get("error")
    huge = next(f for f in out["frames"] if f["file"] == "b_huge.png")
    assert "refused before decoding" in huge["reason"]
    assert peak < PEAK_LIMIT_MB, peak
    print(f"stack of 2 good frames and the bomb under a 16 GiB cap: bomb dropped and named, child peak {peak} MB")


def test_import_scan_reads_headers_only(bomb: Path, tmp_path: Path) -> None:
    cap = tmp_path / "capture"
    cap.mkdir()
    for i in range(2):
        shutil.copy(bomb, cap / f"IMG_{i:04d}.png")
    out, peak = _child(  # what the admin's dry-run import does
        "from processing.capture.ingest import plan_capture\n"
        f"plan = plan_capture({str(cap)!r})\n"
        "out['skipped'] = [m.skipped for m in plan.skipped]\n",
    )
    assert "error" not in out, out.get("error")
    assert len(out["skipped"]) == 2 and all(s and "refused before decoding" in s for s in out["skipped"]), out
    assert peak < PEAK_LIMIT_MB, peak
    print(f"import scan of two such files: both skipped from the header, child peak {peak} MB")


def test_stack_that_cannot_fit_the_cap_is_refused_with_the_figures(tmp_path: Path) -> None:
    # Each 8000 x 8000 8-bit RGB frame passes on its own (64 MP); fusing three at x2 cannot fit 3 GiB.
    for i in range(3):
        zero_png(tmp_path / f"f{i}.png", 8000, 8000, bits=8, colour_type=2)
    out, peak = _child(
        "from processing.stack.pipeline import StackParams, list_frames, process_stack\n"
        f"process_stack(list_frames({str(tmp_path)!r}), 2.0, StackParams(), upscale_model=False)\n",
        as_cap_mb=3072,
    )
    err = out.get("error", "")
    assert err.startswith("InputError") and "GiB" in err and "refused before decoding" in err, out
    assert "3 frames of 8000 x 8000" in err
    assert peak < PEAK_LIMIT_MB, peak
    print(f"3 x 8000x8000 at x2 under a 3 GiB cap: {err.split(': ', 2)[-1]}; child peak {peak} MB")
