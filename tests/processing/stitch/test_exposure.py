import numpy as np

from processing.stitch.exposure import estimate_vignetting, overlap_stats, proxy_warp, solve_gains
from processing.stitch.project import Camera, make_canvas, rotation_from_ypr
from tests.processing._stitch_helpers import texture


def _scene_views(gains, vig=0.0):
    from processing.synth.synth_pano import vignette

    tex = texture(200, 1200, seed=3)
    cams, thumbs = [], []
    for k, g in enumerate(gains):
        cam = Camera.make(160, 120, 150.0, rotation_from_ypr(-30 + 30 * k, 0, 0))
        # render the textured cylinder into the view
        x = np.arange(160) - 79.5
        y = np.arange(120) - 59.5
        xx, yy = np.meshgrid(x / 150, y / 150)
        v = np.stack([xx, yy, np.ones_like(xx)], -1) @ cam.rot.T
        lon = np.arctan2(v[..., 0], v[..., 2])
        t = v[..., 1] / np.hypot(v[..., 0], v[..., 2])
        import cv2

        img = cv2.remap(
            tex,
            ((lon / (2 * np.pi) + 0.5) * 1200).astype(np.float32),
            (t * 190 + 100).astype(np.float32),
            cv2.INTER_LINEAR,
        )
        img = img * np.asarray(g, np.float32)
        if vig:
            img = img * vignette(120, 160, vig)[:, :, None]
        cams.append(cam)
        thumbs.append(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8))
    return cams, thumbs


def test_gain_compensation_per_channel():
    true = [(1.0, 1.0, 1.0), (1.3, 0.8, 1.1), (0.9, 1.2, 0.7)]
    cams, thumbs = _scene_views(true)
    cv = make_canvas(cams, "cylindrical", wrap=True)
    warps = [proxy_warp(t, c, cv) for t, c in zip(thumbs, cams, strict=True)]
    N, Im = overlap_stats(warps, cv)
    assert N[0, 1] > 0 and N[1, 2] > 0
    g = solve_gains(N, Im)
    comp = g * np.asarray(true)  # compensated brightness should agree across images
    spread = comp.max(0) / comp.min(0)
    assert np.all(spread < 1.05), comp
    before = np.asarray(true).max(0) / np.asarray(true).min(0)
    assert np.all(spread < before)


def test_vignetting_estimate():
    cams, thumbs = _scene_views([(1, 1, 1)] * 3, vig=0.3)
    cv = make_canvas(cams, "cylindrical", wrap=True)
    warps = [proxy_warp(t, c, cv) for t, c in zip(thumbs, cams, strict=True)]
    a, b = estimate_vignetting(warps, cv)
    # true V = 1 - 0.3 r^2: value at the corner
    assert abs((1 + a + b) - 0.7) < 0.1
