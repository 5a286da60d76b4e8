import numpy as np

from processing.stitch.sky import feather_weight, merge_layers, merge_sky, sky_mask
from tests.processing._stitch_helpers import texture


def test_merge_layers_feathers_overlap():
    a = np.full((40, 100, 3), 0.2, np.float32)
    b = np.full((40, 100, 3), 0.8, np.float32)
    aa = np.zeros((40, 100), np.float32)
    ab = np.zeros((40, 100), np.float32)
    aa[:, :60] = 1
    ab[:, 40:] = 1
    out, cov = merge_layers([(a, aa), (b, ab)], feather=10, wrap=False)
    assert cov.min() == 1
    row = out[20, :, 0]
    assert np.all(np.diff(row[35:65]) >= -1e-6)  # monotone transition
    assert abs(row[10] - 0.2) < 1e-4 and abs(row[90] - 0.8) < 1e-4


def test_feather_wraps_around():
    al = np.ones((20, 50), np.float32)
    al[:, 20:30] = 0
    w = feather_weight(al, 5, wrap=True)
    assert w[10, 0] == 1 and w[10, 49] == 1  # edges are interior with wrap


def test_sky_mask_and_merge():
    h, w = 120, 160
    img = texture(h, w, seed=1) * 0.5
    img[:50] = (0.45, 0.6, 0.95)  # smooth blue sky at the top
    m = sky_mask(img)
    assert m[:40].mean() > 0.8 and m[70:].mean() < 0.1
    sky = np.zeros_like(img)
    sky[:] = (0.4, 0.55, 0.9)
    out, alpha = merge_sky(img, np.ones((h, w), np.float32), sky, np.ones((h, w), np.float32), feather=8)
    assert np.abs(out[100:] - img[100:]).max() < 1e-3  # ground untouched
    assert np.abs(out[5:30, 20:140] - img[5:30, 20:140]).max() < 0.08  # sky replaced with matched exposure
