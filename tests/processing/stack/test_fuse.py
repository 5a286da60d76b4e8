import numpy as np

from processing.io.imageio import to_uint16
from processing.io.metrics import psnr
from processing.stack.develop import linear_to_srgb, srgb_to_linear
from processing.stack.fuse import FrameInput, FuseParams, fuse, make_master
from processing.synth.synth import make_burst

from .._sr_helpers import gt_image


def _inputs(burst):
    return [FrameInput(to_uint16(srgb_to_linear(f)), t) for f, t in zip(burst.frames, burst.transforms, strict=True)]


def test_kernel_beats_naive_and_bicubic_with_true_transforms():
    import cv2

    gt = gt_image(256)
    b = make_burst(gt, 12, 2.0, seed=4, noise=0.004)
    fr = _inputs(b)
    m = make_master(fr, (128, 128))
    naive = linear_to_srgb(fuse(fr, 2.0, (256, 256), m, FuseParams(method="naive")))
    kern = linear_to_srgb(fuse(fr, 2.0, (256, 256), m, FuseParams()))
    bic = cv2.resize(b.frames[0], (256, 256), interpolation=cv2.INTER_CUBIC)
    p_naive, p_kern, p_bic = (psnr(x, gt, 8) for x in (naive, kern, bic))
    assert p_kern > p_naive and p_kern > p_bic
    assert np.isfinite(m).all() and m.shape == (128, 128, 3)


def test_ghosts_rejected_and_partial_coverage():
    gt = gt_image(256)
    b = make_burst(gt, 8, 2.0, seed=5, noise=0.004, moving_object=True, shift_px=12)
    fr = _inputs(b)
    m = make_master(fr, (128, 128))
    out = linear_to_srgb(fuse(fr, 2.0, (256, 256), m, FuseParams()))
    norobust = linear_to_srgb(fuse(fr, 2.0, (256, 256), m, FuseParams(robust=False)))
    # The red square sits somewhere else in every frame: the fused result
    # must not show it (red excess small everywhere).
    red = lambda x: x[..., 0] - x[..., 1:].mean(axis=2)  # noqa: E731
    ref_red = red(gt)
    assert np.percentile(red(out) - ref_red, 99.9) < np.percentile(red(norobust) - ref_red, 99.9)
    assert psnr(out, gt, 8) > psnr(norobust, gt, 8)
    # Every output pixel is defined even where only some frames cover it.
    assert np.isfinite(out).all()
    assert fr[0].sigma > 0


def test_clip_noise_model_and_debias() -> None:
    from processing.stack.fuse import clip_bias_lut, clip_noise_model, debias_clipped

    rng = np.random.default_rng(3)
    a, b = 2e-3, 5e-4  # sigma^2 = a y + b (5 % noise, shot + read)
    yy, xx = np.mgrid[0:256, 0:256]
    scene = (0.02 + 0.6 * (xx / 255.0) * (0.5 + 0.5 * np.sin(yy / 9.0) ** 2)).astype(np.float32)
    scene = np.repeat(scene[..., None], 3, axis=2)
    noisy = [np.clip(scene + rng.normal(size=scene.shape) * np.sqrt(a * scene + b), 0, 1) for _ in range(16)]
    master = np.median(noisy, axis=0).astype(np.float32)
    model = clip_noise_model(noisy[0].astype(np.float32), master)
    assert model.shape == (3, 2)
    assert np.all(np.abs(model[:, 0] / a - 1) < 0.5) and np.all(np.abs(model[:, 1] / b - 1) < 0.6)
    # The mean of clipped samples is biased up near black; the debias undoes it.
    lut = clip_bias_lut(a, b)
    assert lut[int(0.01 * (len(lut) - 1))] < -0.005 and abs(lut[len(lut) // 2]) < 1e-3
    mean = np.mean(noisy, axis=0).astype(np.float32)
    dark = scene[..., 0] < 0.05
    out = debias_clipped(mean, np.array([[a, b]] * 3), 2.0, FuseParams(clip_debias_radius=0.5))
    before = (mean[dark] - scene[dark]).mean()  # the bias, not the noise
    after = (out[dark] - scene[dark]).mean()
    assert before > 0.0005 and abs(after) < 0.3 * before, (before, after)
    # Off, or no noise: unchanged.
    assert debias_clipped(mean, np.zeros((3, 2)), 2.0) is mean
    assert debias_clipped(mean, model, 2.0, FuseParams(clip_debias=False)) is mean


def test_debias_clipped_xp_matches_host() -> None:
    """The device twin (run with NumPy as xp) gives the host result."""
    from processing.stack.fuse import debias_clipped
    from processing.stack.fuse_gpu import debias_clipped_xp

    rng = np.random.default_rng(1)
    img = np.clip(rng.random((40, 50, 3)).astype(np.float32) * 0.1, 0, 1)
    model = np.array([[2e-3, 5e-4]] * 3)
    a = debias_clipped(img, model, 2.0)
    b = debias_clipped_xp(img, model, 2.0, FuseParams(), np)
    assert np.abs(a - b).max() < 2e-4 and np.abs(a - img).max() > 5e-4
