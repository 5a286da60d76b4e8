import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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
