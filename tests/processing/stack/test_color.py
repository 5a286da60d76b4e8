import numpy as np

from processing.stack.color import ColorParams, correct_tca, dehaze, estimate_tca, fit_gain_offset, match_to_reference

from .._sr_helpers import texture


def test_gain_offset_fit_is_robust():
    ref = texture(128) * 0.8
    img = (ref - 0.02) / 1.1
    img[:20, :20] = 0.9  # an outlier patch (something moved)
    g, o = fit_gain_offset(ref, img)
    assert np.allclose(g, 1.1, atol=0.01) and np.allclose(o, 0.02, atol=0.005)


def test_match_to_reference_through_transform():
    ref = texture(128) * 0.7
    t = np.array([[1, 0, 3.0], [0, 1, -2.0], [0, 0, 1]])
    import cv2

    frame = cv2.warpPerspective(ref, t, (128, 128), borderMode=cv2.BORDER_REFLECT) * 0.9
    g, o = match_to_reference(ref, (1.0, 1.0), frame, (1.0, 1.0), t, ColorParams())
    assert np.allclose(g, 1 / 0.9, atol=0.02) and np.all(np.abs(o) < 0.01)


def test_dehaze_restores_contrast():
    clear = texture(128)
    hazy = clear * 0.6 + 0.35
    out = dehaze(hazy, ColorParams(dehaze=True))
    assert out.std() > hazy.std() * 1.3 and out.shape == hazy.shape


def test_tca_estimate_and_correct():
    img = texture(256)
    bad = img.copy()
    bad[..., 0] = correct_tca(img, 1.003, 1.0)[..., 0]
    kr, kb = estimate_tca(bad, ColorParams(tca=True))
    assert abs(kr - 1 / 1.003) < 0.0008 and abs(kb - 1.0) < 0.0008
    # 16-bit codes (what the stack keeps) give the same estimate
    from processing.io.imageio import to_uint16

    kr16, kb16 = estimate_tca(to_uint16(bad), ColorParams(tca=True))
    assert abs(kr16 - kr) < 1e-4 and abs(kb16 - kb) < 1e-4
