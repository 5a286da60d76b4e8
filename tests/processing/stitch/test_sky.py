import numpy as np

from processing.stitch.sky import feather_weight, merge_layers


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
