import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from processing.io.imageio import load_image
from processing.io.metrics import psnr

from .._sr_helpers import gt_image

ROOT = Path(__file__).resolve().parents[3]


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "processing", *args], capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )


def test_synth_then_stack_cli(tmp_path):
    gtp = tmp_path / "gt.png"
    from processing.io.imageio import write_image

    write_image(gtp, gt_image(256))
    r = _cli(
        "synth",
        "burst",
        str(gtp),
        "-o",
        str(tmp_path / "b"),
        "--frames",
        "6",
        "--scale",
        "2",
        "--seed",
        "3",
        "--size",
        "192x160",
        "--shift",
        "4",
    )
    assert r.returncode == 0, r.stderr
    truth = json.loads((tmp_path / "b" / "truth.json").read_text())
    assert truth["frame_size"] == [96, 80] and truth["crop"] == [32, 48, 192, 160]
    out = tmp_path / "out.tif"
    r = _cli("stack", str(tmp_path / "b"), "-o", str(out), "--scale", "2", "--json")
    assert r.returncode == 0, r.stderr
    img = tifffile.imread(out)
    assert img.shape == (160, 192, 3) and img.dtype == np.uint16
    meta = json.loads(r.stdout)
    assert meta["metrics"]["output_size"] == [192, 160]
    # Output grid = GT grid: a half-pixel shift would cost far more than this.
    gt, _ = load_image(tmp_path / "b" / "truth" / "gt.png")
    fused = img.astype(np.float32) / 65535
    import cv2

    best = psnr(fused, gt, 8)
    for dx, dy in ((0.5, 0), (0, 0.5), (-0.5, 0), (0, -0.5)):
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        shifted = cv2.warpAffine(fused, m, (192, 160), borderMode=cv2.BORDER_REFLECT)
        assert psnr(shifted, gt, 8) < best
    assert best > 30


def test_stack_cli_bad_input(tmp_path):
    r = _cli("stack", str(tmp_path / "missing"), "-o", str(tmp_path / "o.tif"), "--scale", "2")
    assert r.returncode != 0 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    r = _cli("stack", str(tmp_path / "empty"), "-o", str(tmp_path / "o.tif"), "--scale", "2")
    assert r.returncode != 0 and "no images" in r.stderr
    assert not (tmp_path / "o.tif").exists()


def _small_burst(folder: Path, frames: int = 4) -> None:
    from processing.synth.synth import make_burst, write_burst

    from .._sr_helpers import texture

    write_burst(make_burst(texture(256, seed=2), frames, 2.0, seed=4, noise=0.004), folder)


def test_stack_writes_png_16bit_and_jpeg_by_extension(tmp_path):
    import cv2

    _small_burst(tmp_path / "b")
    for name, dtype in (("out.png", np.uint16), ("out.jpg", np.uint8)):
        r = _cli("stack", str(tmp_path / "b"), "-o", str(tmp_path / name), "--scale", "2", "--quiet")
        assert r.returncode == 0, r.stderr
        img = cv2.imread(str(tmp_path / name), cv2.IMREAD_UNCHANGED)
        assert img.shape == (256, 256, 3) and img.dtype == dtype
    # The same pixels in both files (JPEG within its compression).
    png = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 65535
    jpg = cv2.imread(str(tmp_path / "out.jpg")).astype(np.float32) / 255
    assert psnr(jpg, png) > 30
    r = _cli("stack", str(tmp_path / "b"), "-o", str(tmp_path / "out.bmp"), "--scale", "2")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "out.bmp" in r.stderr
    assert not (tmp_path / "out.bmp").exists()


def test_skipped_frames_are_named_escaped_without_json(tmp_path):
    _small_burst(tmp_path / "b", frames=5)
    evil = "frame_009\x1b[31m\nred.png"
    (tmp_path / "b" / evil).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    r = _cli("stack", str(tmp_path / "b"), "-o", str(tmp_path / "o.tif"), "--scale", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("skipped ")]
    # The corrupt file (escaped, one line) and the two the sharpness ranking dropped.
    assert sum("skipped frame_009\\x1b[31m\\nred.png: unreadable" in ln for ln in lines) == 1
    assert sum("among the 2 lowest" in ln for ln in lines) == 2
    assert "\x1b" not in r.stderr
    # A failure names the file in one escaped line too.
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / evil).write_bytes(b"garbage")
    (tmp_path / "c" / "x.png").write_bytes(b"garbage")
    r = _cli("stack", str(tmp_path / "c"), "-o", str(tmp_path / "o2.tif"), "--scale", "2", "--quiet")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "\\x1b[31m\\nred.png" in r.stderr and "\x1b" not in r.stderr


def test_error_after_progress_bar_starts_its_own_line(tmp_path):
    """With stderr on a terminal the bar is drawn; the error that ends the run
    comes after the bar's line is ended, never glued to it."""
    import pty
    import select

    (tmp_path / "c").mkdir()
    from processing.io.imageio import write_image

    from .._sr_helpers import texture

    write_image(tmp_path / "c" / "a.png", texture(64))
    for name in ("b.png", "c.png"):
        (tmp_path / "c" / name).write_bytes(b"garbage")
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="100")
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "processing",
            "stack",
            str(tmp_path / "c"),
            "-o",
            str(tmp_path / "o.tif"),
            "--scale",
            "2",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=env,
        cwd=ROOT,
    )
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    assert p.wait(timeout=60) == 2
    text = out.decode(errors="replace")
    assert "error:" in text and "|" in text.split("error:")[0]  # the bar was drawn
    before = text[: text.index("error:")]
    assert before.endswith("\n"), repr(text[-200:])


RAW = ROOT.parent / "shared" / "data" / "raw"


@pytest.mark.skipif(not (RAW / "RAW_KODAK_DC50.KDC").is_file(), reason="shared RAW samples not present")
def test_stack_bayer_route_on_real_raw_files(tmp_path):
    import shutil

    import cv2

    (tmp_path / "r").mkdir()
    for i in range(3):
        shutil.copy(RAW / "RAW_KODAK_DC50.KDC", tmp_path / "r" / f"k{i}.kdc")
    shutil.copy(RAW / "Nikon_filmscan.nef", tmp_path / "r" / "scan.nef")  # RGB, not Bayer: skipped, named
    r = _cli("stack", str(tmp_path / "r"), "-o", str(tmp_path / "o.png"), "--scale", "2", "--bayer", "--json")
    assert r.returncode == 0, r.stderr
    assert "skipped scan.nef: unreadable: not a Bayer RAW" in r.stderr
    meta = json.loads(r.stdout)
    assert meta["metrics"]["frames_fused"] == 3 and meta["metrics"]["output_size"] == [1536, 1024]
    img = cv2.imread(str(tmp_path / "o.png"), cv2.IMREAD_UNCHANGED)
    assert img.shape == (1024, 1536, 3) and img.dtype == np.uint16 and 1000 < img.mean() < 60000
