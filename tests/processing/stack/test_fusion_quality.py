"""The fusion's adaptive parts: reference anchoring, matched deconvolution,
the held-out safety net, and the independent burst generator they are
measured with (processing/bench/bursts.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from processing.bench.bursts import BurstSpec, make_burst
from processing.io.imageio import write_image
from processing.io.metrics import psnr
from processing.stack.fuse import FrameInput, FuseParams, burst_noise, matched_deblur
from processing.stack.pipeline import StackParams, list_frames, process_stack
from processing.stack.sharpen import SharpenParams

from .._sr_helpers import texture


def _write(burst, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(burst.frames):
        write_image(folder / f"f_{i:03d}.png", f)
    return list_frames(folder)


def test_generator_frames_follow_their_transforms() -> None:
    """Without noise, blur, turbulence or a moving object, frame i is the
    ground truth integrated over S x S pixels through transforms[i]."""
    gt_src = texture(300, seed=5)
    spec = BurstSpec(frames=3, noise=0.0, turbulence_px=0, lens_blur_px=0, moving_object=False, seed=1)
    b = make_burst(gt_src, spec, max_side=160)
    from processing.stack.develop import linear_to_srgb, srgb_to_linear

    lin_gt = srgb_to_linear(b.gt)
    h, w = b.frames[0].shape[:2]
    ref = linear_to_srgb(cv2.resize(lin_gt, (w, h), interpolation=cv2.INTER_AREA))
    assert psnr(b.frames[0], ref, 2) > 40  # the reference is the integrated ground truth
    for f, t in zip(b.frames[1:], b.transforms[1:], strict=True):
        # Back onto the reference grid with the known transform: the reference.
        back = cv2.warpPerspective(f, t, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
        assert psnr(back, b.frames[0], 16) > 26
        moved = cv2.warpPerspective(f, np.eye(3), (w, h))
        assert psnr(moved, b.frames[0], 16) < psnr(back, b.frames[0], 16) - 6


def test_matched_deconvolution_follows_kernel_and_noise() -> None:
    frames = [FrameInput(np.zeros((4, 4, 3), np.float32), np.eye(3)) for _ in range(10)]
    p = FuseParams()
    for fr in frames:
        fr.sigma = 0.002
    quiet = matched_deblur(frames, 2.0, p)
    for fr in frames:
        fr.sigma = 0.01
    loud = matched_deblur(frames, 2.0, p)
    assert burst_noise(frames, p) == pytest.approx(0.05)
    assert loud.deblur_nsr > quiet.deblur_nsr > p.deblur_nsr_frames / 10
    assert quiet.deblur_sigma == loud.deblur_sigma > p.deblur_optics
    assert matched_deblur(frames, 2.0, p.replace(deblur_matched=False)) == p.replace(deblur_matched=False)


@pytest.fixture(scope="module")
def moving_burst(tmp_path_factory):
    spec = BurstSpec(frames=10, noise=0.004, moving_object=True, seed=11)
    b = make_burst(texture(360, seed=8), spec, max_side=256)
    return b, _write(b, tmp_path_factory.mktemp("moving"))


def test_moving_object_follows_the_reference(moving_burst) -> None:
    """The disc sits where the reference saw it: anchoring keeps it there;
    the median of the frames (and the fusion without anchoring) drop it."""
    b, paths = moving_burst
    on = process_stack(paths, 2.0, upscale_model=False)
    off_p = StackParams().replace(fuse=FuseParams(anchor_reference=False))
    off = process_stack(paths, 2.0, off_p, upscale_model=False)
    assert psnr(on.image, b.gt, 8) > psnr(off.image, b.gt, 8) + 1.0


def test_default_beats_the_median_and_the_net_keeps_it(moving_burst) -> None:
    b, paths = moving_burst
    res = process_stack(paths, 2.0, upscale_model=False)
    net = res.metrics["safety_net"]
    assert net["method"] == "kernel" and net["held_out"] >= 1 and net["rms_kernel"] > 0
    naive = StackParams().replace(fuse=FuseParams(method="naive"), sharpen=SharpenParams(amount=0))
    med = process_stack(paths, 2.0, naive, upscale_model=False)
    assert psnr(res.image, b.gt, 8) > psnr(med.image, b.gt, 8) + 0.5


def test_safety_net_replaces_a_broken_fusion_with_the_median(moving_burst) -> None:
    """A deconvolution that rings (no noise allowance) is far worse than the
    median; the held-out frames see it and the stack gives the median."""
    b, paths = moving_burst
    bad = FuseParams(deblur_nsr_frames=0.01, deblur_nsr_k=0.0)
    unsafe = process_stack(paths, 2.0, StackParams().replace(fuse=bad.replace(safety_net=False)), upscale_model=False)
    safe = process_stack(paths, 2.0, StackParams().replace(fuse=bad), upscale_model=False)
    naive = StackParams().replace(fuse=FuseParams(method="naive"), sharpen=SharpenParams(amount=0))
    med = process_stack(paths, 2.0, naive, upscale_model=False)
    assert psnr(unsafe.image, b.gt, 8) < psnr(med.image, b.gt, 8) - 1.0
    assert safe.metrics["safety_net"]["method"] == "naive"
    assert safe.recipe["stack"]["fuse"]["method"] == "kernel"  # the recipe is what was asked
    assert np.abs(safe.image - med.image).max() < 1e-6
