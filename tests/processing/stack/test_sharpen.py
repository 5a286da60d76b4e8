import numpy as np
import pytest

from processing.stack.sharpen import SharpenParams, unsharp_mask


def test_unsharp_mask_boosts_edges_and_threshold():
    img = np.zeros((32, 32, 3), np.float32) + 0.3
    img[:, 16:] = 0.7
    out = unsharp_mask(img, SharpenParams(radius=1.0, amount=1.0))
    assert out[:, 17].mean() > 0.7 and out[:, 14].mean() < 0.3
    flat = img + np.random.default_rng(0).normal(0, 0.002, img.shape).astype(np.float32)
    gated = unsharp_mask(flat, SharpenParams(radius=1.0, amount=1.0, threshold=0.05))
    assert np.abs(gated[:, :10] - flat[:, :10]).max() < 1e-6
    assert unsharp_mask(img, SharpenParams(amount=0)) is img
    with pytest.raises(ValueError):
        SharpenParams(radius=0)
