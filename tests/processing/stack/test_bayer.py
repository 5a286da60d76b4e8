"""Fusion straight from the Bayer mosaic (processing/bayer.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from processing.bench.bursts import BurstSpec, make_burst
from processing.io.errors import InputError
from processing.io.metrics import psnr
from processing.stack.bayer import PATTERNS, RawFrame, demosaic, fuse_mosaics, fuse_raw_burst, grey_proxy, read_raw

from .._sr_helpers import SHARED

RAW = SHARED / "raw"


def _scene(size: int = 360, seed: int = 3) -> np.ndarray:
    """A textured sRGB scene with structure at several scales (features for
    the aligner, detail above the frames' Nyquist for the fusion)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.float32)
    for sigma, amp in ((12.0, 0.5), (3.0, 0.3), (1.2, 0.2)):
        n = rng.normal(size=(size, size, 3)).astype(np.float32)
        n = cv2.GaussianBlur(n, (0, 0), sigma)
        img += amp * n / n.std()
    img = np.clip(0.45 + 0.06 * img, 0.0, 1.0)
    # Polygons of random brightness: corners for the aligner.
    for _ in range(size // 3):
        c = rng.integers(0, size, 2)
        pts = (c + rng.integers(-14, 15, (4, 2))).astype(np.int32)
        v = float(rng.uniform(0.02, 0.98))
        col = tuple(float(np.clip(v + d, 0, 1)) for d in rng.uniform(-0.1, 0.1, 3))
        cv2.fillPoly(img, [pts], col)
    return img


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    m = np.empty(rgb.shape[:2], np.float32)
    for k, c in enumerate(pattern):
        dy, dx = k // 2, k % 2
        m[dy::2, dx::2] = rgb[dy::2, dx::2, "RGB".index(c)]
    return m


@pytest.mark.parametrize("pattern", PATTERNS)
def test_levels_white_balance_and_pattern(pattern: str) -> None:
    rgb = np.zeros((6, 8, 3), np.float32)
    rgb[...] = (0.2, 0.5, 0.3)
    raw = (_mosaic(rgb, pattern) * 3000 + 200).astype(np.uint16)
    f = RawFrame(raw, pattern, 200.0, 3200.0, np.array([2.0, 1.0, 1.5], np.float32))
    bal = f.balanced()
    want = _mosaic(np.broadcast_to(np.float32([0.4, 0.5, 0.45]), rgb.shape).copy(), pattern)
    assert np.allclose(bal, want, atol=1e-5)
    assert np.allclose(demosaic(f)[3, 4], (0.4, 0.5, 0.45), atol=2e-3)


def test_flat_colour_burst_fuses_to_that_colour() -> None:
    """Every raw sample lands with its own colour: a flat colour stays exact
    through the fusion for every CFA pattern and sub-pixel shifts."""
    colour = np.float32([0.6, 0.35, 0.15])
    rgb = np.broadcast_to(colour, (40, 48, 3)).copy()
    for pattern in PATTERNS:
        frames = [RawFrame(_mosaic(rgb, pattern), pattern, 0.0, 1.0, np.ones(3, np.float32)) for _ in range(4)]
        ts = [np.eye(3)] + [
            np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1.0]]) for dx, dy in ((0.5, 0.2), (-0.7, 1.1), (1.3, -0.4))
        ]
        out, _ = fuse_mosaics(frames, ts, 2.0)
        assert out.shape == (80, 96, 3)
        assert np.abs(out[8:-8, 8:-8] - colour).max() < 1e-3, pattern


def test_bayer_fusion_beats_demosaicked_reference_with_known_transforms() -> None:
    scene = _scene()
    b = make_burst(scene, BurstSpec(frames=8, noise=0.004, moving_object=False, seed=2), max_side=160, raw=True)
    wb = np.array(b.meta["white_balance"], np.float32)
    frames = [RawFrame(m, "RGGB", 0.0, 1.0, wb) for m in b.frames]
    from processing.stack.bayer import finish

    lin, info = fuse_mosaics(frames, b.transforms, 2.0)
    fused = finish(lin, info, len(frames), 2.0)
    ref = demosaic(frames[0], encode=True)
    oh, ow = b.gt.shape[:2]
    bic = np.clip(cv2.resize(ref, (ow, oh), interpolation=cv2.INTER_CUBIC), 0, 1)
    assert psnr(fused, b.gt, 8) > psnr(bic, b.gt, 8) + 1.0


def test_fuse_raw_burst_aligns_by_itself() -> None:
    scene = _scene(420, seed=4)
    b = make_burst(scene, BurstSpec(frames=6, noise=0.004, moving_object=False, seed=9), max_side=256, raw=True)
    wb = np.array(b.meta["white_balance"], np.float32)
    frames = [RawFrame(m, "RGGB", 0.0, 1.0, wb, name=f"f{i}") for i, m in enumerate(b.frames)]
    out = fuse_raw_burst(frames, 2.0)
    oh, ow = b.gt.shape[:2]
    ref = demosaic(frames[0], encode=True)
    bic = np.clip(cv2.resize(ref, (ow, oh), interpolation=cv2.INTER_CUBIC), 0, 1)
    assert out.shape == b.gt.shape
    assert psnr(out, b.gt, 8) > psnr(bic, b.gt, 8) + 0.7
    # The same burst demosaicked frame by frame and fused by the stack.
    from processing.bench.fusion import develop_then_fuse

    assert psnr(out, b.gt, 8) > psnr(develop_then_fuse(frames, 2), b.gt, 8) + 0.3


def test_burst_that_does_not_align_is_a_one_line_error() -> None:
    rng = np.random.default_rng(0)
    frames = [
        RawFrame(rng.random((64, 64), np.float32), "RGGB", 0.0, 1.0, np.ones(3), name=f"n{i}.dng") for i in range(3)
    ]
    with pytest.raises(InputError) as e:
        fuse_raw_burst(frames, 2.0)
    assert "\n" not in str(e.value) and "n1.dng" in str(e.value)


def test_grey_proxy_is_the_2x2_mean() -> None:
    m = np.arange(20, dtype=np.float32).reshape(4, 5)
    g = grey_proxy(m)
    assert g[1, 2] == pytest.approx(m[1:3, 2:4].mean())


@pytest.mark.skipif(not RAW.is_dir(), reason="shared RAW samples not present")
def test_real_raw_files_decode_to_mosaics() -> None:
    dng = read_raw(RAW / "Blackmagic.dng")
    assert dng.pattern == "RGGB" and dng.mosaic.shape == (2176, 4128) and dng.mosaic.dtype == np.uint16
    assert dng.black < dng.white and dng.wb[1] == 1.0 and dng.cam_to_rgb is not None
    kdc = read_raw(RAW / "RAW_KODAK_DC50.KDC")
    assert kdc.pattern in PATTERNS and kdc.mosaic.shape == (512, 768)
    assert demosaic(kdc).shape == (512, 768, 3)
    with pytest.raises(InputError, match="not a Bayer RAW"):
        read_raw(RAW / "Nikon_filmscan.nef")
