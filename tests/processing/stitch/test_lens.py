"""Lens model in the bundle adjustment: k1, k2 and the principal point shift
d, e per lens, with priors, only where enough points were matched."""

import numpy as np
import pytest

from processing.stitch.project import Camera, _cam_rays, rotation_from_ypr
from processing.stitch.registration import detect, register
from tests.processing._stitch_helpers import texture


def _views(lens: dict, rows=(-14.0, 14.0), n=9, size=(360, 270), focal=300.0):
    """Views of a textured sphere through a distorted lens, two rows."""
    import cv2

    W = 2400
    tex = texture(W // 2, W, seed=4)
    cams, imgs = [], []
    ys, xs = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float64)
    for p in rows:
        for k in range(n):
            cam = Camera.make(size[0], size[1], focal, rotation_from_ypr(k * 360 / n, p, 0), **lens)
            r = _cam_rays(cam, xs.ravel(), ys.ravel())
            lon = np.arctan2(r[:, 0], r[:, 2])
            lat = np.arctan2(-r[:, 1], np.hypot(r[:, 0], r[:, 2]))
            mx = ((lon / (2 * np.pi) + 0.5) * W - 0.5).reshape(ys.shape).astype(np.float32)
            my = ((0.5 - lat / np.pi) * (W // 2) - 0.5).reshape(ys.shape).astype(np.float32)
            imgs.append(cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP))
            cams.append(cam)
    return cams, imgs


def _feats(imgs):
    out = []
    for im in imgs:
        g = (np.clip(im.mean(2), 0, 1) * 255).astype(np.uint8)
        out.append(detect(g, 1.0, im.shape[1], im.shape[0], 1500))
    return out


@pytest.mark.slow
def test_lens_model_recovers_principal_point_and_distortion():
    true = {"k1": -0.08, "d": 9.0, "e": -5.0}
    cams, imgs = _views(true)
    feats = _feats(imgs)
    names = [f"v{k}.png" for k in range(len(imgs))]
    pin = register(feats, names)
    full = register(feats, names, lens_full=True)
    assert len(full.cameras) == len(imgs)
    c = full.cameras[0]
    assert abs(c.d - true["d"]) < 3.0 and abs(c.e - true["e"]) < 3.0, (c.d, c.e)
    assert abs(c.k1 - true["k1"]) < 0.03, c.k1
    assert full.rms_px < 0.5 * pin.rms_px, (full.rms_px, pin.rms_px)


def test_lens_model_holds_still_on_few_points():
    cams, imgs = _views({"k1": 0.0}, rows=(0.0,), n=3, size=(200, 150), focal=120.0)
    feats = _feats(imgs[:2])  # two images: below the safeguard (3 images per lens)
    reg = register(feats, ["a.png", "b.png"], lens_full=True)
    for cam in reg.cameras.values():
        assert cam.d == 0.0 and cam.e == 0.0 and cam.k1 == 0.0 and cam.k2 == 0.0
