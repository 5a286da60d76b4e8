import numpy as np

from processing.stack import align as al
from processing.stack.develop import srgb_to_linear
from processing.stack.warp import apply_h
from processing.synth.synth import make_burst

from .._sr_helpers import gt_image, real_photo


def _err(t, truth, w, h):
    gx, gy = np.meshgrid(np.arange(w), np.arange(h))
    u, v = apply_h(t, gx, gy)
    ut, vt = apply_h(truth, gx, gy)
    return float(np.sqrt(np.mean((u - ut) ** 2 + (v - vt) ** 2)))


def test_coarse_and_fine_alignment_subpixel():
    b = make_burst(real_photo(384), 3, 2.0, seed=2, shift_px=19, rotation_deg=3.0, noise=0.004)
    p = al.AlignParams()
    prox = [al.align_proxy(srgb_to_linear(f)) for f in b.frames]
    ref = al.detect(prox[0], p)
    pyr = al.ReferencePyramid(prox[0], p)
    for i in (1, 2):
        r = al.coarse_align(ref, al.detect(prox[i], p), p)
        assert r.ok, r.reason
        assert _err(r.transform, b.transforms[i], 192, 192) < 0.5
        t, cc, _ = al.fine_align(pyr, prox[i], r.transform, p)
        assert _err(t, b.transforms[i], 192, 192) < 0.05
        assert cc is not None and cc > 0.9


def test_unalignable_frame_is_refused_with_reason():
    b = make_burst(gt_image(256), 1, 2.0, seed=0, noise=0.0)
    p = al.AlignParams()
    ref = al.detect(al.align_proxy(srgb_to_linear(b.frames[0])), p)
    rng = np.random.default_rng(0)
    noise = rng.random((128, 128)).astype(np.float32)  # a different "scene"
    r = al.coarse_align(ref, al.detect(noise, p), p)
    assert not r.ok and r.reason
    flat = np.full((128, 128), 0.5, np.float32)
    r = al.coarse_align(ref, al.detect(flat, p), p)
    assert not r.ok and "match" in r.reason


def test_degenerate_transforms_rejected():
    p = al.AlignParams()
    size = (200, 100)
    assert al.check_transform(np.eye(3), size, size, p) == ""
    mirrored = np.diag([-1.0, 1.0, 1.0])
    assert "degenerate" in al.check_transform(mirrored, size, size, p)
    far = np.array([[1, 0, 150.0], [0, 1, 0], [0, 0, 1]])
    assert al.check_transform(far, size, size, p)
    persp = np.array([[1, 0, 0], [0, 1, 0], [0.01, 0, 1.0]])
    assert "perspective" in al.check_transform(persp, size, size, p) or al.check_transform(persp, size, size, p)
