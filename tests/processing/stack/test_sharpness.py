import cv2
import numpy as np

from processing.stack.sharpness import SharpnessParams, noise_sigma, rank_frames, sharpness_score

from .._sr_helpers import texture


def test_noise_robust_score():
    rng = np.random.default_rng(0)
    img = texture(256).mean(axis=2)
    noisy = img + rng.normal(0, 0.03, img.shape).astype(np.float32)
    blurry = cv2.GaussianBlur(img, (0, 0), 1.5)
    s_clean, s_noisy, s_blur = (sharpness_score(x) for x in (img, noisy, blurry))
    # Plain Laplacian variance would rank the noisy frame far higher.
    lap = [float(cv2.Laplacian(x, cv2.CV_32F).var()) for x in (img, noisy)]
    assert lap[1] > 1.5 * lap[0]
    assert s_noisy <= s_clean * 1.05
    assert s_blur < 0.8 * s_clean
    assert abs(noise_sigma(noisy - img + 0.5) - 0.03) < 0.005


def test_rank_drops_worst_but_never_reference():
    keep, reasons = rank_frames([0.1, 0.5, 0.3, 0.9], SharpnessParams(drop_worst=2), protect=0)
    assert keep == [True, True, False, True] or keep == [True, False, False, True]
    assert keep[0] and sum(keep) == 2 and all(r for k, r in zip(keep, reasons, strict=True) if not k)
    keep, _ = rank_frames([0.1, 0.2], SharpnessParams(drop_worst=2, min_keep=1), protect=0)
    assert keep == [True, False]
    keep, _ = rank_frames([0.1], SharpnessParams(drop_worst=2))
    assert keep == [True]
